"""Find the local stack from a plain Python process.

`crisis up` records its server in `$CRISIS_HOME/server.json` (default
`./.crisis`). A flow called directly, or a block saved from a script, would
otherwise talk to a throwaway Prefect database of its own: `connect()` (an explicit
call: importing the project connects nothing) points this process at the recorded server instead, where that is safe:

- nothing is changed when a Prefect API is already configured (environment or
  profile): a worker's flow run, a team server, a test harness keep theirs;
- only a server that is alive and answers its health check within a second is
  used; a stale record is ignored, never trusted;
- `CRISIS_HOME` is set to the absolute folder, so the MLflow store and batch
  storage follow the same stack in this process and its children.

Imports nothing else of the project (a base module).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

SERVER_RECORD = "server.json"
HEALTH_TIMEOUT = 1.0  # seconds: an import must never wait on a frozen server for long


@dataclass(frozen=True)
class StackConnection:
    """The local stack this process was pointed at."""

    api_url: str
    home: Path


def _home() -> Path:
    return Path(os.environ.get("CRISIS_HOME") or Path.cwd() / ".crisis").resolve()


def recorded_api_url(home: Path) -> str | None:
    """The API URL of the server recorded under `home` when its process still runs, else None."""
    try:
        record = json.loads((home / SERVER_RECORD).read_text())
        pid, api_url = int(record["pid"]), str(record["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return api_url if psutil.pid_exists(pid) else None


def _configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def connect_to_local_stack() -> StackConnection | None:
    """Point this process's Prefect clients at the local stack's server, when safe.

    Returns the connection made, or None when an API was already configured or
    no running, answering local server is recorded.
    """
    if os.environ.get("CRISIS_NO_AUTOCONNECT") or _configured_api_url():
        return None
    home = _home()
    api_url = recorded_api_url(home)
    if api_url is None:
        return None
    try:
        if httpx.get(f"{api_url}/health", timeout=HEALTH_TIMEOUT).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    from prefect_crisis.core.prefect_compat import refresh_settings

    os.environ["PREFECT_API_URL"] = api_url
    os.environ["CRISIS_HOME"] = str(home)
    refresh_settings()  # Prefect read its settings at import; let it see the variable
    return StackConnection(api_url=api_url, home=home)


def connect() -> StackConnection | None:
    """Point this process at the stack `crisis up` started, and say so in one log line.

    Importing the project connects nothing: a plain script calls this once, before
    it loads a block or calls a flow. Nothing changes when a Prefect API is already
    configured (a worker's flow run, a team server, a test harness).

    Example:
        >>> from prefect_crisis.core.connection import connect
        >>> connect()  # doctest: +SKIP
    """
    connection = connect_to_local_stack()
    if connection is not None:
        from prefect.logging import get_logger

        from prefect_crisis.core.prefect_compat import ensure_logging

        ensure_logging()  # Prefect configures its loggers lazily; the line must show in a plain script
        get_logger("crisis").info(
            "using the local stack: Prefect %s, state folder %s (found in %s)",
            connection.api_url,
            connection.home,
            connection.home / SERVER_RECORD,
        )
    return connection

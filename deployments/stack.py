"""The embedded default: a Prefect server on loopback with its state in `.crisis/`.

`start_server` runs `prefect server start` as a child process (SQLite
database and PREFECT_HOME under the crisis home, analytics off), records its
pid and URL in `server.json`, and waits for `/api/health`. `stop_server`
stops it by the recorded pid. When `PREFECT_API_URL` is already set (a team's
server, or Prefect Cloud) nothing is started and that server is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from prefect_crisis.tasks.errors import StackError
from prefect_crisis.tasks.paths import crisis_home, default_tracking_uri

STATE_FILE = "server.json"
LOG_FILE = "server.log"


@dataclass(frozen=True)
class ServerState:
    """A local server this stack started."""

    pid: int
    api_url: str
    home: str
    log: str

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def configured_api_url() -> str | None:
    """The Prefect API named by the environment or the active profile, if any."""
    return get_current_settings().api.url or None


def read_state(home: Path | None = None) -> ServerState | None:
    path = (home or crisis_home()) / STATE_FILE
    if not path.exists():
        return None
    return ServerState(**json.loads(path.read_text()))


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when the server at `api_url` answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) != 0


def server_environment(home: Path) -> dict[str, str]:
    """Environment of the server process: state under `home`, nothing sent out."""
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return environment


def start_server(
    home: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 4200,
    timeout: float = 90.0,
    progress: Callable[[str], None] = lambda message: None,
) -> ServerState:
    """Start the local Prefect server, or return the one already running.

    Raises:
        StackError: the port is taken by something else, or the server did not
            become healthy within `timeout` seconds (the log's tail says why).
    """
    home = (home or crisis_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = read_state(home)
    if state and _process_alive(state.pid) and is_healthy(state.api_url):
        progress(f"Prefect server already running (pid {state.pid})")
        return state
    if not _port_free(host, port):
        raise StackError(f"port {port} on {host} is in use by another process: pass --port to use another one")
    log_path = home / LOG_FILE
    api_url = f"http://{host}:{port}/api"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"],
            env=server_environment(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state = ServerState(pid=process.pid, api_url=api_url, home=str(home), log=str(log_path))
    (home / STATE_FILE).write_text(json.dumps(asdict(state)))
    progress(f"starting Prefect server on {state.ui_url} (pid {process.pid}, log {log_path})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if is_healthy(api_url):
            return state
        time.sleep(0.5)
    stop_server(home)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    raise StackError(f"the Prefect server did not become healthy within {timeout:.0f}s; log tail:\n" + "\n".join(tail))


def stop_server(home: Path | None = None, timeout: float = 20.0) -> ServerState | None:
    """Stop the server this stack started (SIGTERM, then SIGKILL); None if none ran."""
    home = (home or crisis_home()).resolve()
    state = read_state(home)
    if state is None:
        return None
    if _process_alive(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _process_alive(state.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(state.pid, os.WNOHANG)
            time.sleep(0.2)
        if _process_alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.pid, signal.SIGKILL)
    (home / STATE_FILE).unlink(missing_ok=True)
    return state


def resolve_api_url(home: Path | None = None) -> str | None:
    """The configured server if there is one, else the local stack's, else None."""
    configured = configured_api_url()
    if configured:
        return configured
    state = read_state(home)
    if state and _process_alive(state.pid):
        return state.api_url
    return None


@contextlib.contextmanager
def use_stack(home: Path | None = None) -> Iterator[str]:
    """Point Prefect clients in this process at the stack's server.

    Raises:
        StackError: no server is configured and the local stack is not running.
    """
    api_url = resolve_api_url(home)
    if api_url is None:
        raise StackError("no Prefect server: run `crisis up`, or set PREFECT_API_URL to your server")
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield api_url


def stack_status(home: Path | None = None) -> dict[str, object]:
    """What runs: the Prefect server (configured or local) and the MLflow store."""
    home = (home or crisis_home()).resolve()
    configured = configured_api_url()
    state = read_state(home)
    if configured:
        prefect = {"source": "PREFECT_API_URL", "api_url": configured, "healthy": is_healthy(configured)}
    elif state:
        alive = _process_alive(state.pid)
        prefect = {
            "source": "local stack",
            "api_url": state.api_url,
            "ui_url": state.ui_url,
            "pid": state.pid,
            "healthy": alive and is_healthy(state.api_url),
        }
    else:
        prefect = {"source": "none", "healthy": False}
    return {"home": str(home), "prefect": prefect, "mlflow_tracking_uri": default_tracking_uri()}

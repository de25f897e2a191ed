"""The embedded default: a Prefect server on loopback with its state in `.crisis/`.

`start_server` runs `prefect server start` as a child process (SQLite
database and PREFECT_HOME under the crisis home, analytics off), waits until
that child itself listens on the port and answers `/api/health`, then records
its pid, start time and URL in `server.json`. `stop_server` signals the
recorded pid only when it is still that server (command line and start time);
a stale record is cleared. `use_stack` checks, within seconds, that the server
is alive and answering before a command talks to it. When `PREFECT_API_URL`
is already set (a team's server, or Prefect Cloud) nothing is started and that
server is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Required, TypedDict
from urllib.parse import urlsplit

import httpx
from prefect.settings import (
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    get_current_settings,
    temporary_settings,
)

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.core.waiting import Retrying, stop_after_delay, stop_never, wait_fixed
from prefect_crisis.deployments.process import NO_SERVER, ManagedProcess, http_ok, port_free, recorded, terminate_group  # noqa: F401 (port_free, terminate_group: the CLI's)

if TYPE_CHECKING:
    from prefect_crisis.deployments.mlflow_ui import MlflowUiStatus  # at run time imported where used (stack_status)

STATE_FILE = "server.json"
LOG_FILE = "server.log"
REACH_TIMEOUT = 5.0  # seconds a command waits for the server's health check before giving up


@dataclass(frozen=True)
class ServerState:
    """A local server this stack started.

    `started_at` is the process's start time (psutil's create_time): with the
    command line it tells our server from a process that later got the same pid.
    """

    pid: int
    api_url: str
    home: str
    log: str
    started_at: float | None = None
    database: str = "sqlite"  # the server's database as `crisis status` shows it (masked)

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def port(self) -> int | None:
        return urlsplit(self.api_url).port


@dataclass(frozen=True)
class StopOutcome:
    """What `stop_server` did: stopped the recorded server, or cleared a stale record."""

    state: ServerState
    stopped: bool
    stale_reason: str | None = None


def configured_api_url() -> str | None:
    """The Prefect API named by the environment or the active profile, if any."""
    return get_current_settings().api.url or None


def read_state(home: Path | None = None) -> ServerState | None:
    path = (home or crisis_home()) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        known = {field.name for field in fields(ServerState)}
        return ServerState(**{key: value for key, value in data.items() if key in known})
    except (ValueError, TypeError):  # unreadable record: nothing it names can be trusted
        return None


def _clear_state(home: Path) -> None:
    (home / STATE_FILE).unlink(missing_ok=True)


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when the server at `api_url` answers its health check (the process answers; its database may not)."""
    return http_ok(f"{api_url}/health", timeout)


def query_problem(api_url: str, timeout: float = REACH_TIMEOUT, waiting: Retrying | None = None) -> str | None:
    """None when the server answers a real query (it counts flow runs in its database); else what it answered.

    Its health check answers while every query fails (its PostgreSQL killed, say). HTTP 503 is the server's
    "busy, try again" (SQLite's write lock): asked again within `timeout` seconds before it counts.
    """
    waiting = waiting or Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.5))

    def ask() -> str | None:
        try:
            response = httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=timeout)
        except httpx.TimeoutException:
            return f"no answer to a query within {timeout:.0f}s"
        except httpx.HTTPError as error:
            return f"{type(error).__name__} on a query"
        if response.status_code == 503:
            return None
        return "ok" if response.is_success else f"HTTP {response.status_code} to a query"

    outcome = waiting.poll(ask)
    if outcome is None:
        return f"busy (HTTP 503 to every query for {timeout:.0f}s)"
    return None if outcome == "ok" else outcome


def server_process(state: ServerState) -> ManagedProcess:
    """The recorded server as a managed process: `... prefect server start ... --port PORT` started at `started_at`."""
    return recorded("Prefect server", state.pid, state.started_at, lambda cmdline: _is_server_command(cmdline, state.port), state.log)


def _is_server_command(cmdline: list[str], port: int | None) -> bool:
    """True for `... prefect server start ... --port PORT` (how `start_server` runs it)."""
    if not ("prefect" in " ".join(cmdline[:3]) and "server" in cmdline and "start" in cmdline):
        return False
    return port is None or any(a == "--port" and b == str(port) for a, b in pairwise(cmdline))


def why_not_our_server(state: ServerState) -> str | None:
    """None when `state.pid` is the server this stack started; else why the record is stale."""
    return server_process(state).why_not_ours()


def server_is_frozen(state: ServerState) -> bool:
    """True when our server process is stopped by a signal (SIGSTOP, SIGTSTP)."""
    return server_process(state).frozen()


def server_environment(home: Path, database_url: str | None = None, host: str = "127.0.0.1", port: int = 4200) -> dict[str, str]:
    """Environment of the server process: state under `home` (its SQLite database unless `database_url`), nothing sent out,
    and the UI pointed at this server's API (otherwise the UI of a server on another port than 4200 calls 4200)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    environment.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"http://{host}:{port}/api",
    )
    return environment


def running_server(home: Path | None = None) -> ServerState | None:
    """The recorded local server when it is still the process this stack started."""
    state = read_state((home or crisis_home()).resolve())
    return state if state and why_not_our_server(state) is None else None


def start_server(
    home: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 4200,
    timeout: float = 90.0,
    progress: Callable[[str], None] = lambda message: None,
    database_url: str | None = None,
    waiting: Retrying | None = None,
) -> ServerState:
    """Start the local Prefect server, or return the one already running.

    `waiting`: how it waits for the server to answer (default: every 0.5 s for `timeout` seconds).
    `database_url`: the server's database (e.g. the private PostgreSQL of `crisis up --postgres`);
    None: SQLite under `home`. It reaches the server's environment only, never a file or a log.

    Ready means: the child started here is alive, listens on the port itself,
    and answers its health check; a server of someone else's on that port is
    never mistaken for ours.

    Raises:
        StackError: the port is served by another process, the recorded server
            is frozen or not answering, or the server did not become healthy
            within `timeout` seconds.
    """
    home = (home or crisis_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = read_state(home)
    if state:
        stale = why_not_our_server(state)
        if stale is None:
            if server_is_frozen(state):
                raise StackError(
                    f"the local Prefect server (pid {state.pid}) is frozen (stopped by a signal): `kill -CONT {state.pid}` resumes it, `crisis down` stops it"
                )
            if is_healthy(state.api_url, timeout=REACH_TIMEOUT):
                progress(f"Prefect server already running (pid {state.pid})")
                return state
            raise StackError(
                f"the local Prefect server (pid {state.pid}) runs but does not answer at {state.api_url}: `crisis down`, then `crisis up`"
            )
        progress(f"the recorded server is gone ({stale}): starting a new one")
        _clear_state(home)
    if not port_free(host, port):
        raise StackError(f"port {port} on {host} is in use by another process: pass --port to use another one")
    log_path = home / LOG_FILE
    api_url = f"http://{host}:{port}/api"
    process = ManagedProcess.spawn(
        "Prefect server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"],
        log=log_path,
        env=server_environment(home, database_url, host, port),
        matches=lambda cmdline: _is_server_command(cmdline, port),
    )
    database = mask_uri(database_url) if database_url else f"sqlite:///{home / 'prefect.db'}"
    state = ServerState(pid=process.pid, api_url=api_url, home=str(home), log=str(log_path), started_at=process.started_at, database=database)
    progress(f"starting Prefect server on {state.ui_url} (pid {process.pid}, log {log_path})")
    waiting = waiting or Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.5))
    if process.wait_ready(lambda: process.listens_on(port) and is_healthy(api_url), waiting):
        # recorded only now: a start that fails never overwrites the record of a running server
        (home / STATE_FILE).write_text(json.dumps(asdict(state)))
        return state
    exited = process.exit_code() is not None
    process.stop(grace=10)
    log_text = process.log_text().lower()
    if "address already in use" in log_text or "errno 98" in log_text:
        raise StackError(f"port {port} on {host} is already served by another process: pass --port to use another one")
    # the cause (a refused database password, an unreachable host) is the last exception line, not the last line
    why = "exited" if exited else f"did not become healthy within {timeout:.0f}s"
    raise StackError(f"the Prefect server {why}; its log says: {process.last_error()} (log {log_path})")


def stop_server(home: Path | None = None, timeout: float = 20.0) -> StopOutcome | None:
    """Stop the server this stack started (SIGTERM, then SIGKILL); None if none is recorded.

    The recorded pid is signalled only when it is still our server (command
    line and start time); otherwise the record is stale, cleared, and no
    process is touched.
    """
    home = (home or crisis_home()).resolve()
    state = read_state(home)
    if state is None:
        if (home / STATE_FILE).exists():
            _clear_state(home)
            return StopOutcome(ServerState(pid=0, api_url="", home=str(home), log=""), stopped=False, stale_reason="the record was unreadable")
        return None
    server = server_process(state)
    stale = server.why_not_ours()
    if stale is None:
        server.stop(grace=timeout)
    _clear_state(home)
    return StopOutcome(state, stopped=stale is None, stale_reason=stale)


def resolve_api_url(home: Path | None = None) -> str | None:
    """The configured server if there is one, else the local stack's (if it is still ours), else None."""
    configured = configured_api_url()
    if configured:
        return configured
    state = running_server(home)
    return state.api_url if state else None


def check_reachable(api_url: str, timeout: float = REACH_TIMEOUT) -> None:
    """Raise StackError unless the server answers its health check and a real query (each within `timeout` seconds)."""
    where = mask_uri(api_url)
    try:
        response = httpx.get(f"{api_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        raise StackError(f"the Prefect server at {where} did not answer within {timeout:.0f}s: it is frozen or overloaded") from None
    except httpx.HTTPError as error:
        raise StackError(f"cannot reach the Prefect server at {where}: {type(error).__name__} (is it running?)") from None
    if response.status_code != 200:
        raise StackError(f"the Prefect server at {where} answers its health check with HTTP {response.status_code}")
    problem = query_problem(api_url, timeout)
    if problem is not None:
        raise StackError(
            f"the Prefect server at {where} answers its health check but not a query ({problem}): its database is down or "
            "unreachable; for the stack's PostgreSQL: `crisis down`, then `crisis up --postgres`"
        )


def require_server(home: Path | None = None, timeout: float = REACH_TIMEOUT) -> str:
    """The API URL of a server that is alive and answering, checked within `timeout` seconds.

    Raises:
        StackError: no server configured or started, the local one died, is
            frozen, or does not answer; one line that says which and what to do.
    """
    configured = configured_api_url()
    if configured:
        check_reachable(configured, timeout)
        return configured
    state = read_state((home or crisis_home()).resolve())
    if state is None:
        raise StackError("no Prefect server: run `crisis up`, or set PREFECT_API_URL to your server")
    stale = why_not_our_server(state)
    if stale is not None:
        raise StackError(
            f"the local Prefect server is gone ({stale}): it crashed or was killed; `crisis up` starts it again and marks the runs it left behind as crashed"
        )
    if server_is_frozen(state):
        raise StackError(
            f"the local Prefect server (pid {state.pid}) is frozen (stopped by a signal): `kill -CONT {state.pid}` resumes it, `crisis down` stops it"
        )
    check_reachable(state.api_url, timeout)
    return state.api_url


@contextlib.contextmanager
def use_stack(
    home: Path | None = None,
    *,
    request_timeout: float | None = None,
    max_retries: int | None = None,
    reach_timeout: float = REACH_TIMEOUT,
) -> Iterator[str]:
    """Point Prefect clients in this process at the stack's server, once it answers.

    `request_timeout` and `max_retries` bound each Prefect API call made inside
    the block (Prefect's defaults are 60 s and 5 retries with back-off: minutes
    on a frozen server); they are scoped to this context, not set for the process.

    Raises:
        StackError: see `require_server`.
    """
    api_url = require_server(home, reach_timeout)
    updates: dict = {PREFECT_API_URL: api_url}
    if request_timeout is not None:
        updates[PREFECT_API_REQUEST_TIMEOUT] = request_timeout
    if max_retries is not None:
        updates[PREFECT_CLIENT_MAX_RETRIES] = max_retries
    with temporary_settings(updates=updates), home_exported(home):
        yield api_url


def local_server_gone(home: Path | None = None) -> str | None:
    """Why the local stack's server is no longer there (`crisis down` cleared its record, it was killed); None while it runs.

    Reads the record and the process table only: no request, so a busy server is never taken for a gone one.
    """
    state = read_state((home or crisis_home()).resolve())
    if state is None:
        return "its record is gone (`crisis down`)"
    return why_not_our_server(state)


def watch_local_server(home: Path | None, on_gone: Callable[[str], None], every: float = 1.0) -> Callable[[], None]:
    """Check every `every` seconds, on a daemon thread, that the local server still runs; call `on_gone(why)` once
    when it does not. Returns the function that ends the watch."""
    import threading

    ended = threading.Event()
    waiting = Retrying(stop=stop_never(), wait=wait_fixed(every), sleep=ended.wait)

    def watch() -> None:
        for _attempt in waiting.attempts():
            if ended.is_set():
                return
            why = local_server_gone(home)
            if why is not None:
                on_gone(why)
                return

    threading.Thread(target=watch, name="crisis-stack-watch", daemon=True).start()
    return ended.set


@contextlib.contextmanager
def home_exported(home: Path | None) -> Iterator[None]:
    """`CRISIS_HOME` set to `home` inside the block (nothing changed when None): what runs in this process
    (flows, the MLflow store, batch storage) follows `--home`, as it follows `$CRISIS_HOME`."""
    if home is None:
        yield
        return
    previous = os.environ.get("CRISIS_HOME")
    os.environ["CRISIS_HOME"] = str(home.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CRISIS_HOME", None)
        else:
            os.environ["CRISIS_HOME"] = previous


class PrefectStatus(TypedDict, total=False):
    """What `crisis status` says of the Prefect server: where it comes from and whether it can be used (the rest when known)."""

    source: Required[str]
    healthy: Required[bool]
    api_url: str
    ui_url: str
    pid: int
    database: str
    problem: str | None


class StackStatus(TypedDict):
    """What `crisis status` says of the stack: its home, the Prefect server, the MLflow store and its UI."""

    home: str
    prefect: PrefectStatus
    mlflow_tracking_uri: str
    mlflow_ui: MlflowUiStatus


def stack_status(home: Path | None = None) -> StackStatus:
    """What runs: the Prefect server (configured or local) and the MLflow store; credentials masked."""
    home = (home or crisis_home()).resolve()
    configured = configured_api_url()
    state = read_state(home)
    prefect: PrefectStatus
    if configured:
        problem = None if is_healthy(configured) else "not answering its health check"
        problem = problem or query_problem(configured)
        prefect = {"source": "PREFECT_API_URL", "api_url": mask_uri(configured), "healthy": problem is None, "problem": problem}
    elif state:
        stale = why_not_our_server(state)
        frozen = stale is None and server_is_frozen(state)
        problem = stale or ("frozen (stopped by a signal)" if frozen else None)
        if problem is None:
            problem = None if is_healthy(state.api_url) else "not answering its health check"
        if problem is None and (query := query_problem(state.api_url)) is not None:
            problem = f"answers its health check, not a query: {query}"
        prefect = {
            "source": "local stack",
            "api_url": state.api_url,
            "ui_url": state.ui_url,
            "pid": state.pid,
            "database": state.database,
            "healthy": problem is None,
            "problem": problem,
        }
    else:
        prefect = {"source": NO_SERVER, "healthy": False}
    from prefect_crisis.deployments.mlflow_ui import mlflow_ui_status, store_uri

    return {"home": str(home), "prefect": prefect, "mlflow_tracking_uri": mask_uri(store_uri(home)), "mlflow_ui": mlflow_ui_status(home)}

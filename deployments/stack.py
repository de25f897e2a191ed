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
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from prefect.settings import (
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    get_current_settings,
    temporary_settings,
)

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home, default_tracking_uri
from prefect_crisis.core.uris import mask_uri

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
    """True when the server at `api_url` answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _is_server_command(cmdline: list[str], port: int | None) -> bool:
    """True for `... prefect server start ... --port PORT` (how `start_server` runs it)."""
    if not ("prefect" in " ".join(cmdline[:3]) and "server" in cmdline and "start" in cmdline):
        return False
    return port is None or any(a == "--port" and b == str(port) for a, b in zip(cmdline, cmdline[1:]))


def why_not_our_server(state: ServerState) -> str | None:
    """None when `state.pid` is the server this stack started; else why the record is stale."""
    try:
        process = psutil.Process(state.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"pid {state.pid} has exited"
        cmdline, created = process.cmdline(), process.create_time()
    except psutil.NoSuchProcess:
        return f"pid {state.pid} is not running"
    except psutil.AccessDenied:
        return f"pid {state.pid} belongs to another user"
    if not _is_server_command(cmdline, state.port):
        return f"pid {state.pid} is now another program ({' '.join(cmdline)[:80] or '?'})"
    if state.started_at is not None and abs(created - state.started_at) > 1.0:
        return f"pid {state.pid} is another Prefect server, started at a different time"
    return None


def server_is_frozen(state: ServerState) -> bool:
    """True when our server process is stopped by a signal (SIGSTOP, SIGTSTP)."""
    try:
        return psutil.Process(state.pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def listens_on(pid: int, port: int) -> bool:
    """True when process `pid` (or a child of it) holds a listening socket on `port`."""
    try:
        process = psutil.Process(pid)
        candidates = [process, *process.children(recursive=True)]
    except psutil.Error:
        return False
    for candidate in candidates:
        try:
            for connection in candidate.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
                    return True
        except psutil.Error:
            continue
    return False


def terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM (and SIGCONT, so a frozen process handles it) to the group `pid` leads (or to `pid`
    alone), SIGKILL what is left after `timeout` seconds.

    The whole group is waited for, not only its leader: a leader may exit at once while its
    children still finish their work (MLflow's CLI and the uvicorn it starts, say).
    """
    try:
        leads = os.getpgid(pid) == pid
    except ProcessLookupError:  # the leader is gone (and reaped); its group may live on
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        leads = True

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum) if leads else os.kill(pid, signum)

    def alive() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap a leader that is our own child, or the group never empties
        try:
            os.killpg(pid, 0) if leads else os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not alive():
                return True
            time.sleep(0.1)
        return not alive()

    send(signal.SIGTERM)
    send(signal.SIGCONT)
    if not gone_within(timeout):
        send(signal.SIGKILL)
        gone_within(5.0)


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) != 0


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
) -> ServerState:
    """Start the local Prefect server, or return the one already running.

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
                raise StackError(f"the local Prefect server (pid {state.pid}) is frozen (stopped by a signal): `kill -CONT {state.pid}` resumes it, `crisis down` stops it")
            if is_healthy(state.api_url, timeout=REACH_TIMEOUT):
                progress(f"Prefect server already running (pid {state.pid})")
                return state
            raise StackError(f"the local Prefect server (pid {state.pid}) runs but does not answer at {state.api_url}: `crisis down`, then `crisis up`")
        progress(f"the recorded server is gone ({stale}): starting a new one")
        _clear_state(home)
    if not port_free(host, port):
        raise StackError(f"port {port} on {host} is in use by another process: pass --port to use another one")
    log_path = home / LOG_FILE
    api_url = f"http://{host}:{port}/api"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"],
            env=server_environment(home, database_url, host, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        started_at = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started_at = None
    database = mask_uri(database_url) if database_url else f"sqlite:///{home / 'prefect.db'}"
    state = ServerState(pid=process.pid, api_url=api_url, home=str(home), log=str(log_path), started_at=started_at, database=database)
    progress(f"starting Prefect server on {state.ui_url} (pid {process.pid}, log {log_path})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if listens_on(process.pid, port) and is_healthy(api_url) and process.poll() is None:
            # recorded only now: a start that fails never overwrites the record of a running server
            (home / STATE_FILE).write_text(json.dumps(asdict(state)))
            return state
        time.sleep(0.5)
    exited = process.poll() is not None
    terminate_group(process.pid, timeout=10)
    with contextlib.suppress(ChildProcessError):
        process.wait(timeout=1)
    log_text = log_path.read_text(errors="replace")[log_start:]
    if "address already in use" in log_text.lower() or "errno 98" in log_text.lower():
        raise StackError(f"port {port} on {host} is already served by another process: pass --port to use another one")
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    # the cause (a refused database password, an unreachable host) is the last exception line, not the last line
    last = next((line for line in reversed(lines) if re.match(r"^[\w.]+(Error|Exception): ", line)), lines[-1] if lines else "(empty log)")
    why = "exited" if exited else f"did not become healthy within {timeout:.0f}s"
    raise StackError(f"the Prefect server {why}; its log says: {last[:200]} (log {log_path})")


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
    stale = why_not_our_server(state)
    if stale is None:
        terminate_group(state.pid, timeout)
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
    """Raise StackError within `timeout` seconds unless the server answers its health check."""
    where = mask_uri(api_url)
    try:
        response = httpx.get(f"{api_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        raise StackError(f"the Prefect server at {where} did not answer within {timeout:.0f}s: it is frozen or overloaded") from None
    except httpx.HTTPError as error:
        raise StackError(f"cannot reach the Prefect server at {where}: {type(error).__name__} (is it running?)") from None
    if response.status_code != 200:
        raise StackError(f"the Prefect server at {where} answers its health check with HTTP {response.status_code}")


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
        raise StackError(f"the local Prefect server is gone ({stale}): it crashed or was killed; `crisis up` starts it again and marks the runs it left behind as crashed")
    if server_is_frozen(state):
        raise StackError(f"the local Prefect server (pid {state.pid}) is frozen (stopped by a signal): `kill -CONT {state.pid}` resumes it, `crisis down` stops it")
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
    with temporary_settings(updates=updates):
        yield api_url


def stack_status(home: Path | None = None) -> dict[str, object]:
    """What runs: the Prefect server (configured or local) and the MLflow store; credentials masked."""
    home = (home or crisis_home()).resolve()
    configured = configured_api_url()
    state = read_state(home)
    if configured:
        prefect = {"source": "PREFECT_API_URL", "api_url": mask_uri(configured), "healthy": is_healthy(configured)}
    elif state:
        stale = why_not_our_server(state)
        frozen = stale is None and server_is_frozen(state)
        prefect = {
            "source": "local stack",
            "api_url": state.api_url,
            "ui_url": state.ui_url,
            "pid": state.pid,
            "database": state.database,
            "healthy": stale is None and not frozen and is_healthy(state.api_url),
            "problem": stale or ("frozen (stopped by a signal)" if frozen else None),
        }
    else:
        prefect = {"source": "none", "healthy": False}
    from prefect_crisis.deployments.mlflow_ui import mlflow_ui_status

    return {"home": str(home), "prefect": prefect, "mlflow_tracking_uri": mask_uri(default_tracking_uri()), "mlflow_ui": mlflow_ui_status(home)}

"""The MLflow UI of the local stack: `mlflow server` on loopback over the stack's own store.

The flows keep talking to the store directly (a registry cycle takes 0.07 s
on the store, 1.1 s over HTTP); this server is for people: versions, aliases,
runs and the incidents' plots in the MLflow UI. `crisis up` starts it beside
the Prefect server, `crisis down` stops it, `crisis status` says whether it
answers. Its record (`mlflow-ui.json` in the state folder) names its URL, so
the flows can link their artifacts to the incident's MLflow run
(`core.paths.mlflow_ui_url`).

The store's URI goes to the server through its environment
(`MLFLOW_BACKEND_STORE_URI`), never its command line: a password in it stays
out of `ps`. A tracking URI that is already a server (http://, https://,
databricks) starts nothing: that server is the UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import MLFLOW_UI_STATE, crisis_home, default_tracking_uri
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.deployments.stack import listens_on, port_free, terminate_group

LOG_FILE = "mlflow-ui.log"
DEFAULT_PORT = 5000


@dataclass(frozen=True)
class MlflowUiState:
    """The MLflow server this stack started: pid and start time tell it from a later process with that pid."""

    pid: int
    url: str
    log: str
    store: str  # masked
    started_at: float | None = None

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port


def is_remote(tracking_uri: str) -> bool:
    """True when the tracking URI is already a server (its own UI), not a store this stack can serve."""
    return tracking_uri.startswith(("http://", "https://", "databricks"))


def read_ui_state(home: Path | None = None) -> MlflowUiState | None:
    path = (home or crisis_home()).resolve() / MLFLOW_UI_STATE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        known = {field.name for field in fields(MlflowUiState)}
        return MlflowUiState(**{key: value for key, value in data.items() if key in known})
    except (ValueError, TypeError):
        return None


def why_not_ours(state: MlflowUiState) -> str | None:
    """None when `state.pid` is still the `mlflow server` this stack started; else why the record is stale."""
    try:
        process = psutil.Process(state.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"pid {state.pid} has exited"
        cmdline, created = process.cmdline(), process.create_time()
    except psutil.NoSuchProcess:
        return f"pid {state.pid} is not running"
    except psutil.AccessDenied:
        return f"pid {state.pid} belongs to another user"
    if not ("mlflow" in " ".join(cmdline[:3]) and "server" in cmdline and str(state.port) in cmdline):
        return f"pid {state.pid} is now another program"
    if state.started_at is not None and abs(created - state.started_at) > 1.0:
        return f"pid {state.pid} is another process, started at a different time"
    return None


def is_answering(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class Launch:
    """An `mlflow server` started and not yet waited for (it takes seconds to import; the Prefect
    server starts meanwhile)."""

    process: subprocess.Popen | None
    state: MlflowUiState
    home: Path
    already_running: bool = False

    def wait(self, timeout: float = 90.0) -> MlflowUiState:
        """Until the server answers its health check; recorded then.

        Raises:
            StackError: it exited or did not answer within `timeout` (stopped, its log named).
        """
        if self.already_running or self.process is None:
            return self.state
        deadline = time.monotonic() + timeout
        port = self.state.port or 0
        while time.monotonic() < deadline and self.process.poll() is None:
            if listens_on(self.process.pid, port) and is_answering(self.state.url):
                (self.home / MLFLOW_UI_STATE).write_text(json.dumps(asdict(self.state)))
                return self.state
            time.sleep(0.5)
        self.abandon()
        lines = [line.strip() for line in Path(self.state.log).read_text(errors="replace").splitlines() if line.strip()]
        why = "exited" if self.process.poll() is not None else f"did not answer within {timeout:.0f}s"
        raise StackError(f"the MLflow UI server {why}; its log says: {(lines[-1] if lines else '(empty log)')[:200]} (log {self.state.log})")

    def abandon(self) -> None:
        """Stop a server this launch started (a failed `crisis up` leaves nothing running)."""
        if self.process is not None and not self.already_running:
            terminate_group(self.process.pid, timeout=10)
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                self.process.wait(timeout=1)


def launch_mlflow_ui(home: Path | None = None, port: int | None = None, host: str = "127.0.0.1", tracking_uri: str | None = None) -> Launch | None:
    """Start `mlflow server --workers 1` on `host` over the stack's store; None when the tracking URI is a
    server already. `port`: None takes 5000, or a free port when 5000 is taken.

    Raises:
        StackError: `port` was asked for and is taken by another process.
    """
    home = (home or crisis_home()).resolve()
    store = tracking_uri or default_tracking_uri()
    if is_remote(store):
        return None
    running = read_ui_state(home)
    if running is not None:
        if why_not_ours(running) is None and is_answering(running.url):
            return Launch(None, running, home, already_running=True)
        if why_not_ours(running) is None:  # ours but not answering (frozen, wedged): replaced
            terminate_group(running.pid, timeout=10)
        (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
    if port is None:
        port = DEFAULT_PORT if port_free(host, DEFAULT_PORT) else _free_port(host)
    elif not port_free(host, port):
        raise StackError(f"port {port} on {host} is in use by another process: pass another --mlflow-port")
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / LOG_FILE
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    # a UI to browse runs and models: without MLflow's job executor (its huey consumers serve GenAI jobs this
    # stack never submits; they cost seconds at start and a process per consumer)
    environment.update(MLFLOW_BACKEND_STORE_URI=store, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
               "--artifacts-destination", str(home / "mlartifacts")]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=environment, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        started_at = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started_at = None
    state = MlflowUiState(pid=process.pid, url=f"http://{host}:{port}", log=str(log_path), store=mask_uri(store), started_at=started_at)
    return Launch(process, state, home)


def stop_mlflow_ui(home: Path | None = None, timeout: float = 15.0) -> MlflowUiState | None:
    """Stop the recorded MLflow server if it is still ours; the record is cleared either way."""
    home = (home or crisis_home()).resolve()
    state = read_ui_state(home)
    if state is None:
        (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
        return None
    stopped = why_not_ours(state) is None
    if stopped:
        terminate_group(state.pid, timeout)
    (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
    return state if stopped else None


def mlflow_ui_status(home: Path | None = None) -> dict[str, object]:
    """What `crisis status` says of the MLflow UI."""
    store = default_tracking_uri()
    if is_remote(store):
        return {"source": "MLFLOW_TRACKING_URI", "url": mask_uri(store), "healthy": is_answering(store)}
    state = read_ui_state(home)
    if state is None:
        return {"source": "none", "healthy": False}
    stale = why_not_ours(state)
    return {"source": "local stack", "url": state.url, "pid": state.pid, "healthy": stale is None and is_answering(state.url), "problem": stale}

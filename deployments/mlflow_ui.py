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

import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Required, TypedDict
from urllib.parse import urlsplit

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import MLFLOW_UI_STATE, crisis_home, default_tracking_uri
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed
from prefect_crisis.deployments.process import NO_SERVER, ManagedProcess, free_port, http_ok, port_free, recorded

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


def store_uri(home: Path | None = None) -> str:
    """The stack's MLflow store: `MLFLOW_TRACKING_URI` when set, else the SQLite store under `home`
    (`--home X` is X's store, not the one of `$CRISIS_HOME` or `./.crisis`)."""
    if home is None:
        return default_tracking_uri()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.resolve() / 'mlflow.db'}"


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


def ui_process(state: MlflowUiState) -> ManagedProcess:
    """The recorded MLflow UI as a managed process: `... mlflow server ... --port PORT` started at `started_at`."""

    def matches(cmdline: list[str]) -> bool:
        return "mlflow" in " ".join(cmdline[:3]) and "server" in cmdline and str(state.port) in cmdline

    return recorded("MLflow UI server", state.pid, state.started_at, matches, state.log)


def why_not_ours(state: MlflowUiState) -> str | None:
    """None when `state.pid` is still the `mlflow server` this stack started; else why the record is stale."""
    return ui_process(state).why_not_ours()


def is_answering(url: str, timeout: float = 2.0) -> bool:
    return http_ok(f"{url}/health", timeout)


@dataclass
class Launch:
    """An `mlflow server` started and not yet waited for (it takes seconds to import; the Prefect
    server starts meanwhile)."""

    process: ManagedProcess | None
    state: MlflowUiState
    home: Path
    already_running: bool = False

    def wait(self, timeout: float = 90.0, waiting: Retrying | None = None) -> MlflowUiState:
        """Until the server answers its health check; recorded then.

        Raises:
            StackError: it exited or did not answer within `timeout` (stopped, its log named).
        """
        process = self.process
        if self.already_running or process is None:
            return self.state
        port = self.state.port or 0
        waiting = waiting or Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.5))
        if process.wait_ready(lambda: process.listens_on(port) and is_answering(self.state.url), waiting):
            (self.home / MLFLOW_UI_STATE).write_text(json.dumps(asdict(self.state)))
            return self.state
        why = "exited" if process.exit_code() is not None else f"did not answer within {timeout:.0f}s"
        self.abandon()
        lines = [line.strip() for line in process.log_text().splitlines() if line.strip()]
        raise StackError(f"the MLflow UI server {why}; its log says: {(lines[-1] if lines else '(empty log)')[:200]} (log {self.state.log})")

    def abandon(self) -> None:
        """Stop a server this launch started (a failed `crisis up` leaves nothing running)."""
        if self.process is not None and not self.already_running:
            self.process.stop(grace=10)


def launch_mlflow_ui(home: Path | None = None, port: int | None = None, host: str = "127.0.0.1", tracking_uri: str | None = None) -> Launch | None:
    """Start `mlflow server --workers 1` on `host` over the stack's store; None when the tracking URI is a
    server already. `port`: None takes 5000, or a free port when 5000 is taken.

    Raises:
        StackError: `port` was asked for and is taken by another process.
    """
    home = (home or crisis_home()).resolve()
    store = tracking_uri or store_uri(home)
    if is_remote(store):
        return None
    running = read_ui_state(home)
    if running is not None:
        if why_not_ours(running) is None and is_answering(running.url):
            return Launch(None, running, home, already_running=True)
        if why_not_ours(running) is None:  # ours but not answering (frozen, wedged): replaced
            ui_process(running).stop(grace=10)
        (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
    if port is None:
        port = DEFAULT_PORT if port_free(host, DEFAULT_PORT) else free_port(host)
    elif not port_free(host, port):
        raise StackError(f"port {port} on {host} is in use by another process: pass another --mlflow-port")
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / LOG_FILE
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    # a UI to browse runs and models: without MLflow's job executor (its huey consumers serve GenAI jobs this
    # stack never submits; they cost seconds at start and a process per consumer)
    environment.update(MLFLOW_BACKEND_STORE_URI=store, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--artifacts-destination",
        str(home / "mlartifacts"),
    ]
    process = ManagedProcess.spawn("MLflow UI server", command, log=log_path, env=environment, cwd=home)
    state = MlflowUiState(pid=process.pid, url=f"http://{host}:{port}", log=str(log_path), store=mask_uri(store), started_at=process.started_at)
    return Launch(process, state, home)


def stop_mlflow_ui(home: Path | None = None, timeout: float = 15.0) -> MlflowUiState | None:
    """Stop the recorded MLflow server if it is still ours; the record is cleared either way."""
    home = (home or crisis_home()).resolve()
    state = read_ui_state(home)
    if state is None:
        (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
        return None
    stopped = ui_process(state).stop(grace=timeout)
    (home / MLFLOW_UI_STATE).unlink(missing_ok=True)
    return state if stopped else None


class MlflowUiStatus(TypedDict, total=False):
    """What `crisis status` says of the MLflow UI: where it comes from and whether it answers (the rest when known)."""

    source: Required[str]
    healthy: Required[bool]
    url: str
    pid: int
    problem: str | None


def mlflow_ui_status(home: Path | None = None) -> MlflowUiStatus:
    """What `crisis status` says of the MLflow UI."""
    store = store_uri(home)
    if is_remote(store):
        return {"source": "MLFLOW_TRACKING_URI", "url": mask_uri(store), "healthy": is_answering(store)}
    state = read_ui_state(home)
    if state is None:
        return {"source": NO_SERVER, "healthy": False}
    stale = why_not_ours(state)
    return {"source": "local stack", "url": state.url, "pid": state.pid, "healthy": stale is None and is_answering(state.url), "problem": stale}

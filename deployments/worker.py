"""The local stack's workers: `crisis up --worker` runs two, so what the
escalation automations trigger runs without a second terminal.

- a Prefect process worker on `crisis-pool` (training, validation: runs that
  must be killable run in their own process), polling every second;
- the warm worker on `crisis-responders` (deployments/warm_worker.py: the
  crisis response, emergency stop and health monitor run in threads of a
  process that imported them once), polling every half second.

Prefect's default poll is 10 s. Each worker's pid and start time are recorded
(`worker.json`, `warm-worker.json`); `crisis down` stops both (each whole
process group: flow runs a worker started go too) before the server.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed
from prefect_crisis.deployments.pools import HEARTBEAT_SECONDS, POOL, WARM_POOL  # POOL, WARM_POOL re-exported
from prefect_crisis.deployments.process import ManagedProcess, recorded

WARM_MODULE = "prefect_crisis.deployments.warm_worker"  # how the warm worker is started, and recognised on a command line


@dataclass(frozen=True)
class WorkerKind:
    """One of the stack's two workers: what it polls, where it records itself, how it starts."""

    name: str
    pool: str
    state_file: str
    log_file: str
    query_seconds: str
    launcher: tuple[str, ...]  # after `python`: what starts it
    marker: str  # an argument of its command line, to recognise the process later

    def command(self, label: str) -> list[str]:
        return [sys.executable, *self.launcher, "--pool", self.pool, "--name", f"crisis-{self.name}-{label}"]


PROCESS = WorkerKind("process", POOL, "worker.json", "worker.log", "1", ("-m", "prefect", "worker", "start", "--type", "process"), "worker")
WARM = WorkerKind("warm", WARM_POOL, "warm-worker.json", "warm-worker.log", "0.5", ("-m", WARM_MODULE), WARM_MODULE)
KINDS = {kind.name: kind for kind in (PROCESS, WARM)}


@dataclass(frozen=True)
class WorkerState:
    pid: int
    pool: str
    api_url: str
    log: str
    started_at: float
    kind: str = "process"


def read_worker(home: Path | None = None, kind: WorkerKind = PROCESS) -> WorkerState | None:
    path = (home or crisis_home()) / kind.state_file
    try:
        return WorkerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_workers(home: Path | None = None) -> list[WorkerState]:
    """The workers recorded for this stack (process first, then warm), alive or not."""
    return [state for kind in KINDS.values() if (state := read_worker(home, kind)) is not None]


def worker_process(state: WorkerState) -> ManagedProcess:
    """The recorded worker as a managed process: its kind's marker on its command line, started at `started_at`."""
    kind = KINDS.get(state.kind)
    return recorded(f"{state.kind} worker", state.pid, state.started_at, lambda cmdline: kind is not None and kind.marker in cmdline, state.log)


def worker_alive(state: WorkerState) -> bool:
    """True when the recorded pid is still the worker this stack started (command line and start time)."""
    return worker_process(state).alive()


def start_worker(
    api_url: str, home: Path | None = None, kind: WorkerKind = PROCESS, timeout: float = 60.0, waiting: Retrying | None = None
) -> WorkerState:
    """Start the worker of `kind` against `api_url`, or return the one running.

    Raises:
        StackError: the worker exited or did not start polling within `timeout` seconds.
    """
    home = (home or crisis_home()).resolve()
    running = read_worker(home, kind)
    if running and worker_alive(running) and running.api_url == api_url:
        return running
    log = home / kind.log_file
    environment = dict(os.environ)
    environment.update(
        PREFECT_API_URL=api_url,
        PREFECT_WORKER_QUERY_SECONDS=kind.query_seconds,
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        # its runs' heartbeats: the ladder's crisis-stalled marks a response Crashed after STALLED_AFTER_HEARTBEATS missed
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS),
        CRISIS_HOME=str(home),
        CRISIS_NO_AUTOCONNECT="1",
    )
    environment.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    process = ManagedProcess.spawn(
        f"{kind.name} worker", kind.command(str(os.getpid())), log=log, env=environment, cwd=home, matches=lambda cmdline: kind.marker in cmdline
    )
    state = WorkerState(process.pid, kind.pool, api_url, str(log), process.started_at or 0.0, kind.name)
    waiting = waiting or Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.25))
    if process.wait_ready(lambda: "started!" in process.log_text(), waiting):
        (home / kind.state_file).write_text(json.dumps(asdict(state)))
        return state
    if process.exit_code() is not None:
        raise StackError(f"the {kind.name} worker exited with code {process.exit_code()} at start: see {log}")
    process.stop(grace=15.0)
    raise StackError(f"the {kind.name} worker did not start within {timeout:g} s: see {log}")


def start_workers(api_url: str, home: Path | None = None, timeout: float = 60.0) -> list[WorkerState]:
    """Start both workers: the process worker (training, validation) and the warm worker (the crisis flows)."""
    return [start_worker(api_url, home, kind, timeout) for kind in KINDS.values()]


def stop_worker(home: Path | None = None, state: WorkerState | None = None, grace: float = 15.0, kind: WorkerKind = PROCESS) -> WorkerState | None:
    """Stop the recorded worker (its process group); returns what was stopped, None when nothing ran."""
    home = (home or crisis_home()).resolve()
    kind = KINDS.get(state.kind, kind) if state is not None else kind
    state = state or read_worker(home, kind)
    (home / kind.state_file).unlink(missing_ok=True)
    if state is None or not worker_process(state).stop(grace):
        return None
    return state


def stop_workers(home: Path | None = None, grace: float = 15.0) -> list[WorkerState]:
    """Stop every recorded worker of this stack; returns those that were running."""
    return [stopped for kind in KINDS.values() if (stopped := stop_worker(home, grace=grace, kind=kind)) is not None]

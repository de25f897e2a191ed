"""The local stack's worker: `crisis up --worker` runs a Prefect process worker
on the `crisis-pool` work pool, so what the escalation automations trigger
runs without a second terminal.

It polls every second (`PREFECT_WORKER_QUERY_SECONDS=1`; Prefect's default is
10 s), so a triggered run starts within about a second plus the flow-run
process's own start. Its pid and start time are recorded in `worker.json`;
`crisis down` stops it (the whole process group: flow runs it started go too)
before the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home

WORKER_FILE = "worker.json"
WORKER_LOG = "worker.log"
POOL = "crisis-pool"
QUERY_SECONDS = "1"


@dataclass(frozen=True)
class WorkerState:
    pid: int
    pool: str
    api_url: str
    log: str
    started_at: float


def read_worker(home: Path | None = None) -> WorkerState | None:
    path = (home or crisis_home()) / WORKER_FILE
    try:
        return WorkerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def worker_alive(state: WorkerState) -> bool:
    """True when the recorded pid is still the worker this stack started (command line and start time)."""
    try:
        process = psutil.Process(state.pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and "worker" in process.cmdline()
            and abs(process.create_time() - state.started_at) < 1.0
        )
    except psutil.Error:
        return False


def start_worker(api_url: str, home: Path | None = None, pool: str = POOL, timeout: float = 60.0) -> WorkerState:
    """Start the process worker for `pool` against `api_url`, or return the one running.

    Raises:
        StackError: the worker exited or did not start polling within `timeout` seconds.
    """
    home = (home or crisis_home()).resolve()
    running = read_worker(home)
    if running and worker_alive(running) and running.api_url == api_url:
        return running
    log = home / WORKER_LOG
    environment = dict(os.environ)
    environment.update(
        PREFECT_API_URL=api_url,
        PREFECT_WORKER_QUERY_SECONDS=QUERY_SECONDS,
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        CRISIS_HOME=str(home),
        CRISIS_NO_AUTOCONNECT="1",
    )
    environment.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", f"crisis-worker-{os.getpid()}"]
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    state = WorkerState(process.pid, pool, api_url, str(log), psutil.Process(process.pid).create_time())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"the worker exited with code {process.returncode} at start: see {log}")
        if "started" in log.read_text(errors="replace").lower():
            (home / WORKER_FILE).write_text(json.dumps(asdict(state)))
            return state
        time.sleep(0.25)
    stop_worker(home, state)
    raise StackError(f"the worker did not start within {timeout:g} s: see {log}")


def stop_worker(home: Path | None = None, state: WorkerState | None = None, grace: float = 15.0) -> WorkerState | None:
    """Stop the recorded worker (its process group); returns what was stopped, None when nothing ran."""
    home = (home or crisis_home()).resolve()
    state = state or read_worker(home)
    (home / WORKER_FILE).unlink(missing_ok=True)
    if state is None or not worker_alive(state):
        return None
    from prefect_crisis.deployments.stack import terminate_group

    terminate_group(state.pid, grace)
    return state

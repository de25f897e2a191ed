"""Whether a flow run's process still lives: `crisis train`'s own process, or the one a worker runs it in.

`crisis train` runs its flow in the command's own process, under no worker: a SIGKILL (or an out-of-memory
kill) leaves its flow run Running with nothing to end it. So the command records itself on the run as its
infrastructure, `crisis-train:<host>:<pid>:<start time>` (`record_train_process`, an on_running hook), and
`crisis up`, `crisis status` and the next `crisis train` mark Crashed every unfinished run whose recorded
process is gone (`crash_dead_train_runs`): the ManagedProcess ownership check, pid *and* start time, so a
pid reused by another program is never taken for the run. A SIGTERM or SIGHUP ends the run
itself (`signals_end_the_run`).

The same record keeps `mark_leftovers_crashed` from crashing a run that outlived the server (only the
server died; its `crisis train` or worker process goes on and talks to the new server): crashing it would
end its MLflow run as killed while it still trains, and the next training would resume its checkpoint a
second time (`run_process_alive`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import TerminationSignal
from prefect.states import Crashed

from prefect_crisis.deployments.process import START_TIME_TOLERANCE, command_line, recorded

TRAIN_KIND = "crisis-train"
UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]


@dataclass(frozen=True)
class TrainProcess:
    """The `crisis train` process that runs a flow run: its host, pid and start time (psutil's create_time).

    Example:
        >>> process = TrainProcess("box", 4242, 1700000000.25)
        >>> process.infrastructure_id()
        'crisis-train:box:4242:1700000000.250'
        >>> TrainProcess.parse(process.infrastructure_id()) == process, TrainProcess.parse("1234")
        (True, None)
    """

    host: str
    pid: int
    started_at: float

    def infrastructure_id(self) -> str:
        return f"{TRAIN_KIND}:{self.host}:{self.pid}:{self.started_at:.3f}"

    @classmethod
    def parse(cls, infrastructure_pid: str | None) -> TrainProcess | None:
        kind, _, rest = (infrastructure_pid or "").partition(":")
        parts = rest.rsplit(":", 2)  # a host name may hold a colon; the pid and start time do not
        if kind != TRAIN_KIND or len(parts) != 3 or not parts[1].isdigit():
            return None
        try:
            return cls(parts[0], int(parts[1]), float(parts[2]))
        except ValueError:
            return None

    @classmethod
    def current(cls) -> TrainProcess:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def why_gone(self) -> str | None:
        """Why the process is gone (exited, or its pid now another process); None while it runs, or when it
        runs on another host (nothing here can tell: such a run is never marked)."""
        if self.host != socket.gethostname():
            return None
        return recorded("crisis train", self.pid, self.started_at, lambda cmdline: True).why_not_ours()


def record_train_process(flow, flow_run: FlowRun, state) -> None:
    """on_running hook of `crisis train`'s flow: record this process as the run's infrastructure."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, infrastructure_pid=TrainProcess.current().infrastructure_id())


@contextlib.contextmanager
def signals_end_the_run() -> Iterator[None]:
    """A SIGHUP (the terminal closed) acts as a SIGTERM, which Prefect's engine turns into the run's end
    (Crashed) instead of the process vanishing with its run left Running. Once the engine has ended the run it
    passes the SIGTERM on to the handler it found: this one raises TerminationSignal, for the caller to say so
    in one line (rather than the process dying of the signal, or with a traceback)."""

    def hang_up(signum, frame) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def terminated(signum, frame) -> None:
        raise TerminationSignal(signum)

    previous = {signum: signal.signal(signum, handler) for signum, handler in ((signal.SIGHUP, hang_up), (signal.SIGTERM, terminated))}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _worker_child_alive(flow_run: FlowRun) -> bool:
    """A process worker records the bare pid of the process it runs the flow run in; it is that process when
    it still runs Prefect and started no later than the run did."""
    pid = flow_run.infrastructure_pid or ""
    if not pid.isdigit():
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE or not any("prefect" in part for part in command_line(process)):
            return False
        created = process.create_time()
    except psutil.Error:
        return False
    began = flow_run.start_time or flow_run.expected_start_time
    return began is None or created <= began.timestamp() + START_TIME_TOLERANCE


def run_process_alive(flow_run: FlowRun) -> bool:
    """True when the process running `flow_run` is known to live on this host (`crisis train`'s, a worker's
    child, or a warm worker); False when it is gone or cannot be told."""
    train = TrainProcess.parse(flow_run.infrastructure_pid)
    if train is not None:
        return train.host == socket.gethostname() and train.why_gone() is None
    from prefect_crisis.deployments.warm_worker import warm_worker_alive

    return warm_worker_alive(flow_run.infrastructure_pid) or _worker_child_alive(flow_run)


def crash_dead_train_runs(client: SyncPrefectClient | None = None) -> tuple[str, ...]:
    """Mark Crashed the unfinished flow runs of `crisis train` on this host whose process is gone; their ids
    (`client` defaults to one on the current PREFECT_API_URL)."""
    if client is None:
        with get_client(sync_client=True) as own_client:
            return crash_dead_train_runs(own_client)
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))), limit=200)
    marked = []
    for run in runs:
        train = TrainProcess.parse(run.infrastructure_pid)
        gone = train.why_gone() if train is not None else None
        if gone is None:
            continue
        message = f"the `crisis train` process that ran it is gone ({gone}): killed"
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))),
        )
        for task_run in task_runs:  # the training task it was in stays Running too
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        marked.append(str(run.id))
    return tuple(marked)

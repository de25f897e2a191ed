"""A warm worker: the crisis flows run in a process that has already imported them.

Prefect's process worker starts a new Python process for every flow run, which
then imports Prefect, MLflow, scikit-learn and the flow (about 4 s here) before
its first line runs. A crisis response triggered by an automation pays that on
every incident. This worker (type `crisis-warm`, pool `crisis-responders`)
imports the crisis flows once at start and runs each flow run of its pool in a
thread of its own process, through Prefect's flow engine (`run_flow` with the
existing flow run): the run's states, logs, task runs and events are the same
as from a process worker, and it starts in a poll interval.

Why this is safe for these flows: none of them keeps process-global MLflow or
Prefect state (the store and client are passed along), plots use matplotlib's
object API, and each run's incident, timeline and emitter are its own.

A cancelled run stops: while a run's thread works, the worker reads the run's
state every half second, and on Cancelling raises Prefect's TerminationSignal in
that thread (at its next Python instruction: a long call into native code
finishes first), which ends the run as a cancel does under a process worker; the
worker then marks it Cancelled.

What a thread cannot do, and why training stays on the process pool:
- a run blocked in native code cannot be stopped before that call returns;
- per-run environment variables cannot be applied to one thread: the worker
  takes the variables of a run's job variables (`CRISIS_HOME` in ours) that its
  own environment lacks, and from then on refuses a run that names another
  value (Crashed, with the reason): it never runs against the wrong stack;
- one crashing interpreter (a segfault in native code) takes the runs in flight
  with it; the worker is restarted by `crisis up --worker`.

Run: `python -m prefect_crisis.deployments.warm_worker --pool crisis-responders`
(`crisis up --worker` starts it next to the process worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import InfrastructureNotAvailable, ObjectNotFound, TerminationSignal
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.settings import get_current_settings
from prefect.states import Cancelled
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from prefect_crisis.core.prefect_compat import run_flow_in_this_process
from prefect_crisis.core.waiting import Retrying, stop_never, wait_exponential
from prefect_crisis.deployments.pools import HEARTBEAT_SECONDS, WARM_POOL
from prefect_crisis.deployments.process import recorded

WARM_MODULE = __spec__.name  # this module, as `python -m` names it on the worker's command line (worker.WARM_MODULE)

WARM_TYPE = "crisis-warm"
DEFAULT_LIMIT = 8
CANCEL_POLL_SECONDS = 0.5  # how often a running run's state is read for a cancel
CANCEL_REPEAT_SECONDS = 5.0  # a cancel raised again this often while the thread still runs (code that swallowed it)
# Imported at start, so the first incident finds them warm: the deployments' entrypoint modules, and
# what their steps import only when they first run (the diagnosis plot, parquet windows).
WARM_MODULES = (
    "prefect_crisis.flows.response",
    "prefect_crisis.flows.emergency",
    "prefect_crisis.flows.monitoring",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "PIL.PngImagePlugin",
    "pyarrow.parquet",
)


class WarmJobConfiguration(BaseJobConfiguration):
    """The base job configuration; its `env` binds the worker's environment once (see `bind_environment`)."""


class WarmVariables(BaseVariables):
    """Job variables of the `crisis-warm` pool (name, env, labels; no command: runs do not start a process)."""


class WarmWorkerResult(BaseWorkerResult):
    """Status 0: the engine reported the run's final state itself; 1: the engine raised (the run is marked Crashed)."""


def infrastructure_id() -> str:
    """What the flow run records as its infrastructure: this worker's host and pid, marked as in-process."""
    return f"crisis-warm:{socket.gethostname()}:{os.getpid()}"


_ENVIRONMENT_LOCK = threading.Lock()


def _same(name: str, first: str, second: str) -> bool:
    if name.endswith("_HOME") or name.endswith("_PATH"):
        return os.path.realpath(first) == os.path.realpath(second)
    return first == second


def bind_environment(requested: dict[str, Any], environ: MutableMapping[str, str]) -> str | None:
    """Apply a run's environment to this process, once; why the run may not execute here, else None.

    Variables Prefect sets per run (`PREFECT_*`) are the engine's business and skipped. A variable this
    process lacks is set (the first run binds the worker to its stack); one it has with another value
    refuses the run: every thread shares one environment.

    Example:
        >>> environ = {}
        >>> bind_environment({"CRISIS_HOME": "/srv/a"}, environ), environ
        (None, {'CRISIS_HOME': '/srv/a'})
        >>> bind_environment({"CRISIS_HOME": "/srv/b"}, environ)
        "the run's CRISIS_HOME is /srv/b, this warm worker runs with /srv/a: start a warm worker for that value"
    """
    with _ENVIRONMENT_LOCK:
        wanted = {name: str(value) for name, value in requested.items() if value is not None and not name.startswith("PREFECT")}
        for name, value in wanted.items():
            current = environ.get(name)
            if current is not None and not _same(name, current, value):
                return f"the run's {name} is {value}, this warm worker runs with {current}: start a warm worker for that value"
        for name, value in wanted.items():
            environ.setdefault(name, value)
    return None


class WarmWorker(BaseWorker[WarmJobConfiguration, WarmVariables, WarmWorkerResult]):
    """Runs its pool's flow runs in threads of this process, flows imported once (see the module docstring)."""

    type = WARM_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = WarmVariables
    _description = "prefect-crisis: runs short crisis flows in threads of a warm process (no per-run process start)."
    _display_name = "Crisis (warm, in-process)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # `limit` bounds the runs at once, hence the threads
        self._flows: dict[str, Flow[..., Any]] = {}

    async def _flow_of(self, flow_run: FlowRun) -> Flow[..., Any]:
        if flow_run.deployment_id is None:
            raise ValueError(f"flow run {flow_run.id} has no deployment: the warm worker runs deployments' flow runs only")
        deployment = await self.client.read_deployment(flow_run.deployment_id)
        entrypoint = deployment.entrypoint or ""
        if entrypoint not in self._flows:
            # Module paths come from sys.modules after the first import; the result is kept per entrypoint.
            self._flows[entrypoint] = await anyio.to_thread.run_sync(load_flow_from_entrypoint, entrypoint, False)
        return self._flows[entrypoint]

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        # Prefect's BaseWorker.run says TaskStatus[int], yet records str() of what is started as the flow run's
        # infrastructure_pid: this worker's id is a host:pid string.
        task_status: anyio.abc.TaskStatus[str] | None = None,  # type: ignore[override]
    ) -> WarmWorkerResult:
        task_status = task_status or anyio.TASK_STATUS_IGNORED
        refused = bind_environment(configuration.env, os.environ)
        if refused:
            raise ValueError(refused)
        flow = await self._flow_of(flow_run)
        task_status.started(infrastructure_id())
        logger = self.get_flow_run_logger(flow_run)

        thread_ids: list[int] = []

        def execute() -> int:
            thread_ids.append(threading.get_ident())
            try:
                run_flow_in_this_process(flow, flow_run, return_type="state", error_logger=logger)
                return 0
            except BaseException:  # the engine already logged it; the worker marks the run Crashed
                return 1

        cancel = CancelWatch(thread_ids)
        async with anyio.create_task_group() as watching:
            watching.start_soon(self._watch_for_cancel, flow_run, cancel)
            status = await anyio.to_thread.run_sync(execute)
            watching.cancel_scope.cancel()
        if cancel.raised:
            with contextlib.suppress(ObjectNotFound):
                await self.client.set_flow_run_state(
                    flow_run.id, Cancelled(message="cancelled: the warm worker stopped the run's thread"), force=True
                )
            logger.info("flow run %s cancelled: its thread was stopped", flow_run.id)
            status = 0  # the run's final state is set: nothing for the worker to mark
        return WarmWorkerResult(status_code=status, identifier=infrastructure_id())

    async def _watch_for_cancel(self, flow_run: FlowRun, cancel: CancelWatch) -> None:
        """Until cancelled by `run`: read the run's state, and stop its thread when it is Cancelling."""
        while True:
            await anyio.sleep(CANCEL_POLL_SECONDS)
            try:
                current = await self.client.read_flow_run(flow_run.id)
            except ObjectNotFound:
                return
            if current.state is not None and current.state.type in (StateType.CANCELLING, StateType.CANCELLED):
                cancel.stop(time.monotonic())

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: WarmJobConfiguration, grace_seconds: int = 30) -> None:
        raise InfrastructureNotAvailable(f"{infrastructure_pid} runs flows in threads: the warm worker stops a cancelled run's thread itself")


class WarmRunCancelled(TerminationSignal):
    """Raised in a run's thread when the run is cancelled: the engine and the crisis flows treat it as the
    SIGTERM a process worker's cancel sends (a training records its stop as cancelled)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)


def raise_in_thread(thread_id: int, exception: type[BaseException]) -> bool:
    """Raise `exception` in thread `thread_id` at its next Python instruction; False when no such thread runs."""
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
    if changed > 1:  # more than one thread state touched: undo, as CPython's documentation asks
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return changed == 1


@dataclass
class CancelWatch:
    """The cancel of one run: its thread (once it started), and when its stop was last raised there.

    Example:
        >>> watch = CancelWatch(thread_ids=[])
        >>> watch.stop(now=0.0), watch.raised  # no thread yet: raised once it has started
        (False, False)
    """

    thread_ids: list[int]
    last_raised: float | None = None
    raised: bool = False
    raise_in: Callable[[int, type[BaseException]], bool] = field(default=raise_in_thread, repr=False)

    def stop(self, now: float) -> bool:
        """Raise WarmRunCancelled in the run's thread, unless that was done less than CANCEL_REPEAT_SECONDS ago."""
        if not self.thread_ids or (self.last_raised is not None and now - self.last_raised < CANCEL_REPEAT_SECONDS):
            return False
        if not self.raise_in(self.thread_ids[0], WarmRunCancelled):
            return False
        self.last_raised, self.raised = now, True
        return True


def warm_up(modules: tuple[str, ...] = WARM_MODULES) -> float:
    """Import the crisis flows (and what they import), and open the MLflow store when the stack is known
    (MLflow keeps one store per URI: its schema check is paid here, not by the first incident); returns the seconds."""
    started = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    if os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("CRISIS_HOME"):
        from mlflow import MlflowClient

        from prefect_crisis.core.paths import default_tracking_uri

        uri = default_tracking_uri()
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models(max_results=1)
    return time.perf_counter() - started


def _is_warm_worker(pid: int) -> bool:
    return recorded("warm worker", pid, None, lambda cmdline: WARM_MODULE in cmdline).why_not_ours() is None


def warm_worker_alive(infrastructure_pid: str | None) -> bool:
    """True when `infrastructure_pid` names a warm worker of this host that still runs."""
    kind, _, rest = (infrastructure_pid or "").partition(":")
    run_host, _, pid = rest.rpartition(":")
    return kind == WARM_TYPE and run_host == socket.gethostname() and pid.isdigit() and _is_warm_worker(int(pid))


def crash_orphans(pool: str) -> int:
    """Mark Crashed the runs of `pool` left Running or Pending by a warm worker of this host that is gone
    (killed with its threads): nothing else would end them. Returns how many were marked."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, WorkPoolFilter, WorkPoolFilterName
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    host, marked = socket.gethostname(), 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=200,
        )
        for run in runs:
            kind, _, rest = (run.infrastructure_pid or "").partition(":")
            run_host, _, pid = rest.rpartition(":")
            if kind != WARM_TYPE or run_host != host or not pid.isdigit() or _is_warm_worker(int(pid)):
                continue
            client.set_flow_run_state(run.id, Crashed(message=f"the warm worker that ran it ({run.infrastructure_pid}) is gone"), force=True)
            marked += 1
    return marked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_crisis.deployments.warm_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=WARM_POOL, help=f"work pool to poll (created as type {WARM_TYPE} when missing)")
    parser.add_argument("--name", default=None, help="worker name shown in the UI")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="flow runs at once (threads)")
    options = parser.parse_args(argv)
    seconds = warm_up()
    print(f"imported the crisis flows in {seconds:.1f} s", flush=True)
    if not get_current_settings().flows.heartbeat_frequency:
        print(
            f"heartbeats are off: set PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_SECONDS} so a run lost with this worker is "
            "marked Crashed and run again by the ladder (crisis-stalled, crisis-retry-*); `crisis up --worker` sets it",
            flush=True,
        )

    def start() -> None:
        orphans = crash_orphans(options.pool)
        if orphans:
            print(f"marked {orphans} run(s) of a warm worker that is gone as Crashed", flush=True)
        worker = WarmWorker(work_pool_name=options.pool, name=options.name, limit=options.limit)
        asyncio.run(worker.start(printer=lambda message: print(message, flush=True)))

    supervise(start, say=lambda message: print(message, flush=True))


def supervise(start: Callable[[], None], say: Callable[[str], None], waiting: Retrying | None = None, settled_after: float = 60.0) -> None:
    """Run `start` until it returns or Ctrl-C; when it raises (the API was away too long and Prefect's loops gave up),
    start it again after a pause that doubles from 1 s up to 30 s, and from 1 s again after a run that lasted
    `settled_after` seconds.

    Example:
        >>> from prefect_crisis.core.waiting import FakeClock
        >>> clock, failures = FakeClock(), iter([OSError("away"), OSError("away"), None])
        >>> def start():
        ...     failure = next(failures)
        ...     if failure:
        ...         raise failure
        >>> supervise(start, say=lambda line: None, waiting=Retrying(stop=stop_never(), wait=wait_exponential(1.0, maximum=30.0), clock=clock, sleep=clock.sleep))
        >>> clock.sleeps
        [1.0, 2.0]
    """
    waiting = waiting or Retrying(stop=stop_never(), wait=wait_exponential(1.0, maximum=30.0))
    while True:
        for attempt in waiting.attempts():
            started = waiting.clock()
            try:
                start()
                return
            except KeyboardInterrupt:
                return
            except Exception as error:
                if waiting.clock() - started > settled_after and attempt.number > 1:
                    say(f"the warm worker stopped ({type(error).__name__}: {str(error)[:160]}) after running a while; starting again")
                    break  # a fresh series of pauses, from the shortest
                say(f"the warm worker stopped ({type(error).__name__}: {str(error)[:160]}); starting again in {waiting.wait(attempt):g} s")


if __name__ == "__main__":
    main()

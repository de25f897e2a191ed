"""What a dead stack leaves behind, marked as crashed in both stores.

When the local Prefect server dies (SIGKILL, a crash, a power cut) the flow
runs it was orchestrating stay Running in its database, and the MLflow
training runs they had opened stay RUNNING: nothing is left to finish them.
A freshly started server on that database has, by construction, no live run
talking to it yet, so every Running/Pending/Cancelling flow run in it is a
leftover, unless its process still runs (only the server died: see
deployments/live_runs.py). `mark_leftovers_crashed` sets those to Prefect's Crashed state and
ends the MLflow training runs they own (tag `crisis.status` = running) as
FAILED, recorded as stopped (`crisis.stop_kind` = killed, and a
`crisis.crash_reason` tag): the next training resumes their last periodic
checkpoint.

On a server that kept running, `mark_dead_train_runs_crashed` does the same
for the runs of a `crisis train` process that was killed (SIGKILL).

Only MLflow runs whose `crisis.flow_run_id` names a flow run of this server
that is no longer running are touched, so a shared tracking server's other
runs are never ended from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed

from prefect_crisis.core.vocabulary import RunStatusTag, TagKey
from prefect_crisis.deployments.live_runs import crash_dead_train_runs, run_process_alive
from prefect_crisis.tasks.training.checkpoints import record_killed

UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
REASON = "the Prefect server stopped while this run was in progress; marked crashed when the stack was started again"
TRAIN_GONE = "the `crisis train` process that ran it is gone (killed); marked crashed by a later crisis command"


@dataclass(frozen=True)
class Leftovers:
    """What was marked: flow run ids (Prefect) and run ids (MLflow)."""

    flow_runs: tuple[str, ...]
    task_runs: int
    training_runs: tuple[str, ...]
    left_by: str = "the previous server"

    def summary(self) -> str:
        return (
            f"marked what {self.left_by} left running as crashed: {len(self.flow_runs)} flow run(s) "
            f"({self.task_runs} task run(s)) -> Crashed, {len(self.training_runs)} MLflow training run(s) -> FAILED"
        )


def _store_exists(tracking_uri: str) -> bool:
    # A SQLite store that does not exist yet holds nothing to mark; opening it would create it.
    return not tracking_uri.startswith("sqlite:///") or Path(tracking_uri.removeprefix("sqlite:///")).exists()


def mark_leftovers_crashed(
    api_url: str, tracking_uri: str, reason: str = REASON, is_alive: Callable[[FlowRun], bool] = run_process_alive
) -> Leftovers:
    """Mark unfinished flow runs of the server at `api_url` Crashed, and their MLflow training runs FAILED.

    A run whose process still lives (`is_alive`: only the server died, its `crisis train` or worker process
    goes on) is left alone: crashing it would end its MLflow run while it trains, and the next training would
    resume the same checkpoint a second time.
    """
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        unfinished = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))
        flow_runs = [run for run in unfinished if not is_alive(run)]
        live = {run.id for run in unfinished} - {run.id for run in flow_runs}
        for run in flow_runs:
            client.set_flow_run_state(run.id, Crashed(message=reason), force=True)
        task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))))
        task_runs = [task_run for task_run in task_runs if task_run.flow_run_id not in live]
        for task_run in task_runs:
            client.set_task_run_state(task_run.id, Crashed(message=reason), force=True)
        training_runs = _end_orphaned_training_runs(client, tracking_uri, reason) if _store_exists(tracking_uri) else ()
    return Leftovers(tuple(str(run.id) for run in flow_runs), len(task_runs), training_runs)


def mark_dead_train_runs_crashed(api_url: str, tracking_uri: str) -> Leftovers:
    """On a server that keeps running: mark Crashed the runs of `crisis train` whose process is gone (a SIGKILL),
    and end their MLflow training runs FAILED (killed: the next training resumes their last checkpoint)."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_runs = crash_dead_train_runs(client)
        training_runs = _end_orphaned_training_runs(client, tracking_uri, TRAIN_GONE) if flow_runs and _store_exists(tracking_uri) else ()
    return Leftovers(flow_runs, 0, training_runs, left_by="a killed `crisis train`")


def _end_orphaned_training_runs(prefect_client, tracking_uri: str, reason: str) -> tuple[str, ...]:
    mlflow_client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiments = mlflow_client.search_experiments(filter_string="name LIKE 'crisis-training-%'")
    if not experiments:
        return ()
    runs = mlflow_client.search_runs(
        [experiment.experiment_id for experiment in experiments],
        filter_string=f"tags.`{TagKey.STATUS}` = '{RunStatusTag.RUNNING}' AND attributes.status = 'RUNNING'",
        max_results=1000,
    )
    ended = []
    for run in runs:
        flow_run_id = run.data.tags.get(TagKey.FLOW_RUN_ID)
        if not flow_run_id:
            continue
        try:
            flow_run = prefect_client.read_flow_run(flow_run_id)
        except ObjectNotFound:  # a run of another server sharing this tracking store: not ours to end
            continue
        if flow_run.state is None or not flow_run.state.is_final():
            continue
        # its process died with the stack: resumable from its last periodic checkpoint, as any killed training
        mlflow_client.set_tag(run.info.run_id, TagKey.CRASH_REASON, reason)
        record_killed(mlflow_client, run.info.run_id, reason)
        ended.append(run.info.run_id)
    return tuple(ended)

"""A training killed mid-epoch (SIGKILL: no handler runs, as when the kernel's OOM killer or a lost node ends it):
Prefect records it Crashed, and the next training run closes the orphaned MLflow run and resumes its last periodic
checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import CrisisError, DrillError
from prefect_crisis.core.vocabulary import CrisisEvent, TagKey
from prefect_crisis.tasks.drills.end_state import EndState
from prefect_crisis.tasks.drills.injections import save_drill_contract
from prefect_crisis.tasks.drills.observe import first_event, flow_run_ended, flow_run_processes, training_runs
from prefect_crisis.tasks.drills.scenario import Drill, Scenario, wait_until

TRAINING_DEPLOYMENT = "continuous-training/continuous-training"
DRILL_POLICY = DRILL_TRAINING_CONTRACT = "drill-training"
TRAINING_ROWS = 20_000  # 10 epochs of 250 mini-batches: a training of several seconds to kill in the middle of


@dataclass
class KilledTraining:
    """The policy's checkpoint interval, the flow run killed and its MLflow run, and the next training's flow run."""

    interval: float = 0.0
    killed_flow_run: str | None = None
    killed_run: str | None = None
    next_flow_run: str | None = None


def start_training(drill: Drill[KilledTraining]) -> str:
    """A run of the deployed continuous-training flow for the drill model (as its schedule starts one); its id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    parameters = {
        "model_name": drill.model,
        "contract_block": DRILL_TRAINING_CONTRACT,
        "policy_block": DRILL_POLICY,
        "synthetic_rows": TRAINING_ROWS,
        "seed": drill.seed,
    }
    flow_run = run_deployment(TRAINING_DEPLOYMENT, parameters=parameters, timeout=0, as_subflow=False)
    if not isinstance(flow_run, FlowRun):  # run_deployment hands back its async twin's coroutine inside an event loop
        raise DrillError("the training drill starts its run synchronously: run it outside an event loop")
    return str(flow_run.id)


@dataclass(frozen=True)
class TrainingKilled(Scenario[KilledTraining]):
    def new_state(self) -> KilledTraining:
        return KilledTraining()

    def setup(self, drill: Drill[KilledTraining]) -> None:
        drill.registry = ModelRegistry(model_name=drill.model)
        save_drill_contract(drill, DRILL_TRAINING_CONTRACT, keyed_rows=False)  # the synthetic batches the deployment makes have no key
        policy = TrainingPolicy(epochs=10, batch_size=64)  # the default checkpoint interval
        policy.save(DRILL_POLICY, overwrite=True)
        if policy.checkpoint_every_seconds is None:
            raise DrillError("the training drill's policy writes no periodic checkpoint: a killed run would have none to resume")
        drill.state.interval = policy.checkpoint_every_seconds

    def inject(self, drill: Drill[KilledTraining]) -> None:
        """Start a training on the process worker; once it has written a checkpoint, SIGKILL its process mid-epoch
        (a seeded moment)."""
        import random

        flow_run_id = drill.state.killed_flow_run = start_training(drill)

        def checkpointed():
            found = next(
                (
                    run
                    for run in training_runs(drill.model_registry)
                    if run.data.tags.get(TagKey.CHECKPOINT) == "true" and run.info.status == "RUNNING"
                ),
                None,
            )
            return found or ("ended" if flow_run_ended(flow_run_id) else None)

        run = wait_until(checkpointed, drill.limit / 2, every=0.2)
        if run is None or run == "ended":
            ended = flow_run_ended(flow_run_id)
            raise CrisisError(
                f"the training run wrote no checkpoint within {drill.limit / 2:g} s"
                + (f" (it ended {ended.state.name}: {ended.state.message})" if ended else "")
            )
        time.sleep(random.Random(drill.seed).uniform(0.1, 0.8))  # a seeded moment, well before the last epoch
        processes = flow_run_processes(flow_run_id)
        if not processes:
            raise CrisisError("the training flow run's process is not on this machine: run the drill where the crisis-pool worker runs")
        for process in processes:
            process.kill()  # SIGKILL
        drill.inject_now()
        drill.state.killed_run = run.info.run_id

    def expect(self, drill: Drill[KilledTraining]) -> None:
        """Prefect records the killed run Crashed; the MLflow run it left RUNNING is closed as killed by the next training
        run, which resumes its last checkpoint (written within the policy's interval of the kill) and completes."""
        from prefect_crisis.tasks.training.checkpoints import load_checkpoint_state, load_checkpoint_written_at

        registry, interval = drill.model_registry, drill.state.interval
        client, killed_flow_run, killed_id = registry.client, drill.state.killed_flow_run, drill.state.killed_run
        if killed_flow_run is None or killed_id is None:
            raise DrillError(f"drill {drill.scenario!r} killed no training run: its inject step records the one it kills")
        ended = wait_until(lambda: flow_run_ended(killed_flow_run), 60, every=0.2)
        if not drill.require(ended, "Prefect did not record the killed training run as over within 60 s"):
            return
        drill.require(ended.state.is_crashed(), f"the killed training run ended {ended.state.name}, not Crashed")
        drill.detect_s = drill.since(ended.state.timestamp)
        written_at = load_checkpoint_written_at(client, killed_id)
        if drill.require(written_at, f"training run {killed_id} has no readable checkpoint"):
            lost = drill.fault_injected_at.timestamp() - written_at
            drill.facts["work_lost_s"] = round(lost, 3)
            # the interval, plus a write and the mini-batch in flight, with room for a loaded machine
            drill.require(lost <= interval + 2.0, f"its last checkpoint was written {lost:.1f} s before the kill (interval {interval:g} s)")
            position, _ = load_checkpoint_state(client, killed_id)
            drill.facts["resumed_at"] = f"epoch {position.epoch}, batch {position.batch_index}"
        again = drill.state.next_flow_run = start_training(drill)  # the next training, as the schedule would start it
        finished = wait_until(lambda: flow_run_ended(again), drill.limit, every=0.5)
        if not drill.require(finished, f"the next training run did not finish within {drill.limit:g} s"):
            return
        drill.require(
            finished.state.is_completed() and finished.state.name == "Completed",
            f"the next training run ended {finished.state.name}: {finished.state.message}",
        )
        killed = client.get_run(killed_id)
        drill.require(
            (killed.info.status, killed.data.tags.get(TagKey.STOP_KIND)) == ("FAILED", "killed"),
            f"the killed MLflow run is {killed.info.status}, stop kind {killed.data.tags.get(TagKey.STOP_KIND)}",
        )
        resumed = next((run for run in training_runs(registry) if run.data.tags.get(TagKey.RESUMED_FROM) == killed_id), None)
        drill.require(resumed, f"no training run resumed the checkpoint of {killed_id}")
        started = first_event(drill.model, [CrisisEvent.TRAINING_STARTED], drill.fault_injected_at)
        resumed_start = started if started is not None and started.payload.get("resumed_from") == killed_id else None
        if drill.require(resumed_start, "no ml.training.started resumed the killed run"):
            drill.recover_s = drill.since(resumed_start.occurred)
        stopped = first_event(drill.model, [CrisisEvent.TRAINING_STOPPED], drill.fault_injected_at)
        drill.require(stopped and stopped.payload.get("reason") == "killed", "no ml.training.stopped recorded the kill")
        drill.require(registry.champion() is not None, "the resumed training registered no champion")

    def clean_up(self, drill: Drill[KilledTraining]) -> None:
        """Leave no training of the drill running (a failed drill may have left one): processes still running one of its
        flow runs (found again by their environment, never by a pid that may have been reused)."""
        import contextlib

        import psutil

        for flow_run_id in (drill.state.killed_flow_run, drill.state.next_flow_run):
            for process in flow_run_processes(flow_run_id) if flow_run_id else ():
                with contextlib.suppress(psutil.Error):  # it ended meanwhile
                    process.kill()


SCENARIOS = (
    TrainingKilled(
        "training-killed",
        "the training process is killed mid-epoch (SIGKILL: no handler runs): Prefect records it "
        "Crashed, and the next training run closes the orphaned MLflow run and resumes its last periodic checkpoint",
        limit=120,
        end=EndState(
            unmeasured="a killed training: nothing served before it, and what it leaves is the resumed run, judged by completing from its checkpoint",
            incidents=(0, 0),
            why="none by design: the next training run resumes the checkpoint; nothing breaches",
        ),
    ),
)

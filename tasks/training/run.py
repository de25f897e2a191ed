"""A training inside an MLflow run: the stop flag, cancellation, resuming, recording the stop.

The task `train_model` (`prefect_crisis.tasks.training.tasks`) runs `run_training`.

Training stops for:
1. the stop flag, a Prefect Variable `crisis-stop-<model>` (`crisis stop MODEL`),
   read between mini-batches;
2. cancellation of the flow run (UI, CLI, automation): the runner sends SIGTERM,
   Prefect raises `TerminationSignal` in the flow's main thread, the training
   loop writes its checkpoint and lets the signal go on, so the run ends
   Cancelled well inside the runner's 30 s grace period (this needs the task
   called directly in the flow, not `.submit()`ted to a worker thread);
3. guards on training itself (non-finite loss, divergence, stall, time budget),
   read between mini-batches;
4. an interruption (Ctrl-C) or a crash: the loop writes its checkpoint, the
   MLflow run ends KILLED (interrupted) or FAILED (crashed), and the error goes on;
5. the process killed outright (SIGKILL, out of memory): nothing runs, but the
   loop has been writing its checkpoint every `checkpoint_every_seconds` of the
   policy. The next run of the model finds the MLflow run left RUNNING by a flow
   run that is over, records it as stopped (`killed`), and resumes from there.

Every stop but a failure (non-finite loss, divergence) leaves a resumable
checkpoint; the next run resumes it only if data, estimator, parameters and
batch layout match (`prefect_crisis.tasks.training.resume`), and says why when not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import numpy as np
from mlflow.entities import Metric, Param, RunStatus
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import TrainingError
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, RunStatusTag, TagKey
from prefect_crisis.tasks.model_slots import training_limit
from prefect_crisis.tasks.training.checkpoints import (
    CheckpointWriter,
    close_killed_runs,
    latest_checkpoint_run,
    load_checkpoint,
    load_checkpoint_state,
    resuming_run,
    stop_kind_of,
    training_experiment,
)
from prefect_crisis.tasks.training.data import TrainingData, policy_estimator, resume_key
from prefect_crisis.tasks.training.family import choose_family, family_of
from prefect_crisis.tasks.training.loop import Checkpoint, TrainingOutcome, make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training.resume import NOTHING_TO_RESUME, ResumeDecision, ResumeKey, ResumeRefusal, decide_resume
from prefect_crisis.tasks.training.stop_flag import read_stop_flag
from prefect_crisis.tasks.training.stopping import StopCondition, StopKind, StopReason, TrainingProgress, policy_stop_condition

CLAIM_LEASE_SECONDS = 60  # the training slot's lease: what a process killed while claiming holds it for at most


def build_stop_condition(policy: TrainingPolicy, model: str, clock: Callable[[], float] = time.monotonic) -> StopCondition:
    """The stop hook the policy asks for, reading the model's stop flag Variable."""
    return policy_stop_condition(policy, lambda: read_stop_flag(model), clock)


# -- a training in its MLflow run ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingRun:
    run_id: str
    outcome: TrainingOutcome
    resume: ResumeDecision = NOTHING_TO_RESUME

    @property
    def resumed_from(self) -> str | None:
        """The run whose checkpoint this one continued, if any."""
        return self.resume.run_id if self.resume.resume else None


def resume_point(client, model: str, key: ResumeKey, epochs: int) -> tuple[ResumeDecision, Checkpoint | None]:
    """The model's latest checkpoint if a run with `key` may resume it, and the decision."""
    run_id = latest_checkpoint_run(client, model)
    if run_id is None:
        return NOTHING_TO_RESUME, None
    try:
        position, stored_key = load_checkpoint_state(client, run_id)
    except TrainingError as error:
        return ResumeDecision(run_id, ResumeRefusal.NOT_RESUMABLE, f"its state cannot be read ({error.__cause__})"), None
    decision = decide_resume(run_id, stored_key, stop_kind_of(client.get_run(run_id).data.tags), key, position.epoch, epochs)
    if not decision.resume:
        return decision, None
    claimant = resuming_run(client, model, run_id)
    if claimant is not None:
        return ResumeDecision(run_id, ResumeRefusal.RESUMED_ELSEWHERE, f"training run {claimant} is resuming it now"), None
    try:
        return decision, load_checkpoint(client, run_id)
    except TrainingError as error:
        return ResumeDecision(run_id, ResumeRefusal.NOT_RESUMABLE, f"its estimator cannot be loaded ({error.__cause__})"), None


def run_training(
    data: TrainingData,
    policy: TrainingPolicy,
    registry: ModelRegistry,
    resume: bool = True,
    also_stop_when: StopCondition | None = None,
    *,
    logger: logging.Logger | logging.LoggerAdapter,
) -> TrainingRun:
    """Train in stoppable mini-batches inside an MLflow run; checkpoint on any stop (the body of the task `train_model`).

    On a cancellation the loop writes its checkpoint, the run is recorded as
    stopped, and Prefect's TerminationSignal goes on: the flow run ends
    Cancelled (this task run shows as Crashed, which is how Prefect marks a
    task that a termination signal interrupted). An interruption (Ctrl-C) or a
    crash is recorded the same way and goes on. Other stops return normally.

    Args:
        resume: continue from the model's latest checkpoint when it is compatible.
        also_stop_when: a stop condition to check besides the policy's guards.
        logger: where progress and stops are logged (the task's run logger).
    """
    model = registry.model_name
    client = registry.client
    key = resume_key(policy, data)
    # Choosing the checkpoint and claiming it (the new run's `resumed_from` tag) is one step per model: a second
    # training started at the same moment sees the claim and trains from scratch instead of resuming it twice.
    # The section is short (a few store reads and one write); its lease frees the slot if the process dies in it.
    run_id: str | None = None
    resumed_run: str | None = None

    def record(reason: StopReason) -> None:  # a stop before or during training, once the run exists
        if run_id is not None:
            _record_stop(client, run_id, model, reason, None, resumed_run)

    try:
        with concurrency(training_limit(model), occupy=1, strict=True, lease_duration=CLAIM_LEASE_SECONDS):
            decision, resume_from, run = _claim_and_create_run(client, model, key, policy, data, resume, logger)
            run_id, resumed_run = run.info.run_id, decision.run_id if decision.resume else None
        stop = build_stop_condition(policy, model)
        if also_stop_when is not None:
            stop = stop | also_stop_when
        outcome = _train_in_run(client, run_id, data, policy, model, stop, key, resume_from, resumed_run, logger)
    except TerminationSignal:
        # Cancelled (also while the slot was being released): the loop has written its checkpoint if it had
        # started; record why, let Prefect cancel.
        record(StopReason(StopKind.CANCELLED, "the flow run was cancelled"))
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        record(StopReason(StopKind.INTERRUPTED, f"training was interrupted ({type(error).__name__})"))
        raise
    except Exception as error:
        record(StopReason(StopKind.CRASHED, f"{type(error).__name__}: {error}"[:500]))
        raise
    _log_losses(client, run_id, outcome.progress.losses)
    if outcome.stop_reason is None:  # completed
        client.set_tag(run_id, TagKey.STATUS, RunStatusTag.COMPLETED.value)
        if resumed_run:
            client.set_tag(resumed_run, TagKey.RESUMED_BY, run_id)
        return TrainingRun(run_id, outcome, decision)

    _record_stop(client, run_id, model, outcome.stop_reason, outcome, resumed_run)
    logger.warning("training stopped (%s); checkpoint %s", outcome.stop_reason, outcome.checkpoint_uri)
    return TrainingRun(run_id, outcome, decision)


def _claim_and_create_run(client, model: str, key: ResumeKey, policy: TrainingPolicy, data: TrainingData, resume: bool, logger):
    """Close the model's killed runs, choose the checkpoint to resume, and create the run that claims it."""
    for killed in close_killed_runs(client, model, _flow_run_is_over) if resume else ():
        logger.warning("training run %s was killed (its flow run is over and it never closed): recorded as stopped", killed)
        Timeline().emit(
            CrisisEvent.TRAINING_STOPPED,
            model,
            {"reason": StopKind.KILLED.value, "run_id": killed, "found_by": flow_run.get_id(), "detail": "its process ended without closing the run"},
        )
    decision, resume_from = resume_point(client, model, key, policy.epochs) if resume else (NOTHING_TO_RESUME, None)
    if decision.refusal is not None:
        logger.warning("%s", decision)
    elif resume_from is not None:
        logger.info("resuming from run %s at epoch %d, batch %d", decision.run_id, resume_from.position.epoch, resume_from.position.batch_index)
    resumed_run = decision.run_id if decision.resume else None
    run = client.create_run(
        training_experiment(client, model),
        tags={
            TagKey.MODEL: model,
            TagKey.STATUS: RunStatusTag.RUNNING.value,
            TagKey.FINGERPRINT: data.fingerprint,
            TagKey.FLOW_RUN_ID: flow_run.get_id() or "",
            TagKey.RESUMED_FROM: resumed_run or "",
            **({TagKey.RESUME_REFUSED: f"{decision.refusal.value}: {decision.detail}"[:5000]} if decision.refusal else {}),
        },
        run_name=f"train-{model}",
    )
    return decision, resume_from, run


def _train_in_run(
    client, run_id: str, data: TrainingData, policy: TrainingPolicy, model: str, stop: StopCondition, key: ResumeKey, resume_from, resumed_run, logger
) -> TrainingOutcome:
    client.log_batch(run_id, params=[Param(key, str(value)[:500]) for key, value in policy.model_dump(exclude={"block_type_slug"}).items()])
    Timeline().emit(
        CrisisEvent.TRAINING_STARTED, model, {"run_id": run_id, "epochs": policy.epochs, "rows": len(data.X_train), "resumed_from": resumed_run}
    )
    # called from sync code: Prefect's sync-compatible function returns the artifact's id, not a coroutine
    progress_id = cast(UUID, create_progress_artifact(progress=0.0, description=f"Training {model}: epochs done / {policy.epochs}"))

    def on_epoch(progress) -> None:
        update_progress_artifact(progress_id, progress=100.0 * (progress.epoch + 1) / policy.epochs)
        logger.info("epoch %d/%d: loss %.4f (best %.4f)", progress.epoch + 1, policy.epochs, progress.loss, progress.best_loss)

    estimator = _chosen_estimator(client, run_id, policy, data, stop, resume_from, logger)
    if isinstance(estimator, StopReason):  # stopped while the families were compared: nothing trained, nothing to resume
        return TrainingOutcome(None, TrainingProgress(), estimator)
    return train_with_stop_hook(
        estimator,
        data.X_train,
        data.y_train,
        classes=data.classes,
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        stop=stop,
        on_stop=CheckpointWriter(client, run_id, key),
        on_epoch=on_epoch,
        resume_from=resume_from,
        fingerprint=data.fingerprint,
        seed=policy.seed,
        checkpoint_every_seconds=policy.checkpoint_every_seconds,
    )


def _chosen_estimator(client, run_id: str, policy: TrainingPolicy, data: TrainingData, stop: StopCondition, resume_from, logger):
    """The estimator this run trains, its family recorded on the run (`crisis.family`): the policy's; with
    `estimator="auto"` the family chosen on the training part's folds (`crisis.family_choice`, a metric per family);
    resuming, the checkpoint's own. A StopReason when `stop` fired while the families were compared."""
    if resume_from is not None:
        client.set_tag(run_id, TagKey.FAMILY, family_of(resume_from.estimator))
        return resume_from.estimator  # the loop continues it as it is
    if policy.estimator != "auto":
        client.set_tag(run_id, TagKey.FAMILY, policy.estimator)
        return policy_estimator(policy, data)
    choice = choose_family(
        data.X_train,
        data.y_train,
        data.classes,
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        seed=policy.seed,
        scale=policy.scale_features,
        impute=data.imputes,
        stop=stop,
    )
    if isinstance(choice, StopReason):
        return choice
    logger.info("family: %s", choice)
    client.log_batch(run_id, metrics=[Metric(f"cv_accuracy_{family}", choice.mean(family), _now_ms(), 0) for family in choice.fold_scores])
    client.set_tag(run_id, TagKey.FAMILY, choice.family)
    client.set_tag(run_id, TagKey.FAMILY_CHOICE, str(choice)[:5000])
    return make_estimator(choice.family, None, policy.seed, scale=policy.scale_features, impute=data.imputes)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _flow_run_is_over(flow_run_id: str) -> bool:
    """Whether the Prefect flow run that trained a run left RUNNING has ended (so its process is gone).

    This flow run itself (a retry of it) counts as over. A flow run this server does not know
    (another server sharing the tracking store), or a server that cannot say, does not.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client

    if not flow_run_id:
        return False
    if flow_run_id == flow_run.get_id():
        return True
    try:
        with get_client(sync_client=True) as prefect:
            run = prefect.read_flow_run(UUID(flow_run_id))
    except Exception:
        return False
    return run.state is not None and run.state.is_final()


# How the MLflow run of a stopped training ends (the rest end FINISHED).
_RUN_STATUS = {
    StopKind.CANCELLED: RunStatus.KILLED,
    StopKind.INTERRUPTED: RunStatus.KILLED,
    StopKind.CRASHED: RunStatus.FAILED,
    StopKind.NON_FINITE_LOSS: RunStatus.FAILED,
    StopKind.DIVERGED: RunStatus.FAILED,
}


def _record_stop(client, run_id: str, model: str, reason: StopReason, outcome: TrainingOutcome | None, resumed_run: str | None) -> None:
    """Tag and end the MLflow run of a stopped training, and emit ml.training.stopped."""
    client.set_tag(run_id, TagKey.STATUS, RunStatusTag.STOPPED.value)
    client.set_tag(run_id, TagKey.STOP_REASON, str(reason))
    client.set_tag(run_id, TagKey.STOP_KIND, reason.kind.value)
    if resumed_run:
        client.set_tag(resumed_run, TagKey.RESUMED_BY, run_id)
    client.set_terminated(run_id, RunStatus.to_string(_RUN_STATUS.get(reason.kind, RunStatus.FINISHED)))
    checkpointed = client.get_run(run_id).data.tags.get(TagKey.CHECKPOINT) == "true"
    payload: dict[str, Any] = {
        "reason": reason.kind.value,
        "detail": reason.detail,
        "run_id": run_id,
        "checkpoint_uri": f"runs:/{run_id}/checkpoint" if checkpointed else None,
    }
    if outcome is not None:
        payload.update(epoch=outcome.progress.epoch, batch=outcome.progress.batch_index)
    Timeline().emit(CrisisEvent.TRAINING_STOPPED, model, payload)


def _log_losses(client, run_id: str, losses: list[float], most: int = 1_000) -> None:
    step = max(1, len(losses) // most)
    now = _now_ms()
    metrics = [Metric("batch_loss", float(loss), now, index) for index, loss in enumerate(losses) if index % step == 0 and np.isfinite(loss)]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])

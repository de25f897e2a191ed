"""Training as Prefect tasks: the stop flag, cancellation, MLflow runs, registration.

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

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.tasks.training.checkpoints import (
    CheckpointWriter,
    close_killed_runs,
    latest_checkpoint_run,
    load_checkpoint,
    load_checkpoint_state,
    stop_kind_of,
    training_experiment,
)
from prefect_crisis.core.errors import DataInputError, TrainingError
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, RunStatusTag, TagKey
from prefect_crisis.tasks.training.resume import NOTHING_TO_RESUME, ResumeDecision, ResumeKey, ResumeRefusal, decide_resume
from prefect_crisis.tasks.training.stopping import (
    StopCondition,
    StopKind,
    StopReason,
    stop_after_seconds,
    stop_on_divergence,
    stop_on_nonfinite_loss,
    stop_on_stall,
    stop_when_flag_set,
)
from prefect_crisis.tasks.training.stop_flag import read_stop_flag
from prefect_crisis.tasks.training.loop import Checkpoint, TrainingOutcome, make_estimator, preprocessing_name, train_with_stop_hook
from prefect_crisis.tasks.validation.checks import training_input_findings



# -- data -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingData:
    X_train: np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    classes: np.ndarray
    features: list[str]
    fingerprint: str
    label_column: str = "label"
    nullable_features: tuple[str, ...] = ()  # columns whose contract allows missing values: imputed, never refused

    @property
    def imputes(self) -> bool:
        """Whether the estimator fills missing values first (some of its columns may lack them)."""
        return any(name in self.nullable_features for name in self.features)

    def holdout_frame(self) -> pd.DataFrame:
        """The holdout as a frame: its features and the label (what a golden set freezes)."""
        return pd.DataFrame(self.X_holdout, columns=self.features).assign(**{self.label_column: self.y_holdout})


def holdout_rows(rows: int, policy: TrainingPolicy) -> int:
    """How many of a batch's `rows` are held out: `holdout_fraction` of them, grown toward `target_holdout_rows`
    while at least `1 - max_holdout_fraction` of the rows are left to train on.

    Example:
        >>> policy = TrainingPolicy()
        >>> [holdout_rows(rows, policy) for rows in (10, 100, 178, 569, 1_797, 5_000)]
        [5, 50, 89, 200, 360, 1000]
    """
    share = rows - int(rows * (1 - policy.holdout_fraction))
    return max(share, min(policy.target_holdout_rows, int(rows * policy.max_holdout_fraction)))


def smallest_judged_batch(policy: TrainingPolicy) -> int:
    """The fewest rows a batch needs for its holdout to reach `min_holdout_rows`.

    Example:
        >>> smallest_judged_batch(TrainingPolicy()), smallest_judged_batch(TrainingPolicy(min_holdout_rows=200))
        (100, 400)
    """
    rows = policy.min_holdout_rows
    while holdout_rows(rows, policy) < policy.min_holdout_rows:
        rows += 1
    return rows


def stratified_holdout(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """A mask of `rows` held-out rows, seeded, each class in about its share of them.

    Rows are shuffled by `seed`; within its class, each row gets the position (k + 0.5) / n of its turn, and the
    `rows` earliest positions are held out, so every class of two rows or more lands on both sides.

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> held = stratified_holdout(y, 20, seed=0)
        >>> int(held.sum()), int(held[y == 1].sum())
        (20, 2)
    """
    order = np.random.default_rng(seed).permutation(len(y))
    position = np.empty(len(y))
    shuffled = y[order]
    for label in np.unique(shuffled):
        turns = np.flatnonzero(shuffled == label)
        position[turns] = (np.arange(len(turns)) + 0.5) / len(turns)
    held = np.zeros(len(y), dtype=bool)
    held[order[np.argsort(position, kind="stable")[:rows]]] = True
    return held


def split_training_data(
    frame: pd.DataFrame, policy: TrainingPolicy, fingerprint: str, nullable_features: Collection[str] = ()
) -> TrainingData:
    """Features and label as arrays, split into train and holdout (seeded, stratified by label, sized by `holdout_rows`).

    Args:
        nullable_features: columns the data contract allows to be missing; the estimator imputes them. A
            missing value anywhere else is a finding.

    Raises:
        TrainingError: the batch cannot train a sane model (`findings_before_training`), before any training.
    """
    if policy.label_column not in frame.columns:
        raise TrainingError(f"the batch has no label column {policy.label_column!r}: set label_column in the TrainingPolicy")
    features = policy.feature_columns or [
        name for name in frame.select_dtypes(include="number").columns if name != policy.label_column
    ]
    if not features:
        raise TrainingError("no numeric feature columns to train on: set feature_columns in the TrainingPolicy")
    findings = findings_before_training(frame, policy.label_column, features, nullable_features)
    if findings:
        raise TrainingError(f"training refused before it started: {'; '.join(findings)}")
    X = frame[features].to_numpy(dtype=np.float64)
    y = frame[policy.label_column].to_numpy()
    held = stratified_holdout(y, holdout_rows(len(frame), policy), policy.seed)
    return TrainingData(
        X[~held], y[~held], X[held], y[held], np.unique(y), list(features), fingerprint,
        policy.label_column, tuple(name for name in nullable_features if name in features),
    )


def findings_before_training(
    frame: pd.DataFrame, label_column: str, features: list[str], nullable_features: Collection[str] = ()
) -> list[str]:
    """Why the batch cannot train a sane model, one line each; empty when it can. The label's findings are
    validation's (`prefect_crisis.tasks.validation.checks.training_input_findings`: missing labels, one class only, a class
    of fewer than two rows); then missing or infinite feature values in columns whose contract allows none.

    Example:
        >>> frame = pd.DataFrame({"x": [0.1, 0.2, 0.3], "label": [1, 1, 1]})
        >>> findings_before_training(frame, "label", ["x"])
        ["label 'label' is constant: every labelled row is class 1; a classifier needs at least two classes"]
        >>> findings_before_training(frame.assign(label=[0, 1, 1], x=[0.1, None, 0.3]), "label", ["x"])[-1]
        "feature column 'x' has 1 missing or infinite value and its contract allows none: validate the batch first"
    """
    try:
        found = [finding.message for finding in training_input_findings(frame, label_column)]
    except DataInputError as error:
        return [str(error)]
    for name in features:
        if name in nullable_features:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        broken = int((~np.isfinite(values)).sum())
        if broken:
            plural = "s" if broken > 1 else ""
            found.append(f"feature column {name!r} has {broken} missing or infinite value{plural} and its contract allows none: validate the batch first")
    return found


def build_stop_condition(policy: TrainingPolicy, model: str, clock: Callable[[], float] = time.monotonic) -> StopCondition:
    """The stop hook the policy asks for."""
    stop = stop_when_flag_set(lambda: read_stop_flag(model), policy.flag_poll_seconds, clock) | stop_on_nonfinite_loss()
    if policy.divergence_factor:
        stop = stop | stop_on_divergence(policy.divergence_factor)
    if policy.stall_patience_batches:
        stop = stop | stop_on_stall(policy.stall_patience_batches)
    if policy.time_budget_seconds:
        stop = stop | stop_after_seconds(policy.time_budget_seconds)
    return stop


# -- the training task ------------------------------------------------------------


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
    try:
        return decision, load_checkpoint(client, run_id)
    except TrainingError as error:
        return ResumeDecision(run_id, ResumeRefusal.NOT_RESUMABLE, f"its estimator cannot be loaded ({error.__cause__})"), None


def resume_key(policy: TrainingPolicy, data: TrainingData) -> ResumeKey:
    """What a checkpoint must share with training `policy` on `data` to be resumed."""
    return ResumeKey.of(
        policy, data.fingerprint, data.features, holdout_rows=len(data.y_holdout),
        preprocessing=preprocessing_name(policy.scale_features, data.imputes),
    )


def policy_estimator(policy: TrainingPolicy, data: TrainingData):
    """The unfitted estimator `policy` trains on `data`: scaled (and imputed where the contract allows gaps)."""
    return make_estimator(policy.estimator, policy.estimator_params, policy.seed, scale=policy.scale_features, impute=data.imputes)


@task(name="train-with-stop-hook", cache_policy=NO_CACHE)
def train_model(
    data: TrainingData,
    policy: TrainingPolicy,
    registry: ModelRegistry,
    resume: bool = True,
    also_stop_when: StopCondition | None = None,
) -> TrainingRun:
    """Train in stoppable mini-batches inside an MLflow run; checkpoint on any stop.

    On a cancellation the loop writes its checkpoint, the run is recorded as
    stopped, and Prefect's TerminationSignal goes on: the flow run ends
    Cancelled (this task run shows as Crashed, which is how Prefect marks a
    task that a termination signal interrupted). An interruption (Ctrl-C) or a
    crash is recorded the same way and goes on. Other stops return normally.

    Args:
        resume: continue from the model's latest checkpoint when it is compatible.
        also_stop_when: a stop condition to check besides the policy's guards.
    """
    logger = get_run_logger()
    model = registry.model_name
    client = registry.client
    key = resume_key(policy, data)
    for killed in close_killed_runs(client, model, _flow_run_is_over) if resume else ():
        logger.warning("training run %s was killed (its flow run is over and it never closed): recorded as stopped", killed)
        Timeline().emit(CrisisEvent.TRAINING_STOPPED, model, {"reason": StopKind.KILLED.value, "run_id": killed, "found_by": flow_run.get_id(),
                                                             "detail": "its process ended without closing the run"})
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
    run_id = run.info.run_id
    stop = build_stop_condition(policy, model)
    if also_stop_when is not None:
        stop = stop | also_stop_when
    try:
        outcome = _train_in_run(client, run_id, data, policy, model, stop, key, resume_from, resumed_run, logger)
    except TerminationSignal:
        # Cancelled: the loop has written its checkpoint if it had started; record why, let Prefect cancel.
        _record_stop(client, run_id, model, StopReason(StopKind.CANCELLED, "the flow run was cancelled"), None, resumed_run)
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        _record_stop(client, run_id, model, StopReason(StopKind.INTERRUPTED, f"training was interrupted ({type(error).__name__})"), None, resumed_run)
        raise
    except Exception as error:
        _record_stop(client, run_id, model, StopReason(StopKind.CRASHED, f"{type(error).__name__}: {error}"[:500]), None, resumed_run)
        raise
    _log_losses(client, run_id, outcome.progress.losses)
    if outcome.completed:
        client.set_tag(run_id, TagKey.STATUS, RunStatusTag.COMPLETED.value)
        if resumed_run:
            client.set_tag(resumed_run, TagKey.RESUMED_BY, run_id)
        return TrainingRun(run_id, outcome, decision)

    _record_stop(client, run_id, model, outcome.stop_reason, outcome, resumed_run)
    logger.warning("training stopped (%s); checkpoint %s", outcome.stop_reason, outcome.checkpoint_uri)
    return TrainingRun(run_id, outcome, decision)


def _train_in_run(
    client, run_id: str, data: TrainingData, policy: TrainingPolicy, model: str, stop: StopCondition, key: ResumeKey, resume_from, resumed_run, logger
) -> TrainingOutcome:
    client.log_batch(run_id, params=[Param(key, str(value)[:500]) for key, value in policy.model_dump(exclude={"block_type_slug"}).items()])
    Timeline().emit(CrisisEvent.TRAINING_STARTED, model, {"run_id": run_id, "epochs": policy.epochs, "rows": len(data.X_train), "resumed_from": resumed_run})
    progress_id = create_progress_artifact(progress=0.0, description=f"Training {model}: epochs done / {policy.epochs}")

    def on_epoch(progress) -> None:
        update_progress_artifact(progress_id, progress=100.0 * (progress.epoch + 1) / policy.epochs)
        logger.info("epoch %d/%d: loss %.4f (best %.4f)", progress.epoch + 1, policy.epochs, progress.loss, progress.best_loss)

    return train_with_stop_hook(
        policy_estimator(policy, data),
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
    except Exception:  # noqa: BLE001 - not found here, a malformed id, a server that cannot say: not known to be over
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
    payload = {"reason": reason.kind.value, "detail": reason.detail, "run_id": run_id, "checkpoint_uri": f"runs:/{run_id}/checkpoint" if checkpointed else None}
    if outcome is not None:
        payload.update(epoch=outcome.progress.epoch, batch=outcome.progress.batch_index)
    Timeline().emit(CrisisEvent.TRAINING_STOPPED, model, payload)


def _log_losses(client, run_id: str, losses: list[float], most: int = 1_000) -> None:
    step = max(1, len(losses) // most)
    now = int(time.time() * 1000)
    metrics = [Metric("batch_loss", float(loss), now, index) for index, loss in enumerate(losses) if index % step == 0 and np.isfinite(loss)]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start : start + 500])

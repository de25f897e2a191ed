"""Training's Prefect tasks: thin wrappers over `run_training` and `gate_candidate`.

run = train_model(data, policy, registry)                       # stoppable, resumable
result = register_and_gate(run, data, registry, policy)        # champion if the gate holds
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.tasks.training.data import TrainingData
from prefect_crisis.tasks.training.gate import CandidateResult
from prefect_crisis.tasks.training.promotion import gate_candidate
from prefect_crisis.tasks.training.run import TrainingRun, run_training
from prefect_crisis.tasks.training.stopping import StopCondition


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
    return run_training(data, policy, registry, resume, also_stop_when, logger=get_run_logger())


@task(name="register-and-gate", cache_policy=NO_CACHE)
def register_and_gate(training, data, registry, policy: TrainingPolicy, validation: dict | None = None) -> CandidateResult:
    """Evaluate on the holdout and the golden set, register the version as challenger, promote it to champion if
    the policy's gate holds (see `gate_candidate`)."""
    result = gate_candidate(
        registry,
        training.run_id,
        training.outcome.estimator,
        data,
        policy,
        validation=validation,
        flow_run_id=flow_run.get_id() or "",
        batches=training.outcome.progress.batches_seen,
    )
    promoted = "promoted to champion" if result.decision.promote else "kept as challenger"
    get_run_logger().info("v%s: %s (%s)", result.version, promoted, result.decision.reason)
    return result

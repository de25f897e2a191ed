"""The emergency stop of one model, as independent steps.

Raise the stop flag, cancel the model's training runs, pause the schedules of
its training deployments, serve the fallback. Each step is a plain function
(a thin task on top) that does nothing twice: a second stop for the same
incident finds the flag raised, no run to cancel, the deployments paused and
the fallback serving. What the stop paused is kept in a Prefect Variable per
model (`crisis-emergency-<model>`, with the incident id), so resolving resumes
exactly those schedules and never one a person paused by hand.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import (
    DeploymentFilter,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled, Cancelling, State
from prefect.variables import Variable

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.timeline import Incident
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent, ViolationType
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, set_stop_flag

TRAINING_FLOW = "continuous-training"
MODEL_PARAMETER = "model_name"
STOPPED_BY = "emergency-stop"
ACTIVE_STATES = (StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED)
VIOLATION_OF_REASON = {CrisisEvent.DATA_REJECTED: ViolationType.DATA_INTEGRITY, CrisisEvent.RECOVERY_FAILED: ViolationType.QUALITY}


def violation_of(reason: str) -> ViolationType:
    """The incident's violation from the triggering event's name (data rejected: data integrity; otherwise quality)."""
    try:
        return VIOLATION_OF_REASON.get(CrisisEvent(reason), ViolationType.QUALITY)
    except ValueError:
        return ViolationType.QUALITY


def record_name(model: str) -> str:
    """Name of the Variable that remembers the model's emergency stop."""
    return "crisis-emergency-" + re.sub(r"[^a-z0-9_-]+", "-", model.lower()).strip("-")


@dataclass(frozen=True)
class EmergencyRecord:
    """What an emergency stop of a model did and has not undone yet."""

    incident: str
    reason: str
    paused_deployments: list[str] = field(default_factory=list)
    at: str = ""

    @classmethod
    def read(cls, model: str) -> EmergencyRecord | None:
        value = Variable.get(record_name(model), default=None)
        return cls(**value) if isinstance(value, dict) else None

    def write(self, model: str) -> None:
        Variable.set(record_name(model), asdict(self), overwrite=True)

    @staticmethod
    def clear(model: str) -> bool:
        return cast(bool, Variable.unset(record_name(model)))  # sync code: Prefect's sync-compatible unset returns the bool


@dataclass(frozen=True)
class StepResult:
    """One step of the stop: done or failed, and what it did (a line a person reads)."""

    step: str
    ok: bool
    detail: str
    changed: list[str] = field(default_factory=list)


def of_model(parameters: dict[str, Any] | None, model: str) -> bool:
    return (parameters or {}).get(MODEL_PARAMETER) == model


def cancel_training_runs(client: Any, model: str) -> StepResult:
    """Cancel the model's running, pending and scheduled training runs: Cancelling when a process may hold them, Cancelled when scheduled."""
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(ACTIVE_STATES)))),
    )
    cancelled = []
    for run in (run for run in runs if of_model(run.parameters, model)):
        scheduled = run.state is not None and run.state.type == StateType.SCHEDULED
        state: State = Cancelled(message="emergency stop: never started") if scheduled else Cancelling(message=f"emergency stop of {model!r}")
        client.set_flow_run_state(run.id, state, force=True)
        cancelled.append(str(run.id))
    return StepResult("cancel-training", True, f"cancelled {len(cancelled)} training run(s)", cancelled)


def training_deployments(client: Any, model: str) -> list[Any]:
    """Deployments of the continuous-training flow whose parameters name `model`."""
    deployments = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])), deployment_filter=DeploymentFilter())
    return [deployment for deployment in deployments if of_model(deployment.parameters, model)]


def pause_training(client: Any, model: str) -> StepResult:
    """Pause the model's training deployments that are not paused yet (their schedules stop creating runs)."""
    paused = []
    for deployment in training_deployments(client, model):
        if not deployment.paused:
            client.pause_deployment(deployment.id)
            paused.append(str(deployment.id))
    return StepResult("pause-training", True, f"paused {len(paused)} training deployment(s)", paused)


def resume_training(client: Any, deployment_ids: list[str]) -> StepResult:
    """Resume the deployments an emergency stop paused (a deleted one is skipped)."""
    from prefect.exceptions import ObjectNotFound

    resumed = []
    for deployment_id in deployment_ids:
        try:
            client.resume_deployment(UUID(deployment_id))
            resumed.append(deployment_id)
        except ObjectNotFound:
            continue
    return StepResult("resume-training", True, f"resumed {len(resumed)} of {len(deployment_ids)} paused training deployment(s)", resumed)


def serve_fallback(registry: ModelRegistry, reason: str, incident: Incident | str | None) -> StepResult:
    """Point the champion alias at the fallback version (audited, emits ml.fallback.engaged); serving follows @champion."""
    fallback = registry.version_by_alias(registry.fallback_alias)
    if fallback is None:
        return StepResult("serve-fallback", True, f"no @{registry.fallback_alias} version: serving unchanged")
    champion = registry.champion()
    if champion is not None and champion.version == fallback.version:
        return StepResult("serve-fallback", True, f"@{registry.champion_alias} already is the fallback v{fallback.version}")
    registry.move_alias(registry.champion_alias, fallback.version, reason, incident, action=AliasAction.FALLBACK, current=champion)
    before = f"v{champion.version}" if champion else "none"
    return StepResult("serve-fallback", True, f"@{registry.champion_alias} {before} -> fallback v{fallback.version}", [fallback.version])


def raise_flag(model: str, reason: str) -> StepResult:
    set_stop_flag(model, reason, by=STOPPED_BY)
    return StepResult("stop-flag", True, "stop flag raised")


def lower_flag(model: str) -> StepResult:
    return StepResult("stop-flag", True, "stop flag lowered" if clear_stop_flag(model) else "stop flag was not raised")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# Thin tasks: one per step, so each shows (and fails) on its own in the UI.
raise_flag_task = task(name="raise-stop-flag", cache_policy=NO_CACHE)(raise_flag)
lower_flag_task = task(name="lower-stop-flag", cache_policy=NO_CACHE)(lower_flag)
cancel_training_runs_task = task(name="cancel-training-runs", cache_policy=NO_CACHE)(cancel_training_runs)
pause_training_task = task(name="pause-training", cache_policy=NO_CACHE)(pause_training)
resume_training_task = task(name="resume-training", cache_policy=NO_CACHE)(resume_training)
serve_fallback_task = task(name="serve-fallback", cache_policy=NO_CACHE)(serve_fallback)

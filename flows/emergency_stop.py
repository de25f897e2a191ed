"""The emergency-stop flow: stop one model's training and serve its fallback, or undo that.

The ladder's `crisis-emergency` automation runs it on `ml.breach.emergency`,
`ml.recovery.failed` or `ml.data.rejected`; `crisis-resolved` runs it with
`resolve=True` on `ml.recovery.succeeded`. Each step runs even when another
failed; the run ends Failed, with one line naming the failed steps, if any did.
"""

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.states import Completed, Failed, State

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, Severity, is_drill_model
from prefect_crisis.tasks.dashboard import refresh_dashboard
from prefect_crisis.tasks.emergency import (
    EmergencyRecord,
    StepResult,
    cancel_training_runs_task,
    lower_flag_task,
    now_iso,
    pause_training_task,
    raise_flag_task,
    resume_training_task,
    serve_fallback_task,
    violation_of,
)
from prefect_crisis.tasks.incident import new_incident_id, open_incident, tag_response_run


def outcome_of(step: str, state: State) -> StepResult:
    """The step's result, or a failed one carrying the first line of its error."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, StepResult):
        return result
    why = (str(result).strip().splitlines() or [type(result).__name__])[0]
    return StepResult(step, False, f"failed: {why}")


def finish(model: str, name: str, action: str, results: list[StepResult]) -> State:
    """Completed when every step did its part, else Failed with one line naming the failures."""
    failed = [f"{r.step} ({r.detail})" for r in results if not r.ok]
    data = {r.step: {"ok": r.ok, "detail": r.detail, "changed": r.changed} for r in results}
    if failed:
        return Failed(name="Incomplete", message=f"{action} of {model!r} incomplete: {'; '.join(failed)}", data=data)
    return Completed(name=name, message=f"{action} of {model!r}: " + "; ".join(r.detail for r in results), data=data)


@flow(name="emergency-stop", log_prints=True)
def emergency_stop(
    model_name: str,
    incident_id: str | None = None,
    triggering_event_id: str | None = None,
    reason: str = "emergency stop",
    resolve: bool = False,
    registry_block: str | None = None,
) -> State:
    """Stop a model's training and serve its fallback; with `resolve`, undo the stop.

    Args:
        model_name: the model (when no registry block is named).
        incident_id: the incident this stop belongs to (the ladder passes the triggering event's id); a rerun
            with the same id joins the incident and changes nothing already stopped.
        triggering_event_id: the event that set off the stop.
        reason: why (the ladder passes the triggering event's name, e.g. `ml.recovery.failed`).
        resolve: lower the stop flag and resume the training schedules this stop paused; the champion stays
            where recovery put it.
        registry_block: a saved ModelRegistry block; empty: the model's registry in the default MLflow store.
    """
    registry = ModelRegistry.load(registry_block) if registry_block else ModelRegistry(model_name=model_name)
    model = registry.model_name
    logger = get_run_logger()
    record = EmergencyRecord.read(model)
    with get_client(sync_client=True) as client:
        if resolve:
            if record is None:
                return Completed(name="Nothing to resolve", message=f"{model!r} has no emergency stop in force")
            results = [
                outcome_of("stop-flag", lower_flag_task(model, return_state=True)),
                outcome_of("resume-training", resume_training_task(client, record.paused_deployments, return_state=True)),
            ]
            if all(r.ok for r in results):
                EmergencyRecord.clear(model)
            Timeline(record.incident, clock=registry.now).emit(
                CrisisEvent.EMERGENCY_RESOLVED, model,
                {"reason": reason, "triggering_event_id": triggering_event_id, "steps": {r.step: r.detail for r in results}},
            )
            resolved = finish(model, "Resolved", "resolving the emergency stop", results)
            refresh_dashboard(registry, logger)
            return resolved

        identifier = incident_id or new_incident_id()
        if record is not None and record.incident == identifier:  # a rerun joins the incident: no second ml.incident.opened
            incident = Incident(identifier, model, Severity.EMERGENCY, violation_of(reason), registry.now(), triggering_event_id, is_drill_model(model))
            timeline = Timeline(incident, clock=registry.now)
        else:
            incident, timeline = open_incident(
                model, identifier, Severity.EMERGENCY, violation_of(reason), triggering_event_id=triggering_event_id,
                drill=is_drill_model(model), clock=registry.now
            )
        tag_response_run(incident)
        registry.use(timeline=timeline)
        results = [
            outcome_of("stop-flag", raise_flag_task(model, reason, return_state=True)),
            outcome_of("cancel-training", cancel_training_runs_task(client, model, return_state=True)),
            outcome_of("pause-training", pause_training_task(client, model, return_state=True)),
            outcome_of("serve-fallback", serve_fallback_task(registry, reason, incident, return_state=True)),
        ]
    paused = next(r.changed for r in results if r.step == "pause-training")
    earlier = record.paused_deployments if record is not None else []
    EmergencyRecord(identifier, reason, sorted({*earlier, *paused}), now_iso()).write(model)
    timeline.emit(
        CrisisEvent.EMERGENCY_STOPPED, model,
        {"reason": reason, "triggering_event_id": triggering_event_id, "steps": {r.step: {"ok": r.ok, "detail": r.detail, "changed": r.changed} for r in results}},
    )
    state = finish(model, "Stopped", "emergency stop", results)
    logger.info("%s", state.message)
    refresh_dashboard(registry, logger, incident=identifier)
    return state

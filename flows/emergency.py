"""The emergency-stop flow: stop one model's training and repair its serving, or undo the stop.

The ladder's `crisis-emergency` automation runs it on `ml.breach.emergency` or
`ml.recovery.failed` (a rejected batch never reaches it: it blocks training on
that batch only); `crisis-resolved` runs it with `resolve=True` on
`ml.recovery.succeeded`. Serving gets the critical response's decision without
waiting for more samples: roll back to a good version when one exists, the
fallback only when none does or it is measured better. Each step runs even when
another failed; the run ends Failed, with one line naming the failed steps.
"""

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.states import Completed, Failed, State

from prefect_crisis.blocks.registry import ModelRegistry, first_line
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import CrisisError, DataInputError, PolicyError
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent, DecisionKind, Severity, is_drill_model
from prefect_crisis.tasks.loading import BoundPolicy, bind_policy, saved_block
from prefect_crisis.tasks.monitoring.dashboard import refresh_dashboard
from prefect_crisis.tasks.response.emergency import (
    EmergencyRecord,
    StepResult,
    cancel_training_runs_task,
    lower_flag_task,
    now_iso,
    pause_training_task,
    raise_flag_task,
    resume_training_task,
    violation_of,
)
from prefect_crisis.tasks.response.episodes import Retry
from prefect_crisis.tasks.response.incident import (
    close_episode,
    decide_rollback_task,
    execute_recovery_task,
    join_or_open_incident,
    live_window,
    measure_versions,
    model_features,
    new_incident_id,
    predict_with,
    response_slot,
    scorable_rows,
    tag_response_run,
)
from prefect_crisis.tasks.response.recovery import RecoveryOutcome
from prefect_crisis.tasks.response.rollback import LiveWindow
from prefect_crisis.tasks.run_logs import quiet_expected_errors
from prefect_crisis.tasks.serving.inference_log import latencies_of, read_labelled_window
from prefect_crisis.tasks.validation.batches import load_frame


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


def repair_serving(
    registry: ModelRegistry,
    policy: RollbackPolicy,
    incident: Incident,
    timeline: Timeline,
    inference_log_block: str | None,
    window_minutes: float,
    label_column: str,
    first_response: bool,
    window_path: str | None = None,
) -> StepResult:
    """Serving in an emergency: the critical response's decision without waiting for more samples: roll back to a good
    version if there is one, the fallback only when there is none or it is measured better, and never to something
    measured worse than what serves. Without labelled rows nothing can be measured: a stable version, else the fallback."""
    logger = timeline.logger(get_run_logger(), registry.model_name)
    audit = registry.settled_snapshot()  # one read, the rows a lost store left pending settled first
    champion = registry.champion()
    if champion is None:
        return StepResult("serve", True, "no champion: serving unchanged")
    try:
        window = (
            load_frame(window_path)
            if window_path
            else read_labelled_window(
                inference_log_block,
                registry.model_name,
                window_minutes,
                label_column,
                now=registry.now(),
                latency_version=champion.version,
            )
        )
    except DataInputError as error:
        logger.warning("no labelled window to measure on (%s): deciding from the serving history alone", first_line(str(error)))
        window = None
    if window is not None:
        window = scorable_rows(window, label_column, model_features(registry))
    if window is not None and not window.empty:
        y_pred, _ = predict_with(registry, champion.version, window, champion)
        live = live_window(window[label_column].to_numpy(), y_pred, latencies_of(window))
        measured, unscorable = measure_versions(registry, audit, window, label_column, timeline)
    else:
        moves = [move for move in audit.of_alias(registry.champion_alias) if move.incident == incident.id and move.applied]
        if moves and moves[-1].to_version == champion.version and not champion.is_fallback:
            return StepResult(
                "serve", True, f"v{champion.version} keeps serving: this incident's {moves[-1].action} put it there (nothing measured since)"
            )
        live, measured, unscorable = LiveWindow({}, {}), {}, frozenset()
    decision = decide_rollback_task(registry, policy, live, incident, audit, timeline, measured, unscorable)
    if decision.kind in (DecisionKind.HOLD, DecisionKind.INCONCLUSIVE):
        return StepResult("serve", True, f"v{champion.version} keeps serving: {decision.reason}")
    if window is None or window.empty:  # nothing to verify on: the decision's move, unverified
        outcome = move_unverified(registry, decision, incident, champion)
    else:
        outcome = execute_recovery_task(
            registry,
            policy,
            decision,
            incident,
            window,
            label_column,
            champion,
            audit,
            timeline,
            live,
            skip_if_handled=first_response,
            emergency_step=True,
        )
    moved = (
        f"v{outcome.champion_before} -> v{outcome.champion_after}"
        if outcome.champion_after != outcome.champion_before
        else f"v{outcome.champion_after} unchanged"
    )
    return StepResult("serve", outcome.recovered, f"{decision.kind.value}: {moved} ({decision.reason})", [outcome.champion_after or ""])


def champion_is_fallback(registry: ModelRegistry) -> bool:
    """The fallback model serves now (False when the store cannot say: a stopgap episode is then joined by time only)."""
    try:
        champion = registry.champion()
    except CrisisError:
        return False
    return champion is not None and champion.is_fallback


def move_unverified(registry: ModelRegistry, decision, incident: Incident, champion) -> RecoveryOutcome:
    """The decision's move when no labelled row exists to verify it on (an emergency from serving errors or latency)."""
    target = decision.target_version if decision.kind is DecisionKind.ROLLBACK else decision.fallback_version
    if target is None:
        return RecoveryOutcome(incident.id, False, False, champion.version, champion.version)
    action = AliasAction.ROLLBACK if decision.kind is DecisionKind.ROLLBACK else AliasAction.FALLBACK
    move = registry.move_alias(
        registry.champion_alias,
        target,
        f"{action.value}: {decision.reason} (no labelled rows to verify on)",
        incident,
        action=action,
        current=champion,
    )
    return RecoveryOutcome(incident.id, True, False, champion.version, move.to_version)


@flow(name="emergency-stop", log_prints=True)
def emergency_stop(
    model_name: str,
    incident_id: str | None = None,
    triggering_event_id: str | None = None,
    reason: str = "emergency stop",
    resolve: bool = False,
    registry_block: str | None = None,
    rollback_policy_block: str | None = None,
    inference_log_block: str | None = None,
    window_minutes: float = 60,
    label_column: str = "label",
    window_path: str | None = None,
    retry_of: str | None = None,
    attempt: int = 1,
) -> State:
    """Stop a model's training and repair its serving; with `resolve`, undo the stop.

    Serving gets the critical response's decision without waiting for more samples (DESIGN.md, the emergency rung):
    a rollback to a good version when one exists, the fallback only when none does or it is measured better.

    Args:
        model_name: the model (when no registry block is named).
        incident_id: the incident this stop belongs to (the ladder passes the triggering event's id); while the model's
            episode is open, the stop joins that incident instead (one incident per episode).
        triggering_event_id: the event that set off the stop; a second delivery of it changes nothing.
        reason: why (the ladder passes the triggering event's name, e.g. `ml.recovery.failed`).
        resolve: lower the stop flag and resume the training schedules this stop paused; the champion stays
            where recovery put it.
        registry_block: a saved ModelRegistry block; empty: the model's registry in the default MLflow store.
        rollback_policy_block: the RollbackPolicy block for models without their own (`bind_policy`: a model's own binds first).
        inference_log_block: the InferenceLog the labelled window is read from; empty: the default log.
        window_minutes: how far back that window goes.
        label_column: the label's column in that window.
        window_path: parquet/CSV of recent labelled rows to measure on instead of the inference log's window.
        retry_of: the flow run this one repeats (the ladder's crisis-retry-emergency runs it when a stop crashed with its
            worker): it joins that run's incident and acts on what serves now.
        attempt: which run of the stop this is; past `RESPONSE_ATTEMPTS` it ends Failed without trying again (the
            emergency was paged when it began).
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    registry = saved_block(ModelRegistry, registry_block) if registry_block else ModelRegistry(model_name=model_name)
    model = registry.model_name
    logger = get_run_logger()
    retry = Retry.of_parameters(retry_of, attempt)
    if retry is not None and retry.exhausted:
        why = f"{'resolving the ' if resolve else ''}emergency stop of {model!r} crashed with its worker {retry.attempt - 1} times (last run {retry.of})"
        logger.error("%s: not trying again", why)
        return Failed(name="Gave up", message=f"{why}: not trying again")
    with get_client(sync_client=True) as client:
        if resolve:
            with response_slot(model):  # never beside a stop that writes the record
                record = EmergencyRecord.read(model)
                if record is None:
                    return Completed(name="Nothing to resolve", message=f"{model!r} has no emergency stop in force")
                results = [
                    outcome_of("stop-flag", lower_flag_task(model, return_state=True)),
                    outcome_of("resume-training", resume_training_task(client, record.paused_deployments, return_state=True)),
                ]
                if all(r.ok for r in results):
                    EmergencyRecord.clear(model)
            Timeline(record.incident, clock=registry.now).emit(
                CrisisEvent.EMERGENCY_RESOLVED,
                model,
                {"reason": reason, "triggering_event_id": triggering_event_id, "steps": {r.step: r.detail for r in results}},
            )
            resolved = finish(model, "Resolved", "resolving the emergency stop", results)
            refresh_dashboard(registry, logger)
            return resolved

        try:
            bound = bind_policy(RollbackPolicy, model, rollback_policy_block)
        except PolicyError as error:  # the emergency acts all the same: on the defaults, and says why loudly
            logger.error("%s: acting on the default rollback policy", error)
            bound = BoundPolicy(RollbackPolicy(), f"defaults ({first_line(str(error))})")
        identifier = incident_id or new_incident_id()
        with response_slot(model):
            record = EmergencyRecord.read(model)
            joined = join_or_open_incident(
                model,
                triggering_event_id,
                Severity.EMERGENCY,
                violation_of(reason),
                quiet_minutes=bound.policy.cooldown_minutes,
                drill=is_drill_model(model),
                clock=registry.now,
                incident_id=identifier,
                fallback_serves=champion_is_fallback(registry),
                retry=retry,
            )
            if joined is None:
                return Completed(name="Already handled", message=f"event {triggering_event_id} was answered before; nothing changed")
            incident, timeline, episode = joined
            tag_response_run(incident, retry)
            registry.use(timeline=timeline)
            logger.info("emergency of %r (%s); rollback policy: %s", model, reason, bound.source)
            results = [
                outcome_of("stop-flag", raise_flag_task(model, reason, return_state=True)),
                outcome_of("cancel-training", cancel_training_runs_task(client, model, return_state=True)),
                outcome_of("pause-training", pause_training_task(client, model, return_state=True)),
            ]
            paused = next(r.changed for r in results if r.step == "pause-training")
            earlier = record.paused_deployments if record is not None else []
            EmergencyRecord(incident.id, reason, sorted({*earlier, *paused}), now_iso()).write(model)
            with tags(incident.run_tag):
                serve = repair_serving_task(
                    registry,
                    bound.policy,
                    incident,
                    timeline,
                    inference_log_block,
                    window_minutes,
                    label_column,
                    incident.id == identifier and retry is None,
                    window_path,
                    return_state=True,
                )
            results.append(outcome_of("serve", serve))
            close_episode(registry, episode)
    timeline.emit(
        CrisisEvent.EMERGENCY_STOPPED,
        model,
        {
            "reason": reason,
            "triggering_event_id": triggering_event_id,
            "steps": {r.step: {"ok": r.ok, "detail": r.detail, "changed": r.changed} for r in results},
        },
    )
    state = finish(model, "Stopped", "emergency stop", results)
    logger.info("%s", state.message)
    refresh_dashboard(registry, logger, incident=incident.id)
    return state


repair_serving_task = task(name="repair-serving", cache_policy=NO_CACHE)(repair_serving)

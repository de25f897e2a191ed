"""The crisis_response flow: diagnose -> decide rollback -> execute recovery ->
verify, for one model and one incident.

Parameters are what a triggering event carries (model, incident id,
severity), so an automation can run it as `{{ event.resource['ml.model.name'] }}`
and `{{ event.id | string }}`. Two responses for the same model run one after
the other, never interleaved: a Prefect global concurrency limit of 1 keyed by
the model (`crisis-response-<model>`).
"""

from prefect import flow, get_run_logger, tags
from prefect.states import Completed, Failed, State

from prefect_crisis.blocks.registry import ModelRegistry, first_line
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import DataInputError, InputErrorReason, PolicyError, RegistryError
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, DecisionKind, Severity, ViolationType, is_drill_model
from prefect_crisis.tasks.loading import bind_policy, saved_block
from prefect_crisis.tasks.monitoring.dashboard import refresh_dashboard
from prefect_crisis.tasks.response.episodes import Retry
from prefect_crisis.tasks.response.incident import (
    close_episode,
    decide_rollback_task,
    diagnose_model,
    execute_recovery_task,
    join_or_open_incident,
    live_window,
    measure_versions,
    model_features,
    new_incident_id,
    read_serving_history,
    response_slot,
    scorable_rows,
    tag_response_run,
)
from prefect_crisis.tasks.run_logs import quiet_expected_errors
from prefect_crisis.tasks.serving.inference_log import latencies_of, read_labelled_window
from prefect_crisis.tasks.stack_info import stack_summary
from prefect_crisis.tasks.validation.batches import load_frame


@flow(name="crisis-response", log_prints=True)
def crisis_response(
    model_name: str,
    window_path: str | None = None,
    incident_id: str | None = None,
    severity: Severity = Severity.CRITICAL,
    violation: ViolationType = ViolationType.QUALITY,
    label_column: str = "label",
    reference_path: str | None = None,
    rollback_policy_block: str | None = None,
    registry_block: str | None = None,
    triggering_event_id: str | None = None,
    drill: bool = False,
    inference_log_block: str | None = None,
    window_minutes: float = 60,
    diagnose_only: bool = False,
    retry_of: str | None = None,
    attempt: int = 1,
) -> State:
    """Respond to one incident of one model.

    Args:
        model_name: the model (when no registry block is named).
        window_path: parquet/CSV of recent labelled rows (features, label, optional timestamp); when empty,
            the labelled predictions of the last `window_minutes` are read from the inference log.
        incident_id: ties the response's audit entries and events together; a rerun with the same id changes nothing.
            A response while the model's episode is still open (`tasks.episodes`) joins that incident instead.
        severity: warning, critical or emergency (emergency ignores the rollback cool-down).
        violation: quality, latency, errors or data-integrity: picks the recovery strategies.
        rollback_policy_block: the RollbackPolicy block for models without their own: a model's own binds first
            (`bind_policy`: named in its EscalationPolicy, else saved under its name), the defaults last; the log says which.
        triggering_event_id: the event that opened the incident, when an automation runs the response.
        drill: the incident is a recovery drill (flows/drill.py), not a real crisis; a drill model's (`drill-*`) always is.
        inference_log_block: the InferenceLog block the window is read from when no window_path is
            given; empty: the default log (`$CRISIS_HOME/inference.db`).
        window_minutes: how far back that window goes.
        diagnose_only: stop after the diagnosis (a Completed state named "Diagnosed"): the warning step of the ladder.
        retry_of: the flow run this one repeats (the ladder's crisis-retry-response runs it when a response crashed with
            its worker): it joins that run's incident and acts on what serves now, even where the crashed run moved an alias.
        attempt: which run of the response this is; past `RESPONSE_ATTEMPTS` it gives the incident to the emergency step
            (ml.recovery.failed) instead of trying again.
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    registry = saved_block(ModelRegistry, registry_block) if registry_block else ModelRegistry(model_name=model_name)
    try:
        bound = bind_policy(RollbackPolicy, registry.model_name, rollback_policy_block)
    except PolicyError as error:  # a named block that is not saved: no response with guessed rules, but never a silent one
        if not diagnose_only:
            Timeline(clock=registry.now).emit(CrisisEvent.RECOVERY_FAILED, registry.model_name, {"reason": str(error), "attempts": []})
        raise
    policy = bound.policy
    identifier = incident_id or new_incident_id()
    retry = Retry.of_parameters(retry_of, attempt)
    timeline = None
    plotted_for = identifier  # the incident whose MLflow run gets the health plot: the one this response joined, once known
    try:
        with response_slot(registry.model_name):
            # read once, the rows a lost store left pending settled first; every step of the incident uses this snapshot
            audit = registry.settled_snapshot()
            if retry is None and audit.handled(identifier) and (triggering_event_id is None or triggering_event_id == identifier):
                return Completed(name="Already handled", message=f"incident {identifier} was handled before; nothing changed")
            champion = registry.champion()
            if champion is None:
                raise RegistryError(
                    f"{registry.model_name!r} has no champion in {registry.display_tracking_uri}: nothing to respond for "
                    "(train and promote a version first, or point CRISIS_HOME / MLFLOW_TRACKING_URI at the store that has it)"
                )
            joined = join_or_open_incident(
                registry.model_name,
                triggering_event_id,
                severity,
                violation,
                quiet_minutes=policy.cooldown_minutes,
                drill=drill or is_drill_model(registry.model_name),
                clock=registry.now,
                incident_id=identifier,
                fallback_serves=champion.is_fallback,
                retry=retry,
            )
            if joined is None:
                return Completed(name="Already handled", message=f"event {triggering_event_id} was answered before; nothing changed")
            incident, timeline, episode = joined
            plotted_for = incident.id
            tag_response_run(incident, retry)
            if retry is not None and retry.exhausted and not diagnose_only:  # the emergency step (a person, paged) takes it
                why = f"the response crashed with its worker {retry.attempt - 1} times (last run {retry.of}): not trying again"
                timeline.emit(CrisisEvent.RECOVERY_FAILED, registry.model_name, {"reason": why, "attempts": []}, version=champion.version)
                return Failed(name="Not recovered", message=f"incident {incident.id}: {why}")
            logger = timeline.logger(get_run_logger(), registry.model_name, champion.version)
            logger.info(
                "using %s; labelled window %s; rollback policy: %s",
                stack_summary(registry.display_tracking_uri),
                window_path or "from the inference log",
                bound.source,
            )
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
                history = read_serving_history(registry, audit)  # the versions, read once: measure, decide and verify share it
                window = scorable_rows(window, label_column, model_features(registry, history))
                if window.empty:
                    raise DataInputError(
                        InputErrorReason.EMPTY_FRAME, "no labelled row with valid features in the window: nothing to score the model on"
                    )
            except DataInputError as error:
                if diagnose_only:
                    return Completed(name="Nothing to diagnose", message=f"incident {incident.id}: {first_line(str(error))}")
                if champion.is_fallback:  # the stopgap serves and no labels yet: nothing to look for a good version with
                    close_episode(registry, episode)
                    return Completed(
                        name="Waiting for labels",
                        message=f"incident {incident.id}: the fallback v{champion.version} serves; {first_line(str(error))}",
                    )
                raise
            reference = load_frame(reference_path) if reference_path else None
            with tags(incident.run_tag):
                report, y_pred = diagnose_model(registry, champion, window, label_column, reference, incident, audit, timeline)
                if diagnose_only:
                    return Completed(
                        name="Diagnosed",
                        message=f"incident {incident.id}: diagnosed only (error rate {report.shown_error_rate})",
                        data=report.to_dict(),
                    )
                live = live_window(window[label_column].to_numpy(), y_pred, latencies_of(window))
                measured, unscorable = measure_versions(registry, audit, window, label_column, timeline, history)
                decision = decide_rollback_task(registry, policy, live, incident, audit, timeline, measured, unscorable, history)
                if decision.kind in (DecisionKind.HOLD, DecisionKind.INCONCLUSIVE):
                    close_episode(registry, episode)
                    if decision.escalate and severity is not Severity.EMERGENCY:
                        # degraded and nothing measured better: the ladder's emergency step (a person) takes it from here
                        timeline.emit(
                            CrisisEvent.RECOVERY_FAILED, registry.model_name, {"reason": decision.reason, "attempts": []}, version=champion.version
                        )
                        return Failed(name="Not recovered", message=f"incident {incident.id}: {decision.reason}", data=decision.to_dict())
                    return Completed(name=decision.kind.value.capitalize(), message=decision.reason, data=decision.to_dict())
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
                    skip_if_handled=incident.id == identifier and retry is None,
                    history=history,
                )
                close_episode(registry, episode)
        summary = f"incident {incident.id}: {decision.kind.value}; champion v{outcome.champion_before} -> v{outcome.champion_after}"
        logger.info(summary)
        if not outcome.recovered:
            return Failed(name="Not recovered", message=summary + "; every move failed verification (ml.recovery.failed emitted)")
        return Completed(
            name="Recovered",
            message=summary,
            data={"decision": decision.to_dict(), "recovery": outcome.to_dict(), "recommendations": [r.action.value for r in report.recommendations]},
        )
    except Exception as error:
        if timeline is not None and not diagnose_only:  # the incident is open and nothing will end it: escalate (the ladder's emergency step)
            why = f"the response failed: {type(error).__name__}: {first_line(str(error))}"
            timeline.emit(CrisisEvent.RECOVERY_FAILED, registry.model_name, {"reason": why, "attempts": [{"detail": why}]})
        raise
    finally:
        # the crisis-dashboard artifact follows every response; the health plot goes to the incident's MLflow run
        refresh_dashboard(registry, get_run_logger(), incident=plotted_for)

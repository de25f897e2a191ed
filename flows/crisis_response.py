"""The crisis_response flow: diagnose -> decide rollback -> execute recovery ->
verify, for one model and one incident.

Parameters are what a triggering event carries (model, incident id,
severity), so an automation can run it as `{{ event.resource['ml.model.name'] }}`
and `{{ event.id | string }}`. Two responses for the same model run one after
the other, never interleaved: a Prefect global concurrency limit of 1 keyed by
the model (`crisis-response-<model>`).
"""

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, State

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.tasks.batches import load_frame
from prefect_crisis.tasks.errors import RegistryError
from prefect_crisis.tasks.paths import default_storage
from prefect_crisis.tasks.quarantine import storage_uri
from prefect_crisis.tasks.stack_info import stack_summary
from prefect_crisis.tasks.incident import decide_rollback_task, diagnose_model, execute_recovery_task, live_window, new_incident_id
from prefect_crisis.tasks.recovery import ViolationType, already_handled
from prefect_crisis.tasks.rollback import DecisionKind, Severity


def default_window_path(model: str) -> str:
    """Where the labelled window of `model` is kept unless told otherwise (the demo writes it there)."""
    return storage_uri(default_storage(), model, "labelled-window.parquet")


def response_limit(model: str) -> str:
    """Name of the model's concurrency limit, created (limit 1) if missing."""
    name = f"crisis-response-{model}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


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
) -> State:
    """Respond to one incident of one model.

    Args:
        model_name: the model (when no registry block is named).
        window_path: parquet/CSV of recent labelled rows (features, label, optional timestamp);
            default `<storage>/<model>/labelled-window.parquet` under the state folder (`$CRISIS_HOME/data`).
        incident_id: ties the response's audit entries and events together; a rerun with the same id changes nothing.
        severity: warning, critical or emergency (emergency ignores the rollback cool-down).
        violation: quality, latency, errors or data-integrity: picks the recovery strategies.
    """
    logger = get_run_logger()
    incident = incident_id or new_incident_id()
    registry = ModelRegistry.load(registry_block) if registry_block else ModelRegistry(model_name=model_name)
    policy = RollbackPolicy.load(rollback_policy_block) if rollback_policy_block else RollbackPolicy()
    window_path = window_path or default_window_path(registry.model_name)
    logger.info("using %s; labelled window %s", stack_summary(registry.display_tracking_uri), window_path)
    with concurrency(response_limit(registry.model_name), occupy=1, strict=True):
        if already_handled(registry, incident):
            return Completed(name="Already handled", message=f"incident {incident} was handled before; nothing changed")
        champion = registry.champion()
        if champion is None:
            raise RegistryError(
                f"{registry.model_name!r} has no champion in {registry.display_tracking_uri}: nothing to respond for "
                "(train and promote a version first, or point CRISIS_HOME / MLFLOW_TRACKING_URI at the store that has it)"
            )
        window = load_frame(window_path)
        reference = load_frame(reference_path) if reference_path else None
        report, y_pred = diagnose_model(registry, champion.version, window, label_column, reference, incident)
        live = live_window(window[label_column].to_numpy(), y_pred)
        decision = decide_rollback_task(registry, policy, live, severity)
        if decision.kind in (DecisionKind.HOLD, DecisionKind.INCONCLUSIVE):
            return Completed(name=decision.kind.value.capitalize(), message=decision.reason, data=decision.to_dict())
        outcome = execute_recovery_task(registry, policy, decision, violation, incident, window, label_column, dict(champion.metrics))
    summary = f"incident {incident}: {decision.kind.value}; champion v{outcome.champion_before} -> v{outcome.champion_after}"
    logger.info(summary)
    if not outcome.recovered:
        return Failed(name="Not recovered", message=summary + "; every strategy failed verification (ml.recovery.failed emitted)")
    return Completed(name="Recovered", message=summary, data={"decision": decision.to_dict(), "recovery": outcome.to_dict(), "recommendations": [r.action.value for r in report.recommendations]})

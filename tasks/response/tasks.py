"""The crisis response's Prefect tasks over the domain: diagnose (and publish the diagnosis), decide, recover. Each
step emits through the incident's timeline and logs with the incident id, model and version."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import AuditSnapshot, ModelRegistry, VersionInfo
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.paths import artifact_key, ensure_experiment, mlflow_run_link, mlflow_ui_url
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import INCIDENT_EXPERIMENT, CrisisEvent, Severity, TagKey
from prefect_crisis.tasks.response.candidates import ServingHistory
from prefect_crisis.tasks.response.diagnosis_view import plot_diagnosis, render_diagnosis
from prefect_crisis.tasks.response.diagnostics import DiagnosticReport, OperationalContext, diagnose
from prefect_crisis.tasks.response.emergency import EmergencyRecord
from prefect_crisis.tasks.response.reading import STORE_RETRY_DELAYS, serving_history_of, store_unavailable
from prefect_crisis.tasks.response.recovery import RecoveryOutcome, Verification, execute_recovery
from prefect_crisis.tasks.response.rollback import RollbackDecision, decide_rollback
from prefect_crisis.tasks.response.rules import EMERGENCY_MIN_SAMPLES, LiveWindow, accuracy_of
from prefect_crisis.tasks.response.scoring import predict_with, verifier
from prefect_crisis.tasks.serving.inference_log import LATENCY_COLUMN
from prefect_crisis.tasks.training.stop_flag import set_stop_flag

__all__ = ["TOP_FINDINGS", "decide_rollback_task", "diagnose_model", "execute_recovery_task"]

TOP_FINDINGS = 3


@task(
    name="diagnose-model",
    cache_policy=NO_CACHE,
    retries=len(STORE_RETRY_DELAYS),
    retry_delay_seconds=STORE_RETRY_DELAYS,
    retry_condition_fn=store_unavailable,
)
def diagnose_model(
    registry: ModelRegistry,
    champion: VersionInfo,
    window: pd.DataFrame,
    label: str,
    reference: pd.DataFrame | None,
    incident: Incident,
    audit: AuditSnapshot,
    timeline: Timeline,
) -> tuple[DiagnosticReport, np.ndarray]:
    """Score the window with the champion, diagnose, publish markdown + plot (MLflow run `crisis-incidents`), emit `ml.diagnosis.done`."""
    version = champion.version
    logger = timeline.logger(get_run_logger(), registry.model_name, version)
    y_pred, proba = predict_with(registry, version, window, champion)
    features = window.drop(columns=[c for c in (label, "timestamp", LATENCY_COLUMN) if c in window.columns])
    baseline_accuracy = champion.metrics.get("accuracy")
    context = OperationalContext(
        new_version_since=registry.champion_since(audit),
        baseline_error_rate=None if baseline_accuracy is None else 1 - baseline_accuracy,
    )
    report = diagnose(window[label].to_numpy(), y_pred, proba, features, window.get("timestamp"), reference, context=context)
    client = registry.client
    run = client.create_run(
        ensure_experiment(client, INCIDENT_EXPERIMENT),
        tags={TagKey.MODEL: registry.model_name, TagKey.INCIDENT: incident.id, TagKey.VERSION: version},
        run_name=f"diagnose-{registry.model_name}-{incident.id}",
    )
    with tempfile.TemporaryDirectory() as folder:
        plot = Path(folder) / "diagnosis.png"
        plot_diagnosis(report, plot)
        client.log_artifact(run.info.run_id, str(plot))
        plot_png = plot.read_bytes()
    client.log_dict(run.info.run_id, report.to_dict(), "diagnosis.json")
    client.set_terminated(run.info.run_id)
    run_link = mlflow_run_link(mlflow_ui_url(), run.info.experiment_id, run.info.run_id)
    create_markdown_artifact(
        key=artifact_key("diagnosis", registry.model_name), markdown=render_diagnosis(report, registry.model_name, version, run_link, plot_png)
    )
    findings = [f"{r.action.value}: {r.reason}" for r in report.recommendations[:TOP_FINDINGS]]
    timeline.emit(
        CrisisEvent.DIAGNOSIS_DONE,
        registry.model_name,
        {
            "rows": report.rows,
            "error_rate": report.error_rate,
            "top_findings": findings,
            "drifted_features": list(report.drifted_features),
            "slices": [f"{s.feature}={s.slice}" for s in report.slices[:TOP_FINDINGS]],
            "mlflow_run_id": run.info.run_id,
        },
        version=version,
    )
    logger.info("diagnosis: error rate %s; %s", report.shown_error_rate, "; ".join(findings) or "no recommendation")
    return report, y_pred


@task(
    name="decide-rollback",
    cache_policy=NO_CACHE,
    retries=len(STORE_RETRY_DELAYS),
    retry_delay_seconds=STORE_RETRY_DELAYS,
    retry_condition_fn=store_unavailable,
)
def decide_rollback_task(
    registry: ModelRegistry,
    policy: RollbackPolicy,
    live: LiveWindow,
    incident: Incident,
    audit: AuditSnapshot,
    timeline: Timeline,
    measured: dict[str, LiveWindow] | None = None,
    unscorable: frozenset[str] = frozenset(),
    history: ServingHistory | None = None,
) -> RollbackDecision:
    """Decide HOLD / ROLLBACK / FALLBACK / INCONCLUSIVE from the incident's audit snapshot (and `history`, the response's one
    read of the registry, read here when not given); emit `ml.decision.taken`."""
    history = history if history is not None else serving_history_of(registry, audit)
    champion, candidates, last_rollback_at = history.champion, history.candidates, history.last_rollback_at
    if champion is None:
        raise RegistryError(f"{registry.model_name!r} has no champion to judge: promote a version first")
    decision = decide_rollback(
        live,
        champion,
        candidates,
        policy,
        now=registry.now(),
        last_rollback_at=last_rollback_at,
        severity=incident.severity,
        measured=measured,
        unscorable=unscorable,
    )
    timeline.emit(
        CrisisEvent.DECISION_TAKEN,
        registry.model_name,
        {
            "decision": decision.kind.value,
            "target_version": decision.target_version,
            "violations": [str(v) for v in decision.violations],
            "reason": decision.reason,
            "degraded": decision.degraded,
            "measured_accuracy": dict(decision.measured),
        },
        version=champion.version,
    )
    timeline.logger(get_run_logger(), registry.model_name, champion.version).info("decision: %s (%s)", decision.kind.value, decision.reason)
    return decision


@task(name="execute-recovery", cache_policy=NO_CACHE)
def execute_recovery_task(
    registry: ModelRegistry,
    policy: RollbackPolicy,
    decision: RollbackDecision,
    incident: Incident,
    window: pd.DataFrame,
    label: str,
    champion: VersionInfo,
    audit: AuditSnapshot,
    timeline: Timeline,
    live: LiveWindow | None = None,
    skip_if_handled: bool = True,
    emergency_step: bool = False,
    history: ServingHistory | None = None,
) -> RecoveryOutcome:
    """Carry out the decision, verifying each move on the labelled window; keep the better state when none verifies.

    `emergency_step`: the emergency step's own repair: its failure does not escalate again (it is the ladder's top), and
    its success does not resolve the emergency it is part of (training stays stopped until a later recovery or a person)."""
    served = accuracy_of(live)
    before = None if served is None else Verification(False, f"v{champion.version} serving", {"accuracy": served})
    registry.use(timeline=timeline)
    outcome = execute_recovery(
        registry,
        decision,
        incident.violation,
        incident,
        verifier(registry, policy, audit, window, label, before, EMERGENCY_MIN_SAMPLES if incident.severity is Severity.EMERGENCY else None, history),
        lambda reason: set_stop_flag(registry.model_name, reason, by="crisis-response"),
        audit=audit,
        champion=champion,
        timeline=timeline,
        emergency_in_force=(lambda model: False) if emergency_step else (lambda model: EmergencyRecord.read(model) is not None),
        before=before,
        skip_if_handled=skip_if_handled,
        escalate=not emergency_step,
    )
    timeline.logger(get_run_logger(), registry.model_name, outcome.champion_after).info(
        "recovery %s: champion v%s -> v%s", "succeeded" if outcome.recovered else "failed", outcome.champion_before, outcome.champion_after
    )
    return outcome

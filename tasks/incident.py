"""The crisis response's Prefect tasks: score the live window, diagnose,
decide, recover. Thin wrappers over diagnostics, rollback and recovery."""

from __future__ import annotations

import base64
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.tasks.diagnostics import DiagnosticReport, OperationalContext, diagnose
from prefect_crisis.tasks.errors import RegistryError
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.paths import ensure_experiment
from prefect_crisis.tasks.quarantine import artifact_key
from prefect_crisis.tasks.recovery import RecoveryOutcome, Verification, ViolationType, execute_recovery
from prefect_crisis.tasks.rollback import (
    LiveWindow,
    RollbackDecision,
    Severity,
    candidates_from_registry,
    decide_rollback,
    judge_rules,
)
from prefect_crisis.tasks.training_run import set_stop_flag


def predict_with(registry: ModelRegistry, version: str, window: pd.DataFrame):
    """Predictions (and probabilities) of a registered version on the window."""
    info = registry.version(version)
    features = info.tags.get("crisis.features", "").split(",")
    missing = [name for name in features if name not in window.columns]
    if not features or missing:
        raise RegistryError(f"v{version} of {registry.model_name!r} needs features {missing or '(unknown)'} the window lacks")
    model = load_sklearn_model(registry.client, registry.model_name, version)
    X = window[features].to_numpy(dtype=float)
    return model.predict(X), (model.predict_proba(X) if hasattr(model, "predict_proba") else None)


def live_window(y_true: np.ndarray, y_pred: np.ndarray, latencies_ms=()) -> LiveWindow:
    """The labelled window as the rollback rules see it; error_rate is derived from accuracy."""
    return LiveWindow({"accuracy": int((y_true == y_pred).sum())}, {"accuracy": len(y_true)}, tuple(latencies_ms))


def render_diagnosis(report: DiagnosticReport, model: str, version: str, plot_uri: str | None, plot_png: bytes | None = None) -> str:
    lines = [f"# Diagnosis of `{model}` v{version}", "", f"{report.rows:,} labelled predictions, error rate **{report.error_rate:.2%}**", ""]
    if plot_png:  # embedded: the Prefect UI renders a data: URI image, not a file:// path
        lines += [f"![Confusion matrix and error over time](data:image/png;base64,{base64.b64encode(plot_png).decode()})", ""]
    if plot_uri:
        lines += [f"Confusion matrix and error over time: `{plot_uri}`", ""]
    if report.recommendations:
        lines += ["## Recommendations", ""]
        lines += [f"- **{r.action.value}**: {r.reason} (findings: {', '.join(r.findings)})" for r in report.recommendations]
        lines.append("")
    if report.change_window:
        lines += [f"Error changed most (by {report.change:+.1%}) in the window starting {report.change_window.start}.", ""]
    if report.slices:
        lines += ["## Slices with significantly more errors", "", "| feature | slice | rows | error rate | rest | z |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {s.feature} | {s.slice} | {s.rows:,} | {s.error_rate:.1%} | {s.rest_error_rate:.1%} | {s.z:.1f} |" for s in report.slices[:10]]
        lines.append("")
    if report.drifted_features:
        lines += [f"Drifted features: {', '.join(report.drifted_features)}", ""]
    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support:,} |" for c in report.per_class]
    return "\n".join(lines)


def plot_diagnosis(report: DiagnosticReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    confusion = np.array(report.confusion)
    left.imshow(confusion, cmap="Blues")
    left.set(title="Confusion matrix", xlabel="predicted", ylabel="true", xticks=range(len(report.labels)), yticks=range(len(report.labels)))
    left.set_xticklabels(report.labels)
    left.set_yticklabels(report.labels)
    for (row, column), value in np.ndenumerate(confusion):
        dark = value > confusion.max() / 2
        left.text(column, row, f"{value:,}", ha="center", va="center", color="white" if dark else "black")
    rates = [w.error_rate for w in report.error_over_time]
    right.plot(range(len(rates)), rates, marker="o")
    right.set(title="Error rate over time", xlabel="time window", ylabel="error rate", ylim=(0, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


@task(name="diagnose-model", cache_policy=NO_CACHE)
def diagnose_model(registry: ModelRegistry, version: str, window: pd.DataFrame, label: str, reference: pd.DataFrame | None, incident: str) -> tuple[DiagnosticReport, np.ndarray]:
    """Score the window with `version`, diagnose, publish markdown + plot (MLflow run `crisis-incidents`)."""
    y_pred, proba = predict_with(registry, version, window)
    features = window.drop(columns=[c for c in (label, "timestamp") if c in window.columns])
    baseline_accuracy = registry.version(version).metrics.get("accuracy")
    context = OperationalContext(
        new_version_since=registry.champion_since(),
        baseline_error_rate=None if baseline_accuracy is None else 1 - baseline_accuracy,
    )
    report = diagnose(window[label].to_numpy(), y_pred, proba, features, window.get("timestamp"), reference, context=context)
    client = registry.client
    run = client.create_run(
        ensure_experiment(client, "crisis-incidents"),
        tags={"crisis.model": registry.model_name, "crisis.incident": incident, "crisis.version": version},
        run_name=f"diagnose-{registry.model_name}-{incident}",
    )
    with tempfile.TemporaryDirectory() as folder:
        plot = Path(folder) / "diagnosis.png"
        plot_diagnosis(report, plot)
        client.log_artifact(run.info.run_id, str(plot))
        plot_png = plot.read_bytes()
    client.log_dict(run.info.run_id, report.to_dict(), "diagnosis.json")
    client.set_terminated(run.info.run_id)
    plot_uri = f"{client.get_run(run.info.run_id).info.artifact_uri}/diagnosis.png"
    create_markdown_artifact(key=artifact_key("diagnosis", registry.model_name), markdown=render_diagnosis(report, registry.model_name, version, plot_uri, plot_png))
    return report, y_pred


@task(name="decide-rollback", cache_policy=NO_CACHE)
def decide_rollback_task(registry: ModelRegistry, policy: RollbackPolicy, live: LiveWindow, severity: Severity) -> RollbackDecision:
    champion, candidates, last_rollback_at = candidates_from_registry(registry)
    if champion is None:
        raise RegistryError(f"{registry.model_name!r} has no champion to judge: promote a version first")
    decision = decide_rollback(live, champion, candidates, policy, now=registry.now(), last_rollback_at=last_rollback_at, severity=severity)
    get_run_logger().info("decision: %s (%s)", decision.kind.value, decision.reason)
    return decision


@task(name="execute-recovery", cache_policy=NO_CACHE)
def execute_recovery_task(
    registry: ModelRegistry, policy: RollbackPolicy, decision: RollbackDecision, violation: ViolationType, incident: str,
    window: pd.DataFrame, label: str, baseline: dict[str, float],
) -> RecoveryOutcome:
    """Recover by the violation's strategies, verifying each on the labelled window."""

    def verify(version: str) -> Verification:
        y_pred, _ = predict_with(registry, version, window)
        live = live_window(window[label].to_numpy(), y_pred)
        judged = judge_rules(live, baseline, policy)
        failing = [str(v) for v in judged.violations] + list(judged.undecided)  # a rule that cannot be judged does not verify
        accuracy = live.successes["accuracy"] / live.samples["accuracy"]
        detail = f"v{version} accuracy {accuracy:.4f} on the window" + (f"; still failing: {failing}" if failing else "")
        if judged.not_measured:
            detail += f"; not measured: {', '.join(judged.not_measured)}"
        return Verification(not failing, detail, {"accuracy": accuracy})

    outcome = execute_recovery(registry, decision, violation, incident, verify, lambda reason: set_stop_flag(registry.model_name, reason, by="crisis-response"))
    get_run_logger().info("recovery %s: champion v%s -> v%s", "succeeded" if outcome.recovered else "failed", outcome.champion_before, outcome.champion_after)
    return outcome


def new_incident_id() -> str:
    return f"inc-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"

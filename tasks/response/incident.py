"""The crisis response's Prefect tasks: open the incident, score the live
window, diagnose, decide, recover. Thin wrappers over diagnostics, rollback
and recovery; each step emits through the incident's timeline and logs with
the incident id, model and version."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import AuditSnapshot, ModelRegistry, VersionInfo, first_line
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import CrisisError, RegistryError
from prefect_crisis.core.paths import artifact_key, ensure_experiment, mlflow_run_link, mlflow_ui_url
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import INCIDENT_EXPERIMENT, CrisisEvent, Severity, TagKey, ViolationType
from prefect_crisis.tasks.model_slots import response_limit
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.response.candidates import ServingHistory, eligible_versions, last_served
from prefect_crisis.tasks.response.diagnostics import DiagnosticReport, OperationalContext, diagnose
from prefect_crisis.tasks.response.emergency import EmergencyRecord
from prefect_crisis.tasks.response.episodes import Episode, EpisodeState, new_episode, read_episode, write_episode
from prefect_crisis.tasks.response.reading import STORE_RETRY_DELAYS, model_features, read_serving_history, serving_history_of, store_unavailable
from prefect_crisis.tasks.response.recovery import RecoveryOutcome, Verification, execute_recovery, verify_on_window
from prefect_crisis.tasks.response.rollback import RollbackDecision, decide_rollback
from prefect_crisis.tasks.response.rules import EMERGENCY_MIN_SAMPLES, LiveWindow, accuracy_of
from prefect_crisis.tasks.serving.inference_log import LATENCY_COLUMN
from prefect_crisis.tasks.training.stop_flag import set_stop_flag

__all__ = [
    "MEASURED_VERSIONS",
    "STORE_RETRY_DELAYS",
    "TOP_FINDINGS",
    "close_episode",
    "decide_rollback_task",
    "diagnose_model",
    "execute_recovery_task",
    "join_or_open_incident",
    "live_window",
    "measure_versions",
    "model_features",
    "new_incident_id",
    "open_incident",
    "plot_diagnosis",
    "predict_with",
    "read_serving_history",
    "render_diagnosis",
    "response_limit",
    "scorable_rows",
    "store_unavailable",
    "tag_response_run",
    "verifier",
]

TOP_FINDINGS = 3


def open_incident(
    model: str,
    incident_id: str,
    severity: Severity,
    violation: ViolationType,
    *,
    triggering_event_id: str | None = None,
    drill: bool = False,
    timeline: Timeline | None = None,
    clock: Callable[[], datetime] | None = None,
) -> tuple[Incident, Timeline]:
    """Open the incident once, emit `ml.incident.opened`, and give the timeline bound to it."""
    base = timeline or Timeline(clock=clock)
    incident = Incident(incident_id, model, Severity(severity), ViolationType(violation), base.clock(), triggering_event_id, drill)
    bound = base.bound(incident)
    bound.emit(CrisisEvent.INCIDENT_OPENED, model, {"flow_run_id": flow_run.get_id(), **incident.to_dict()})
    return incident, bound


def tag_response_run(incident: Incident) -> None:
    """Add the tag `incident:<id>` to the current flow run (an automation cannot name it in advance)."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        if incident.run_tag not in run.tags:
            client.update_flow_run(UUID(run_id), tags=[*run.tags, incident.run_tag])


def predict_with(registry: ModelRegistry, version: str, window: pd.DataFrame, info: VersionInfo | None = None):
    """Predictions (and probabilities) of a registered version on the window (`info`: the version, when already read)."""
    info = info if info is not None else registry.version(version)
    features = [name for name in info.tags.get(TagKey.FEATURES, "").split(",") if name]
    missing = [name for name in features if name not in window.columns]
    if not features or missing:
        raise RegistryError(f"v{version} of {registry.model_name!r} needs features {missing or '(unknown)'} the window lacks")
    model = load_sklearn_model(registry.client, registry.model_name, version)
    X = window[features].to_numpy(dtype=float)
    return model.predict(X), (model.predict_proba(X) if hasattr(model, "predict_proba") else None)


def live_window(y_true: np.ndarray, y_pred: np.ndarray, latencies_ms=()) -> LiveWindow:
    """The labelled window as the rollback rules see it; error_rate is derived from accuracy."""
    return LiveWindow({"accuracy": int((y_true == y_pred).sum())}, {"accuracy": len(y_true)}, tuple(latencies_ms))


def render_diagnosis(report: DiagnosticReport, model: str, version: str, run_link: str | None, plot_png: bytes | None = None) -> str:
    """The diagnosis artifact's markdown; `run_link`: the incident's run in the MLflow UI (None: no UI known)."""
    lines = [f"# Diagnosis of `{model}` v{version}", "", f"{report.rows:,} labelled predictions, error rate **{report.shown_error_rate}**", ""]
    if plot_png:  # embedded: the Prefect UI renders a data: URI image, not a file:// path
        lines += [f"![Confusion matrix and error over time](data:image/png;base64,{base64.b64encode(plot_png).decode()})", ""]
    if run_link:
        lines += [f"The plot, the diagnosis as JSON and the health plot: [the incident's MLflow run]({run_link})", ""]
    if report.recommendations:
        lines += ["## Recommendations", ""]
        lines += [f"- **{r.action.value}**: {r.reason} (findings: {', '.join(r.findings)})" for r in report.recommendations]
        lines.append("")
    if report.change_window:
        lines += [f"Error changed most (by {report.change:+.1%}) in the window starting {report.change_window.start}.", ""]
    if report.slices:
        lines += [
            "## Slices with significantly more errors",
            "",
            "| feature | slice | rows | error rate | rest | z |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {s.feature} | {s.slice} | {s.rows:,} | {s.error_rate:.1%} | {s.rest_error_rate:.1%} | {s.z:.1f} |" for s in report.slices[:10]]
        lines.append("")
    if report.drifted_features:
        lines += [f"Drifted features: {', '.join(report.drifted_features)}", ""]
    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support:,} |" for c in report.per_class]
    return "\n".join(lines)


def plot_diagnosis(report: DiagnosticReport, path: Path) -> None:
    # matplotlib's object API, not pyplot: no global figure manager, so responses in threads of one process can plot at once.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
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


def scorable_rows(window: pd.DataFrame, label: str, features: Collection[str] | None = None) -> pd.DataFrame:
    """The window's rows every version can be scored on: a label, and a finite number in every feature the versions read
    (`features`; every numeric column when not given). A row serving answered by the fallback because the primary's
    inputs were invalid (NaN, text) cannot judge the primary.

    Example:
        >>> frame = pd.DataFrame({"x": [1.0, float("nan"), 3.0, 4.0], "t": ["a", "b", "c", "n/a"], "label": [0, 1, None, 1]})
        >>> scorable_rows(frame, "label")["x"].tolist()
        [1.0, 4.0]
        >>> scorable_rows(frame.assign(t=["1", "2", "3", "n/a"]), "label", features=["x", "t"])["x"].tolist()
        [1.0]
    """
    if features is None:
        columns = (
            window.drop(columns=[c for c in (label, "timestamp", LATENCY_COLUMN) if c in window.columns]).select_dtypes(include="number").columns
        )
    else:
        columns = [column for column in features if column in window.columns]
    values = np.column_stack([pd.to_numeric(window[column], errors="coerce").to_numpy(dtype=float) for column in columns]) if len(columns) else None
    finite = np.isfinite(values).all(axis=1) if values is not None else np.ones(len(window), dtype=bool)
    keep = finite & window[label].notna().to_numpy()
    return window if keep.all() else window[keep]


MEASURED_VERSIONS = 6  # versions scored on the window besides the champion: the most recent that served, and the fallback


@task(
    name="measure-versions",
    cache_policy=NO_CACHE,
    retries=len(STORE_RETRY_DELAYS),
    retry_delay_seconds=STORE_RETRY_DELAYS,
    retry_condition_fn=store_unavailable,
)
def measure_versions(
    registry: ModelRegistry,
    audit: AuditSnapshot,
    window: pd.DataFrame,
    label: str,
    timeline: Timeline,
    history: ServingHistory | None = None,
) -> tuple[dict[str, LiveWindow], frozenset[str]]:
    """Score the versions a repair may go to on the incident's labelled window (the same rows the champion is judged on):
    the most recent versions that served and are not implicated, and the fallback. Returns the measurements and the
    versions the window cannot feed (features it lacks, values they cannot read): never a repair's target. `history`: the
    response's one read of the registry (read here when not given)."""
    history = history if history is not None else serving_history_of(registry, audit)
    champion, candidates = history.champion, history.candidates
    logger = timeline.logger(get_run_logger(), registry.model_name, champion.version if champion else None)
    current = champion.version if champion else None
    served = sorted(eligible_versions(candidates, current), key=last_served, reverse=True)[:MEASURED_VERSIONS]
    fallback = [c for c in candidates if c.holds_fallback_alias and c.version != current]
    truth = window[label].to_numpy()
    measured: dict[str, LiveWindow] = {}
    unscorable: set[str] = set()
    for candidate in [*served, *fallback]:
        try:
            y_pred, _ = predict_with(registry, candidate.version, window)
        except (RegistryError, ValueError) as error:
            logger.warning("v%s cannot be scored on the window (never a target): %s", candidate.version, first_line(str(error)))
            unscorable.add(candidate.version)
            continue
        measured[candidate.version] = live_window(truth, y_pred)
    shown = ", ".join(f"v{v} {w.successes['accuracy'] / max(w.samples['accuracy'], 1):.1%}" for v, w in measured.items()) or "none"
    logger.info("measured on the window's %d labelled rows: %s", len(window), shown)
    return measured, frozenset(unscorable)


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


def verifier(
    registry: ModelRegistry,
    policy: RollbackPolicy,
    audit: AuditSnapshot,
    window: pd.DataFrame,
    label: str,
    before: Verification | None,
    min_samples_cap: int | None = None,
    history: ServingHistory | None = None,
) -> Callable[[str], Verification]:
    """Verification of a version on the window against its *own* baseline (none looser than the version it was promoted
    over); the fallback model, a stopgap, verifies when it is measured no worse than what served before
    (`recovery.verify_on_window` judges; this scores the version)."""
    candidates = (history if history is not None else serving_history_of(registry, audit)).candidates
    truth = window[label].to_numpy()

    def verify(version: str) -> Verification:
        try:
            y_pred, _ = predict_with(registry, version, window)
        except (RegistryError, ValueError) as error:
            return Verification(False, f"v{version} cannot be scored on the window: {first_line(str(error))}")
        return verify_on_window(version, live_window(truth, y_pred), candidates, policy, before, min_samples_cap=min_samples_cap)

    return verify


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


def join_or_open_incident(
    model: str,
    event_id: str | None,
    severity: Severity,
    violation: ViolationType,
    *,
    quiet_minutes: float,
    drill: bool,
    clock: Callable[[], datetime],
    incident_id: str | None = None,
    fallback_serves: bool = False,
) -> tuple[Incident, Timeline, Episode] | None:
    """The incident this response belongs to: the model's current episode when it is joinable (one incident per episode;
    `ml.incident.joined` says so), else a new one (`ml.incident.opened`). None: the triggering event was answered already.
    Call it holding the model's concurrency slot."""
    now = clock()
    episode = read_episode(model)
    if episode is not None and episode.answered(event_id):
        return None
    if episode is not None and episode.joinable(now, quiet_minutes, fallback_serves):
        incident = Incident(
            episode.incident,
            model,
            Severity(severity),
            ViolationType(violation),
            datetime.fromisoformat(episode.opened_at),
            event_id,
            episode.drill or drill,
        )
        timeline = Timeline(clock=clock).bound(incident)
        timeline.emit(
            CrisisEvent.INCIDENT_JOINED,
            model,
            {
                "flow_run_id": flow_run.get_id(),
                "triggering_event_id": event_id,
                "severity": Severity(severity).value,
                "episode_state": episode.state.value,
            },
        )
        episode = episode.touched(now, event_id)
    else:
        incident, timeline = open_incident(
            model, incident_id or event_id or new_incident_id(), severity, violation, triggering_event_id=event_id, drill=drill, clock=clock
        )
        episode = new_episode(incident.id, incident.severity.value, incident.violation.value, now, event_id, incident.drill)
    write_episode(model, episode)
    return incident, timeline, episode


def close_episode(registry: ModelRegistry, episode: Episode) -> Episode:
    """Record where the episode stands after a response: a stopgap while the fallback model serves, recovered when a
    version serves, open otherwise. The store unreadable now: the episode keeps its state (logged), never a failed response."""
    try:
        champion = registry.champion()
    except CrisisError as error:
        get_run_logger().warning(
            "episode %s: the champion cannot be read now (%s); its state is left as it was", episode.incident, first_line(str(error))
        )
        return episode
    state = (
        EpisodeState.STOPGAP
        if champion is not None and champion.is_fallback
        else EpisodeState.RECOVERED
        if champion is not None
        else EpisodeState.OPEN
    )
    updated = episode.touched(registry.now(), None, state)
    write_episode(registry.model_name, updated)
    return updated


def new_incident_id() -> str:
    return f"inc-{datetime.now(UTC):%Y%m%dT%H%M%S}"

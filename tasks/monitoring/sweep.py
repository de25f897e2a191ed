"""Health monitoring (seed slides 6 and 10): model, system and data metrics over
a long and a short window of the inference log, judged by the MonitoringPolicy's
rules, reported as `ml.breach.<severity>` and `ml.health.reported` events.

A window belongs to one serving version: the rows logged since the current
champion took the alias (the registry's audit says when), without the rows a
previous version answered. Rows the fallback answered stay in the window for the
serving figures (fallback share, failed rows, requests) but are judged apart
(`fallback_error_rate`): they are never the champion's errors or successes.
While the champion is the model's fallback version, the sweep says so
(`serving: "fallback"`) and never calls the model healthy.

The windows and their metrics are plain functions over plain data
(tasks/monitoring/windows.py), the rules plain values (tasks/monitoring/health_rules.py);
this module reads the log, the registry and the host, and reports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.blocks.registry import AliasMove, ModelRegistry, first_line
from prefect_crisis.core.errors import CrisisError, MonitoringError
from prefect_crisis.core.paths import crisis_home, validate_model_name
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import SERVING_LABEL, CrisisEvent, Responder, Serving, Severity, TagKey, VersionRole, is_drill_model
from prefect_crisis.tasks.loading import saved_block
from prefect_crisis.tasks.monitoring.health_rules import Breach, HealthCheck, Measure, WindowMetrics, policy_checks, worst
from prefect_crisis.tasks.monitoring.windows import (  # noqa: F401 - the windows' functions, imported from here before
    HISTORY_BASELINE_METRICS,
    LABELLED_METRICS,
    MIN_HISTORY_SWEEPS,
    _rate,
    _refused,
    _since,
    baseline_of,
    error_rate,
    input_drift,
    model_metrics,
    split_windows,
    window_pair,
)
from prefect_crisis.tasks.response.candidates import promotion_guarded, promotions_over
from prefect_crisis.tasks.serving.inference_log import logged_models, read_window
from prefect_crisis.tasks.validation.references import load_reference

BREACH_EVENTS = {
    Severity.WARNING: CrisisEvent.BREACH_WARNING,
    Severity.CRITICAL: CrisisEvent.BREACH_CRITICAL,
    Severity.EMERGENCY: CrisisEvent.BREACH_EMERGENCY,
}


def system_metrics(path: Path | None = None) -> dict[str, Measure]:
    """CPU, memory and disk use (%) of the host the monitor runs on; disk: the disk of `path`
    (the state folder by default, or its nearest existing parent)."""
    folder = Path(path or crisis_home())
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return {
        "cpu_percent": Measure(float(psutil.cpu_percent(interval=0.1)), 1),
        "memory_percent": Measure(float(psutil.virtual_memory().percent), 1),
        "disk_percent": Measure(float(psutil.disk_usage(str(folder)).percent), 1),
    }


@dataclass(frozen=True)
class ModelHealth:
    """One sweep of one model: both windows' metrics, the baselines, the confirmed breaches, and what
    served in the window (`serving`: a Serving value, None without a champion; `serving_since`: when the
    window's version began serving; `rows_left_out`: rows of the long window answered by another version
    or before it began serving)."""

    model: str
    version: str | None
    at: datetime
    long: WindowMetrics
    short: WindowMetrics
    baseline: dict[str, float]
    breaches: tuple[Breach, ...] = ()
    drifted_features: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    limits: dict[str, float] = field(default_factory=dict)  # "<metric>:<severity>" -> the line judged against (plots)
    serving: Serving | None = None
    serving_since: datetime | None = None
    rows_left_out: int = 0

    @property
    def severity(self) -> Severity | None:
        return worst(self.breaches)

    @property
    def healthy(self) -> bool:
        """No breach, and a model version serves (a model served by its fallback is never healthy)."""
        return not self.breaches and self.serving is not Serving.FALLBACK

    def payload(self) -> dict[str, Any]:
        """The `ml.health.reported` payload."""
        return {
            "metrics": self.long.to_dict(),
            "short_metrics": self.short.to_dict(),
            "baseline": self.baseline,
            "window_minutes": {"long": self.long.minutes, "short": self.short.minutes},
            "version": self.version,
            "breaches": [breach.rule for breach in self.breaches],
            "severity": self.severity.value if self.severity else None,
            "drifted_features": list(self.drifted_features),
            "notes": list(self.notes),
            "at": self.at.isoformat(),
            "serving": self.serving.value if self.serving else None,
            "serving_since": self.serving_since.isoformat() if self.serving_since else None,
            "rows_left_out": self.rows_left_out,
        }

    def line(self) -> str:
        """One log line."""
        metrics = self.long.to_dict()

        def shown(name: str, spec: str) -> str:
            value = metrics.get(name)
            return "n/a" if value is None else format(value, spec)

        verdict = "; ".join(str(breach) for breach in self.breaches) or ("served by its fallback" if self.serving is Serving.FALLBACK else "healthy")
        return (
            f"{self.model} v{self.version or '-'}{' (its fallback)' if self.serving is Serving.FALLBACK else ''}: "
            f"{int(metrics.get('requests') or 0)} requests, {int(metrics.get('rows') or 0)} rows, "
            f"error rate {shown('error_rate', '.2%')} of {metrics.get('error_rate_samples', 0)} labelled, "
            f"fallback {shown('fallback_share', '.1%')} (error rate {shown('fallback_error_rate', '.2%')} of {metrics.get('fallback_error_rate_samples', 0)}), "
            f"failed {shown('failed_row_share', '.1%')}, p95 {shown('latency_p95_ms', '.1f')} ms: {verdict}"
        )


def _replaced_metrics(registry: ModelRegistry, version: str) -> dict[str, float] | None:
    """The registered metrics of the version `version` was last promoted over; None when it became champion otherwise."""
    try:
        replaced = promotions_over(registry.audit_trail(registry.champion_alias)).get(version)
        return dict(registry.version(replaced).metrics) if replaced else None
    except (CrisisError, MlflowException):
        return None  # unreadable now: the champion's own figures


def read_champion(registry: ModelRegistry) -> tuple[str | None, dict[str, float]]:
    """(version, registered metrics none looser than the version it was promoted over) of the champion;
    (None, {}) when there is none yet.

    Raises:
        MonitoringError: the registry cannot be read.
    """
    champion = registry.champion()
    if champion is not None:
        return champion.version, promotion_guarded(champion.metrics, _replaced_metrics(registry, champion.version))
    try:  # `champion()` says None for an unreachable registry too: tell the two apart
        registry.client.search_registered_models(max_results=1)
    except MlflowException as error:
        raise MonitoringError(
            f"cannot read the champion of {registry.model_name!r} from {registry.display_tracking_uri}: {first_line(str(error))} "
            "(check the registry server and MLFLOW_TRACKING_URI)"
        ) from None
    return None, {}


@dataclass(frozen=True)
class ServingVersion:
    """The version a sweep judges: the champion, its baseline figures, since when it serves (the audit's
    move onto the alias; None when the audit does not say), and whether it is the model's fallback."""

    version: str | None
    registered: dict[str, float]
    since: datetime | None = None
    serving: Serving | None = None
    notes: tuple[str, ...] = ()


def champion_began(moves: Iterable[AliasMove], alias: str, version: str) -> datetime | None:
    """When `version` took `alias` for the stint it serves now: the alias's latest applied move, when that
    move went to `version` (None otherwise: the alias was moved outside the audit).

    Example:
        >>> def move(to, minute, outcome="applied"):
        ...     at = datetime(2026, 1, 1, 10, minute, tzinfo=UTC)
        ...     return AliasMove("move", "champion", None, to, "", None, None, at, outcome, "run")
        >>> champion_began([move("2", 0), move("1", 5), move("2", 9), move("3", 12, "failed: refused")], "champion", "2").minute
        9
        >>> champion_began([move("2", 0), move("1", 5)], "champion", "2") is None
        True
    """
    applied = [move for move in moves if move.alias == alias and move.applied]
    latest = max(applied, key=lambda move: move.at, default=None)
    return latest.at if latest is not None and latest.to_version == str(version) else None


def _is_fallback(registry: ModelRegistry, version: str) -> bool:
    """The version is the model's fallback: tagged so, or under the fallback alias too."""
    found = registry.client.get_model_version(registry.model_name, str(version))
    return (found.tags or {}).get(TagKey.ROLE) == VersionRole.FALLBACK or registry.fallback_alias in (found.aliases or ())


def read_serving(registry: ModelRegistry) -> ServingVersion:
    """The champion (`read_champion`), since when it serves, and whether it is the model's fallback.

    Raises:
        MonitoringError: the registry cannot be read.
    """
    version, registered = read_champion(registry)
    if version is None:
        return ServingVersion(None, {})
    notes = []
    try:
        since = champion_began(registry.audit_trail(registry.champion_alias), registry.champion_alias, version)
        if since is None:
            notes.append(
                f"v{version} took @{registry.champion_alias} outside the audit: its window starts after the last row another version answered"
            )
    except (CrisisError, MlflowException) as error:
        since = None
        notes.append(f"the audit cannot be read ({first_line(str(error))}): v{version}'s window starts after the last row another version answered")
    try:
        serving = Serving.FALLBACK if _is_fallback(registry, version) else Serving.CHAMPION
    except MlflowException as error:
        raise MonitoringError(
            f"cannot read v{version} of {registry.model_name!r} from {registry.display_tracking_uri}: {first_line(str(error))} "
            "(check the registry server and MLFLOW_TRACKING_URI)"
        ) from None
    return ServingVersion(version, registered, since, serving, tuple(notes))


def serving_rows(frame: pd.DataFrame, version: str | None, since: datetime | None) -> tuple[pd.DataFrame, datetime | None]:
    """The rows of `version`'s serving window and when it starts: the rows logged since `version` began
    serving (`since`; without it, after the newest row the primary answered at another version), without
    the rows the primary answered at another version (a server still on the old one). Fallback-answered,
    failed and refused rows of that time stay: the metrics count them apart.

    Example:
        >>> frame = pd.DataFrame({
        ...     "timestamp": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-01T10:05Z", "2026-01-01T10:06Z", "2026-01-01T10:07Z"]),
        ...     "answered_by": ["primary", "primary", "fallback", "primary"], "version": ["2", "1", "9", "2"]})
        >>> rows, start = serving_rows(frame, "2", None)  # not in the audit: after the last row v1 answered
        >>> rows["version"].tolist(), start.isoformat()
        (['9', '2'], '2026-01-01T10:05:00+00:00')
        >>> serving_rows(frame, "2", datetime(2026, 1, 1, 9, 0, tzinfo=UTC))[0]["version"].tolist()
        ['2', '9', '2']
    """
    if version is None or frame.empty:
        return frame, since
    other = ((frame["answered_by"].astype(object) == Responder.PRIMARY) & (frame["version"].astype(str) != str(version))).to_numpy()
    stamps = frame["timestamp"]
    if since is not None:
        start = pd.Timestamp(since)
        start = start.tz_localize(UTC) if start.tzinfo is None else start
        keep = (stamps >= start).to_numpy()
        began: datetime | None = start.to_pydatetime()
    elif other.any():
        start = stamps[other].max()
        keep = (stamps > start).to_numpy()
        began = start.to_pydatetime()
    else:
        keep, began = np.ones(len(frame), dtype=bool), None
    return frame[keep & ~other], began


def sweep_model(
    model: str,
    log: InferenceLog,
    policy: MonitoringPolicy,
    registry: ModelRegistry,
    *,
    now: datetime,
    checks: HealthCheck | None = None,
    system: dict[str, Measure] | None = None,
    contract: DataContract | None = None,
    reference: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
) -> ModelHealth:
    """Measure and judge one model at `now`, on the window of the version that serves (`serving_rows`).

    Raises:
        MonitoringError: the champion cannot be read.
        InferenceLogError: the inference log cannot be read.
    """
    serving = read_serving(registry)
    logged = read_window(log, model, now - timedelta(minutes=policy.long_window_minutes), now, labelled_only=False)
    frame, began = serving_rows(logged, serving.version, serving.since)
    long, short, drifted = window_pair(frame, now, policy, system=system, contract=contract, reference=reference)
    baseline = baseline_of(serving.registered, history)
    notes = list(serving.notes)
    if serving.version is None:
        notes.append(f"no champion of {model!r} in {registry.display_tracking_uri}: rules relative to a baseline not judged")
    if serving.serving is Serving.FALLBACK:
        notes.append(
            f"served by its fallback v{serving.version}: judged against the fallback's own figures, which says nothing of the model; "
            "a good version is still to be found"
        )
    left_out = len(logged) - len(frame)
    if left_out:
        notes.append(f"{left_out} rows answered by another version or before v{serving.version} began serving left out")
    breaches = (checks or policy_checks(policy))(long, short, baseline)
    return ModelHealth(
        model,
        serving.version,
        now,
        long,
        short,
        baseline,
        breaches,
        drifted,
        tuple(notes),
        rule_limits(policy, baseline),
        serving.serving,
        began,
        left_out,
    )


def rule_limits(policy: MonitoringPolicy, baseline: dict[str, float]) -> dict[str, float]:
    """Per metric and severity, the tightest line the policy's rules draw with this baseline.

    Example:
        >>> rule_limits(MonitoringPolicy(), {"error_rate": 0.08})["error_rate:critical"]
        0.18
    """
    limits: dict[str, float] = {}
    for rule in policy.rules:
        limit = rule.limit(baseline.get(rule.metric))
        if limit is not None:
            key = f"{rule.metric}:{rule.severity.value}"
            limits[key] = round(min(limit, limits.get(key, limit)), 6)
    return limits


def escalated(breaches: Iterable[Breach]) -> list[Breach]:
    """Per metric, only its most severe breach: an error rate past the emergency line is not also a
    warning and a critical, or one sweep would start a diagnosis, a rollback and an emergency stop
    at once, racing each other for the champion alias."""
    order = list(Severity)
    kept: dict[str, Breach] = {}
    for breach in breaches:
        held = kept.get(breach.metric)
        if held is None or order.index(breach.severity) > order.index(held.severity):
            kept[breach.metric] = breach
    return list(kept.values())


def report_health(health: ModelHealth, timeline: Timeline) -> None:
    """One `ml.breach.<severity>` per breaching metric (its most severe rule), then `ml.health.reported`."""
    for breach in escalated(health.breaches):
        timeline.emit(BREACH_EVENTS[breach.severity], health.model, breach.payload(), version=health.version)
    labels = {SERVING_LABEL: health.serving.value} if health.serving else None
    timeline.emit(CrisisEvent.HEALTH_REPORTED, health.model, health.payload(), version=health.version, labels=labels)


# -- metric history -------------------------------------------------------------------------------


def history_path(model: str, folder: Path | None = None) -> Path:
    return Path(folder or crisis_home() / "monitoring") / f"{validate_model_name(model)}.parquet"


def metric_history(model: str, folder: Path | None = None) -> pd.DataFrame:
    """The model's recorded sweeps, oldest first: `at`, `version`, `severity`, `breaches`, the long
    window's metrics (`<metric>`, `<metric>_samples`), `serving`, `serving_since` (ISO) and
    `rows_left_out` (see ModelHealth); empty before the first sweep."""
    path = history_path(model, folder)
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise MonitoringError(f"cannot read the metric history {path}: {first_line(str(error))} (delete it to start a new one)") from None


def append_history(health: ModelHealth, keep: int, folder: Path | None = None) -> Path:
    """Add the sweep to the model's history, keep the last `keep` sweeps; written atomically."""
    path = history_path(health.model, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = pd.DataFrame(
        [
            {
                "at": pd.Timestamp(health.at),
                "version": health.version,
                "severity": health.severity.value if health.severity else None,
                "breaches": ",".join(breach.rule for breach in health.breaches),
                **health.long.to_dict(),
                "serving": health.serving.value if health.serving else None,
                "serving_since": health.serving_since.isoformat() if health.serving_since else None,
                "rows_left_out": health.rows_left_out,
                **{f"limit:{key}": value for key, value in health.limits.items()},
            }
        ]
    )
    past = metric_history(health.model, folder)
    frame = (pd.concat([past, row], ignore_index=True) if len(past) else row).tail(keep).reset_index(drop=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".parquet")
    os.close(handle)
    try:
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


# -- the sweep of many models, and its tasks ------------------------------------------------------


def models_to_sweep(
    log: InferenceLog,
    now: datetime,
    minutes: float,
    model_names: Iterable[str] | None = None,
    model_name: str | None = None,
    drill_minutes: float | None = None,
) -> list[str]:
    """The models named (either parameter, or both), else every model with records in the last `minutes`; a drill
    model (`drill-*`) only while it has records in the last `drill_minutes` (the short window): the schedule stays
    the safety net of a drill in progress, and stops judging its faults soon after the drill ended."""
    named = list(dict.fromkeys([*(model_names or []), *([model_name] if model_name else [])]))
    for name in named:
        validate_model_name(name)
    if named:
        return named
    models = logged_models(log, now - timedelta(minutes=minutes), now)
    if not any(is_drill_model(model) for model in models):
        return models  # the usual case: one query
    recent = set(logged_models(log, now - timedelta(minutes=drill_minutes), now)) if drill_minutes else set()
    return [model for model in models if not is_drill_model(model) or model in recent]


def load_drift_reference(policy: MonitoringPolicy) -> tuple[DataContract | None, pd.DataFrame | None]:
    """The policy's contract and its reference; (None, None) when no contract is named.

    Raises:
        MonitoringError: the contract names no reference_uri.
    """
    if not policy.contract_block:
        return None, None
    contract = saved_block(DataContract, policy.contract_block)
    if not contract.reference_uri:
        raise MonitoringError(
            f"data contract {policy.contract_block!r} has no reference_uri: drift needs one (or drop contract_block from the policy)"
        )
    return contract, load_reference(contract.reference_uri)


@task(name="sweep-model", cache_policy=NO_CACHE)
def sweep_model_task(
    model: str,
    log: InferenceLog,
    policy: MonitoringPolicy,
    *,
    now: datetime,
    system: dict[str, Measure] | None = None,
    contract: DataContract | None = None,
    reference: pd.DataFrame | None = None,
    registry_for: Callable[[str], ModelRegistry] | None = None,
    timeline: Timeline | None = None,
) -> ModelHealth:
    """Sweep one model, report it (events, history) and log one line."""
    registry = (registry_for or (lambda name: ModelRegistry(model_name=name)))(model)
    history = metric_history(model)
    health = sweep_model(model, log, policy, registry, now=now, system=system, contract=contract, reference=reference, history=history)
    report_health(health, timeline or Timeline())
    append_history(health, policy.history_sweeps)
    get_run_logger().info(health.line())
    return health

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

Plain functions over plain data (a window frame as `InferenceLog.read_window`
returns it, a champion's registered metrics); the Prefect tasks on top only
load blocks and log. The rules themselves live in `tasks.health_rules`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
from prefect_crisis.blocks.inference_store import ERROR_ROW_ID, LOG_COLUMNS
from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.blocks.registry import AliasMove, ModelRegistry, first_line
from prefect_crisis.core.errors import CrisisError, MonitoringError
from prefect_crisis.core.paths import crisis_home, validate_model_name
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import SERVING_LABEL, CrisisEvent, Responder, Serving, Severity, TagKey, VersionRole, is_drill_model
from prefect_crisis.tasks.validation.drift import DriftSettings, frame_drift
from prefect_crisis.tasks.monitoring.health_rules import Breach, HealthCheck, Measure, WindowMetrics, policy_checks, worst
from prefect_crisis.tasks.validation.references import load_reference
from prefect_crisis.tasks.response.rollback import baseline_value, promotion_guarded, promotions_over
from prefect_crisis.tasks.validation.checks import checks_drift

BREACH_EVENTS = {Severity.WARNING: CrisisEvent.BREACH_WARNING, Severity.CRITICAL: CrisisEvent.BREACH_CRITICAL, Severity.EMERGENCY: CrisisEvent.BREACH_EMERGENCY}
LABELLED_METRICS = ("error_rate", "fallback_error_rate")
HISTORY_BASELINE_METRICS = ("latency_p50_ms", "latency_p95_ms")  # without a registered figure: the median of past sweeps
MIN_HISTORY_SWEEPS = 3


def _rate(count: int, samples: int) -> Measure:
    return Measure(count / samples if samples else math.nan, samples, count)


def _refused(frame: pd.DataFrame) -> pd.Series:
    """The one record of a request refused before any prediction (it has no row, no latency)."""
    return (frame["row_id"] == ERROR_ROW_ID) & frame["prediction"].isna() & frame["latency_ms"].isna() & (frame["answered_by"] == Responder.NONE)


def error_rate(frame: pd.DataFrame) -> Measure:
    """Wrong answers among the labelled, answered rows (`count`: the wrong ones).

    Example:
        >>> frame = pd.DataFrame({"label": [1, 0, 1, None], "prediction": [1, 1, 1, 0]})
        >>> error_rate(frame)
        Measure(value=0.3333333333333333, samples=3, count=1)
    """
    labelled = frame[frame["label"].notna() & frame["prediction"].notna()]
    wrong = int(sum(label != prediction for label, prediction in zip(labelled["label"], labelled["prediction"])))
    return _rate(wrong, len(labelled))


def model_metrics(frame: pd.DataFrame, minutes: float) -> WindowMetrics:
    """Every model and data metric of one window of the inference log.

    Rows are predicted rows (a refused request's record is counted as a request, not a row);
    latency is per request, not per row, over the requests not answered by the fallback alone.
    The champion's figures (error rate, confidence) are the primary's rows only; the fallback's
    rows have their own (`fallback_share`, `fallback_error_rate`).

    Example:
        >>> frame = pd.DataFrame({
        ...     "x": [1.0, None, 3.0, None], "label": [1, 1, None, None], "prediction": [1, 0, 1, None],
        ...     "answered_by": ["primary", "fallback", "none", "none"], "confidence": [0.9, 0.7, None, None],
        ...     "latency_ms": [10.0, 10.0, 30.0, None], "error": [None, None, "no answer", "bad input"],
        ...     "request_id": ["a", "a", "b", "c"], "row_id": ["0", "1", "0", "*"]})
        >>> metrics = model_metrics(frame, 60).to_dict()
        >>> metrics["requests"], metrics["rows"], metrics["failed_row_share"], metrics["exception_rate"]
        (3.0, 3.0, 0.333333, 0.666667)
        >>> metrics["error_rate"], metrics["fallback_error_rate"], metrics["fallback_share"]
        (0.0, 1.0, 0.333333)
        >>> metrics["latency_p50_ms"], metrics["latency_p50_ms_samples"], metrics["missing_ratio"]
        (20.0, 2, 0.333333)
    """
    refused = _refused(frame) if len(frame) else pd.Series(dtype=bool)
    rows = frame[~refused]
    requests = int(frame["request_id"].nunique())
    answered_by = rows["answered_by"].astype(object)
    primary, fallback = rows[(answered_by == Responder.PRIMARY).to_numpy()], rows[(answered_by == Responder.FALLBACK).to_numpy()]
    with_error = set(frame.loc[refused, "request_id"]) | set(rows.loc[rows["error"].notna(), "request_id"])
    not_fallback = rows[(answered_by != Responder.FALLBACK).to_numpy()]
    latencies = not_fallback.groupby("request_id", sort=False)["latency_ms"].first().dropna().to_numpy(dtype=float)
    confidence = primary["confidence"].dropna().to_numpy(dtype=float)
    features = [name for name in frame.columns if name not in LOG_COLUMNS]
    cells = rows[features].to_numpy(dtype=object) if features else np.empty((len(rows), 0), dtype=object)
    missing = pd.isna(cells).mean() if cells.size else math.nan

    def quantile(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if len(values) else math.nan

    measures = {
        "requests": Measure(float(requests), requests),
        "rows": Measure(float(len(rows)), len(rows)),
        "error_rate": error_rate(primary),
        "fallback_share": _rate(len(fallback), len(rows)),
        "fallback_error_rate": error_rate(fallback),
        "failed_row_share": _rate(int((answered_by == Responder.NONE).sum()), len(rows)),
        "exception_rate": _rate(len(with_error), requests),
        "latency_p50_ms": Measure(quantile(latencies, 50), len(latencies)),
        "latency_p95_ms": Measure(quantile(latencies, 95), len(latencies)),
        "confidence_p10": Measure(quantile(confidence, 10), len(confidence)),
        "confidence_p50": Measure(quantile(confidence, 50), len(confidence)),
        "confidence_mean": Measure(float(confidence.mean()) if len(confidence) else math.nan, len(confidence)),
        "missing_ratio": Measure(float(missing), len(rows)),
    }
    return WindowMetrics(minutes, measures)


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


def input_drift(frame: pd.DataFrame, contract: DataContract, reference: pd.DataFrame) -> tuple[Measure, tuple[str, ...]]:
    """How many of the contract's drift-checked features drifted in the window's inputs against the
    reference (the validation step's drift code and settings), and which."""
    specs = [spec for spec in contract.columns if checks_drift(spec, contract) and spec.name in frame.columns and spec.name in reference.columns]
    kinds = {spec.name: "numeric" if spec.is_numeric else "categorical" for spec in specs}
    drift = frame_drift(reference, {name: (lambda name=name: frame[name]) for name in kinds}, kinds, DriftSettings.from_contract(contract))
    drifted = tuple(sorted(name for name, figures in drift.items() if figures.drifted))
    return Measure(float(len(drifted)), len(frame)), drifted


def _since(stamps: pd.Series, end: datetime, minutes: float, at_least: int) -> datetime:
    """Start of a short window ending at `end`: `minutes` back, or further back to hold the newest
    `at_least` samples (sparse traffic or labels would otherwise leave it too thin to confirm anything)."""
    start = end - timedelta(minutes=minutes)
    newest = stamps.sort_values().iloc[-at_least:] if len(stamps) else stamps
    return min(start, newest.iloc[0]) if len(newest) else start


def split_windows(
    frame: pd.DataFrame, now: datetime, long_minutes: float, short_minutes: float, short_min_samples: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(long, short, short of the labelled rows). The short window holds the last `short_minutes`,
    or the newest `short_min_samples` requests if that is more; the labelled short window ends at
    the newest labelled row instead of now, because labels come after their predictions, and reaches
    back to hold `short_min_samples` labelled rows of the primary (the error rate's samples) when
    there are that many."""
    long = frame[frame["timestamp"] >= now - timedelta(minutes=long_minutes)]
    first_seen = long.groupby("request_id", sort=False)["timestamp"].min()
    short = long[long["timestamp"] >= _since(first_seen, now, short_minutes, short_min_samples)]
    labelled = long[long["label"].notna()]
    if not len(labelled):
        return long, short, labelled
    judged = labelled[(labelled["answered_by"].astype(object) == Responder.PRIMARY).to_numpy()]
    basis = judged if len(judged) else labelled
    newest = labelled["timestamp"].max()
    return long, short, labelled[labelled["timestamp"] >= _since(basis["timestamp"], newest, short_minutes, short_min_samples)]


def window_pair(
    frame: pd.DataFrame, now: datetime, policy: MonitoringPolicy, *, system: dict[str, Measure] | None = None,
    contract: DataContract | None = None, reference: pd.DataFrame | None = None,
) -> tuple[WindowMetrics, WindowMetrics, tuple[str, ...]]:
    """The long and short windows' metrics (system figures are instantaneous: the same in both),
    and the features drifted over the long window."""
    long_rows, short_rows, labelled_short = split_windows(
        frame, now, policy.long_window_minutes, policy.short_window_minutes, policy.short_min_samples
    )
    long, short = model_metrics(long_rows, policy.long_window_minutes), model_metrics(short_rows, policy.short_window_minutes)
    short.measures.update({metric: model_metrics(labelled_short, policy.short_window_minutes).measures[metric] for metric in LABELLED_METRICS})
    drifted: tuple[str, ...] = ()
    if contract is not None and reference is not None:
        predicted_long, predicted_short = long_rows[~_refused(long_rows)], short_rows[~_refused(short_rows)]
        long.measures["drifted_features"], drifted = input_drift(predicted_long, contract, reference)
        short.measures["drifted_features"], _ = input_drift(predicted_short, contract, reference)
    for window in (long, short):
        window.measures.update(system or {})
    return long, short, drifted


def baseline_of(registered: dict[str, float], history: pd.DataFrame | None = None) -> dict[str, float]:
    """Baselines of the metrics: the champion's registered figures (error rate = 1 - accuracy,
    as the rollback decision reads it), latency from the median of past sweeps when not registered.

    Example:
        >>> baseline_of({"accuracy": 0.9})
        {'error_rate': 0.1}
    """
    baseline = {metric: value for metric in ("error_rate", *HISTORY_BASELINE_METRICS) if (value := baseline_value(metric, registered)) is not None}
    if history is not None:
        for metric in HISTORY_BASELINE_METRICS:
            past = history[metric].dropna() if metric in history else pd.Series(dtype=float)
            if metric not in baseline and len(past) >= MIN_HISTORY_SWEEPS:
                baseline[metric] = float(past.median())
    return baseline


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
            "metrics": self.long.to_dict(), "short_metrics": self.short.to_dict(), "baseline": self.baseline,
            "window_minutes": {"long": self.long.minutes, "short": self.short.minutes}, "version": self.version,
            "breaches": [breach.rule for breach in self.breaches], "severity": self.severity.value if self.severity else None,
            "drifted_features": list(self.drifted_features), "notes": list(self.notes), "at": self.at.isoformat(),
            "serving": self.serving.value if self.serving else None,
            "serving_since": self.serving_since.isoformat() if self.serving_since else None, "rows_left_out": self.rows_left_out,
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
        ...     at = datetime(2026, 1, 1, 10, minute, tzinfo=timezone.utc)
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
            notes.append(f"v{version} took @{registry.champion_alias} outside the audit: its window starts after the last row another version answered")
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
        >>> serving_rows(frame, "2", datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))[0]["version"].tolist()
        ['2', '9', '2']
    """
    if version is None or frame.empty:
        return frame, since
    other = ((frame["answered_by"].astype(object) == Responder.PRIMARY) & (frame["version"].astype(str) != str(version))).to_numpy()
    stamps = frame["timestamp"]
    if since is not None:
        start = pd.Timestamp(since)
        start = start.tz_localize(timezone.utc) if start.tzinfo is None else start
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
    model: str, log: InferenceLog, policy: MonitoringPolicy, registry: ModelRegistry, *, now: datetime,
    checks: HealthCheck | None = None, system: dict[str, Measure] | None = None,
    contract: DataContract | None = None, reference: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
) -> ModelHealth:
    """Measure and judge one model at `now`, on the window of the version that serves (`serving_rows`).

    Raises:
        MonitoringError: the champion cannot be read.
        InferenceLogError: the inference log cannot be read.
    """
    serving = read_serving(registry)
    logged = log.read_window(model, now - timedelta(minutes=policy.long_window_minutes), now, labelled_only=False)
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
        model, serving.version, now, long, short, baseline, breaches, drifted, tuple(notes), rule_limits(policy, baseline),
        serving.serving, began, left_out,
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


def escalated(breaches) -> list:
    """Per metric, only its most severe breach: an error rate past the emergency line is not also a
    warning and a critical, or one sweep would start a diagnosis, a rollback and an emergency stop
    at once, racing each other for the champion alias."""
    order = list(Severity)
    kept: dict[str, object] = {}
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
    row = pd.DataFrame([{
        "at": pd.Timestamp(health.at), "version": health.version, "severity": health.severity.value if health.severity else None,
        "breaches": ",".join(breach.rule for breach in health.breaches), **health.long.to_dict(),
        "serving": health.serving.value if health.serving else None,
        "serving_since": health.serving_since.isoformat() if health.serving_since else None, "rows_left_out": health.rows_left_out,
        **{f"limit:{key}": value for key, value in health.limits.items()},
    }])
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
    log: InferenceLog, now: datetime, minutes: float, model_names: Iterable[str] | None = None, model_name: str | None = None,
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
    models = log.models(now - timedelta(minutes=minutes), now)
    if not any(is_drill_model(model) for model in models):
        return models  # the usual case: one query
    recent = set(log.models(now - timedelta(minutes=drill_minutes), now)) if drill_minutes else set()
    return [model for model in models if not is_drill_model(model) or model in recent]


def load_drift_reference(policy: MonitoringPolicy) -> tuple[DataContract | None, pd.DataFrame | None]:
    """The policy's contract and its reference; (None, None) when no contract is named.

    Raises:
        MonitoringError: the contract names no reference_uri.
    """
    if not policy.contract_block:
        return None, None
    contract = DataContract.load(policy.contract_block)
    if not contract.reference_uri:
        raise MonitoringError(f"data contract {policy.contract_block!r} has no reference_uri: drift needs one (or drop contract_block from the policy)")
    return contract, load_reference(contract.reference_uri)


@task(name="sweep-model", cache_policy=NO_CACHE)
def sweep_model_task(
    model: str, log: InferenceLog, policy: MonitoringPolicy, *, now: datetime, system: dict[str, Measure] | None = None,
    contract: DataContract | None = None, reference: pd.DataFrame | None = None,
    registry_for: Callable[[str], ModelRegistry] | None = None, timeline: Timeline | None = None,
) -> ModelHealth:
    """Sweep one model, report it (events, history) and log one line."""
    registry = (registry_for or (lambda name: ModelRegistry(model_name=name)))(model)
    history = metric_history(model)
    health = sweep_model(model, log, policy, registry, now=now, system=system, contract=contract, reference=reference, history=history)
    report_health(health, timeline or Timeline())
    append_history(health, policy.history_sweeps)
    get_run_logger().info(health.line())
    return health

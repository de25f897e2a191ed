"""Diagnostics of a degraded model (seed slide 8), as a plain function.

`diagnose(...)` answers "what is wrong, where, since when, and what to do":
confusion matrix and per-class figures (or regression errors), calibration,
error over time with the window where it changed most, feature slices whose
error is significantly above the rest, drift against a reference, and
recommendations derived from those findings by explicit rules, each naming the
findings behind it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from itertools import pairwise

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import confusion_matrix, mean_absolute_error, mean_squared_error, precision_recall_fscore_support, r2_score

from prefect_crisis.tasks.validation.drift import DriftSettings, FeatureDrift, dataframe_drift


class Action(str, Enum):
    """What a recommendation asks for."""

    RETRAIN_ON_RECENT_DATA = "retrain-on-recent-data"
    ROLL_BACK = "roll-back"
    ROUTE_TO_FALLBACK = "route-to-fallback"
    INVESTIGATE_DATA = "investigate-data"
    RECALIBRATE = "recalibrate"


@dataclass(frozen=True)
class ClassFigures:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class TimeWindow:
    start: str
    end: str
    rows: int
    error_rate: float


@dataclass(frozen=True)
class SliceFinding:
    """A feature slice whose error rate is significantly above the rest's."""

    feature: str
    slice: str
    rows: int
    error_rate: float
    rest_error_rate: float
    z: float
    p_value: float


@dataclass(frozen=True)
class Recommendation:
    action: Action
    reason: str
    findings: tuple[str, ...]


@dataclass(frozen=True)
class OperationalContext:
    """What the monitoring knows beyond the labels (all optional)."""

    new_version_since: datetime | None = None
    baseline_error_rate: float | None = None  # what the serving version showed before it went live
    latency_p95_ms: float | None = None
    latency_baseline_p95_ms: float | None = None
    memory_percent: float | None = None


@dataclass(frozen=True)
class DiagnosticReport:
    kind: str  # "classification" or "regression"
    rows: int
    error_rate: float | None = None
    labels: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()
    per_class: tuple[ClassFigures, ...] = ()
    regression: dict[str, float] = field(default_factory=dict)
    expected_calibration_error: float | None = None
    error_over_time: tuple[TimeWindow, ...] = ()
    change_window: TimeWindow | None = None
    change: float | None = None
    slices: tuple[SliceFinding, ...] = ()
    drift: dict[str, FeatureDrift] = field(default_factory=dict)
    recommendations: tuple[Recommendation, ...] = ()

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, figures in self.drift.items() if figures.drifted]

    @property
    def shown_error_rate(self) -> str:
        """The error rate as a percentage; a regression report has none (its errors are in `regression`).

        Example:
            >>> DiagnosticReport("classification", 4, error_rate=0.25).shown_error_rate, DiagnosticReport("regression", 4).shown_error_rate
            ('25.00%', 'n/a (regression)')
        """
        return "n/a (regression)" if self.error_rate is None else f"{self.error_rate:.2%}"

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload["drift"] = {name: figures.to_dict() for name, figures in self.drift.items()}
        payload["drifted_features"] = self.drifted_features
        return payload


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> float:
    """Share-weighted gap between confidence and accuracy over confidence bins.

    Example:
        >>> expected_calibration_error(np.array([1, 1, 0, 0]), np.array([0.9, 0.9, 0.9, 0.9]))
        0.4
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return round(float(gap), 12)


def error_over_time(errors: np.ndarray, timestamps: pd.Series, windows: int) -> tuple[list[TimeWindow], TimeWindow | None, float | None]:
    """Error rate per equal-width time window, and the window where it moved most."""
    times = pd.to_datetime(timestamps, utc=True).reset_index(drop=True).dt.as_unit("ns")
    edges = pd.date_range(times.min(), times.max(), periods=windows + 1).as_unit("ns")
    which = np.clip(np.searchsorted(edges.asi8[1:-1], times.array.asi8, side="right"), 0, windows - 1)
    found = []
    for w in range(windows):
        members = which == w
        if members.any():
            found.append(TimeWindow(str(edges[w]), str(edges[w + 1]), int(members.sum()), float(errors[members].mean())))
    if len(found) < 2:
        return found, None, None
    jumps = [abs(b.error_rate - a.error_rate) for a, b in pairwise(found)]
    most = int(np.argmax(jumps))
    return found, found[most + 1], float(found[most + 1].error_rate - found[most].error_rate)


def _slices_of(values: pd.Series, bins: int) -> tuple[np.ndarray, list[str]]:
    """Slice codes (-1: missing) and names: quantile bins of a numeric feature, else its values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > bins:
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        finite = np.isfinite(numbers)
        edges = np.unique(np.quantile(numbers[finite], np.linspace(0, 1, bins + 1)))
        codes = np.clip(np.searchsorted(edges[1:-1], numbers, side="right"), 0, len(edges) - 2)
        names = [f"[{low:.3g}, {high:.3g}{']' if i == len(edges) - 2 else ')'}" for i, (low, high) in enumerate(pairwise(edges))]
        return np.where(finite, codes, -1), names
    codes, uniques = pd.factorize(values)
    return codes, [str(u) for u in uniques]


def error_slices(errors: np.ndarray, features: pd.DataFrame, *, bins: int = 5, alpha: float = 0.01, min_rows: int = 30) -> list[SliceFinding]:
    """Slices with an error rate significantly above the rest of the rows.

    Two-proportion z-test of each slice against the rows outside it, one-sided,
    Bonferroni-corrected over all slices tested. Worst (largest z) first.
    """
    total_errors, total_rows = float(errors.sum()), len(errors)
    pooled = total_errors / total_rows if total_rows else 0.0
    tests: list[SliceFinding] = []
    for feature in features.columns:
        codes, names = _slices_of(features[feature].reset_index(drop=True), bins)
        present = codes >= 0
        rows = np.bincount(codes[present], minlength=len(names))
        slice_errors = np.bincount(codes[present], weights=errors[present], minlength=len(names))
        rest_rows = total_rows - rows
        testable = (rows >= min_rows) & (rest_rows >= min_rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = slice_errors / rows
            rest_rate = (total_errors - slice_errors) / rest_rows
            spread = np.sqrt(pooled * (1 - pooled) * (1 / rows + 1 / rest_rows))
            z = np.where(spread > 0, (rate - rest_rate) / spread, 0.0)
        for index in np.flatnonzero(testable):
            tests.append(
                SliceFinding(
                    str(feature),
                    names[index],
                    int(rows[index]),
                    float(rate[index]),
                    float(rest_rate[index]),
                    float(z[index]),
                    float(stats.norm.sf(z[index])),
                )
            )
    cutoff = alpha / max(len(tests), 1)
    return sorted((t for t in tests if t.p_value < cutoff and t.z > 0), key=lambda t: -t.z)


def recommend(report: DiagnosticReport, context: OperationalContext) -> list[Recommendation]:
    """Recommendations by explicit rules; each names the findings behind it."""
    found: list[Recommendation] = []
    drifted = set(report.drifted_features)
    slice_features = {s.feature for s in report.slices}
    overlap = sorted(drifted & slice_features)
    if overlap:
        found.append(
            Recommendation(
                Action.RETRAIN_ON_RECENT_DATA,
                f"errors concentrate in slices of drifted feature(s) {overlap}: the model has not seen this data",
                tuple(f"drift:{name}" for name in overlap) + tuple(f"slice:{s.feature}={s.slice}" for s in report.slices if s.feature in overlap),
            )
        )
    elif drifted:
        found.append(
            Recommendation(
                Action.INVESTIGATE_DATA,
                f"features {sorted(drifted)} drifted but errors do not follow them",
                tuple(f"drift:{name}" for name in sorted(drifted)),
            )
        )
    rose_in_window = report.change_window is not None and (report.change or 0) > 0
    above_baseline = (
        context.baseline_error_rate is not None and report.error_rate is not None and report.error_rate > context.baseline_error_rate + 0.05
    )
    if not drifted and context.new_version_since is not None and (rose_in_window or above_baseline):
        evidence = (
            f"errors rose by {report.change:.1%}"
            if rose_in_window and not above_baseline
            else f"error rate {report.error_rate:.1%} vs {context.baseline_error_rate:.1%} before it went live"
        )
        found.append(
            Recommendation(
                Action.ROLL_BACK,
                f"no drift, but a new version serves since {context.new_version_since.isoformat()} and {evidence}",
                ("no-drift", f"new-version:{context.new_version_since.isoformat()}", "error-rise"),
            )
        )
    slow = (
        context.latency_p95_ms is not None
        and context.latency_baseline_p95_ms is not None
        and context.latency_p95_ms > 1.5 * context.latency_baseline_p95_ms
    )
    if slow and context.memory_percent is not None and context.memory_percent >= 85:
        found.append(
            Recommendation(
                Action.ROUTE_TO_FALLBACK,
                f"p95 latency {context.latency_p95_ms:.0f} ms vs {context.latency_baseline_p95_ms:.0f} ms with memory at {context.memory_percent:.0f}%",
                ("latency", "memory-pressure"),
            )
        )
    if report.expected_calibration_error is not None and report.expected_calibration_error > 0.1:
        found.append(Recommendation(Action.RECALIBRATE, f"expected calibration error {report.expected_calibration_error:.3f}", ("calibration",)))
    return found


def diagnose(
    y_true,
    y_pred,
    proba=None,
    features: pd.DataFrame | None = None,
    timestamps=None,
    reference: pd.DataFrame | None = None,
    *,
    context: OperationalContext | None = None,
    windows: int = 10,
    slice_bins: int = 5,
    alpha: float = 0.01,
    drift_settings: DriftSettings | None = None,
) -> DiagnosticReport:
    """Diagnose a model from labelled predictions.

    Classification when predictions are labels (any dtype but float), else
    regression; for regression, a row counts as an error when its absolute
    error is above the median absolute error's 3x (slices and time windows use that).

    Example:
        >>> report = diagnose(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
        >>> report.kind, report.error_rate, report.confusion
        ('classification', 0.25, ((2, 0), (1, 1)))
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    regression = y_pred.dtype.kind == "f" and len(np.unique(y_pred)) > max(20, len(y_pred) // 10)
    figures: dict = {"rows": len(y_true)}
    if regression:
        absolute = np.abs(y_true - y_pred)
        errors = absolute > 3 * np.median(absolute) if np.median(absolute) > 0 else absolute > 0
        figures.update(
            kind="regression",
            regression={
                "mae": float(mean_absolute_error(y_true, y_pred)),
                "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
                "r2": float(r2_score(y_true, y_pred)),
            },
        )
    else:
        errors = y_true != y_pred
        labels = np.unique(np.concatenate([y_true, y_pred]))
        precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        figures.update(
            kind="classification",
            error_rate=float(errors.mean()),
            labels=tuple(str(label) for label in labels),
            confusion=tuple(tuple(int(v) for v in row) for row in confusion_matrix(y_true, y_pred, labels=labels)),
            per_class=tuple(
                ClassFigures(str(lab), float(p), float(r), float(f), int(s))
                for lab, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
            ),
        )
        if proba is not None:
            figures["expected_calibration_error"] = expected_calibration_error(~errors, np.asarray(proba).max(axis=1))
    errors = errors.astype(float)
    if timestamps is not None:
        windows_found, change_window, change = error_over_time(errors, pd.Series(timestamps), windows)
        figures.update(error_over_time=tuple(windows_found), change_window=change_window, change=change)
    if features is not None:
        figures["slices"] = tuple(error_slices(errors, features, bins=slice_bins, alpha=alpha))
        if reference is not None:
            figures["drift"] = dataframe_drift(reference, features, drift_settings)
    report = DiagnosticReport(**figures)
    return DiagnosticReport(**{**figures, "recommendations": tuple(recommend(report, context or OperationalContext()))})

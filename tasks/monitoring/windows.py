"""Windows of the inference log, as plain functions over plain data: a window frame (as `read_window` returns
it) cut into the long window, the short one and the short window of the labelled rows, and every model and data
metric measured over each (the champion's rows apart from the fallback's), with the baselines they are judged
against. Reading the log, the registry and the host is tasks/monitoring/sweep.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.tasks.monitoring.health_rules import Measure, WindowMetrics
from prefect_crisis.tasks.response.rules import baseline_value
from prefect_crisis.tasks.serving.log_store import ERROR_ROW_ID, LOG_COLUMNS
from prefect_crisis.tasks.validation.column_checks import checks_drift
from prefect_crisis.tasks.validation.drift import DriftKind, DriftSettings, frame_drift

if TYPE_CHECKING:
    from prefect_crisis.blocks.contract import DataContract
    from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy

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
    wrong = int(sum(label != prediction for label, prediction in zip(labelled["label"], labelled["prediction"], strict=True)))
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


def input_drift(frame: pd.DataFrame, contract: DataContract, reference: pd.DataFrame) -> tuple[Measure, tuple[str, ...]]:
    """How many of the contract's drift-checked features drifted in the window's inputs against the
    reference (the validation step's drift code and settings), and which."""
    specs = [spec for spec in contract.columns if checks_drift(spec, contract) and spec.name in frame.columns and spec.name in reference.columns]
    kinds: dict[str, DriftKind] = {spec.name: "numeric" if spec.is_numeric else "categorical" for spec in specs}
    columns: dict[str, Callable[[], pd.Series]] = {name: functools.partial(frame.__getitem__, name) for name in kinds}
    drift = frame_drift(reference, columns, kinds, DriftSettings.from_contract(contract))
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
    frame: pd.DataFrame,
    now: datetime,
    policy: MonitoringPolicy,
    *,
    system: dict[str, Measure] | None = None,
    contract: DataContract | None = None,
    reference: pd.DataFrame | None = None,
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

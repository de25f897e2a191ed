"""The inference log, as serving and the crisis response use it.

Serving hands each predict call to an `InferenceLogWriter` (from
`InferenceLog.writer()`) as a `PredictionBatch`, or a refused request as a
`RequestError`; the writer, its spool and the tables live with the block in
`prefect_crisis.blocks` (blocks come before tasks in the layers, and the block
makes the writer), and are re-exported here.

The crisis response reads its labelled window here when no file is given:
one call, for a model and the last `minutes`. The window keeps each request's
latency in the column `latency_ms` (LATENCY_COLUMN) on the request's first row
only, so `latencies_of(window)` are per-request samples, as the monitor counts
them; it is not a feature (drop it before scoring or slicing by features).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.inference_store import LOG_COLUMNS
from prefect_crisis.blocks.inference_writer import InferenceLogWriter, LogStats, PredictionBatch, RequestError
from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.core.timeline import utc_now
from prefect_crisis.core.vocabulary import Responder

__all__ = [
    "InferenceLog", "InferenceLogWriter", "LogStats", "PredictionBatch", "RequestError",
    "LATENCY_COLUMN", "labelled_window", "latencies_of", "read_labelled_window", "request_latency",
]

LATENCY_COLUMN = "latency_ms"  # the labelled window's latency column (ms, per request; see request_latency)


def request_latency(window: pd.DataFrame, version: str | None = None) -> pd.Series:
    """Per row of a read window (`InferenceLog.read_window`): its request's latency on the request's first
    row, NaN on its other rows; with `version`, NaN too on requests the primary at `version` answered no row of
    (a previous champion's or the fallback's latency is not this version's).

    Example:
        >>> window = pd.DataFrame({"request_id": ["a", "a", "b", "c"], "latency_ms": [12.0, 12.0, 30.0, 8.0],
        ...                        "answered_by": ["primary", "fallback", "primary", "fallback"], "version": ["2", "9", "1", "9"]})
        >>> request_latency(window).tolist()
        [12.0, nan, 30.0, 8.0]
        >>> request_latency(window, version="2").tolist()
        [12.0, nan, nan, nan]
    """
    keep = ~window["request_id"].duplicated()
    if version is not None:
        answered = (window["answered_by"].astype(object) == Responder.PRIMARY) & (window["version"].astype(str) == str(version))
        keep &= window["request_id"].isin(set(window.loc[answered, "request_id"]))
    return window["latency_ms"].astype(float).where(keep)


def latencies_of(window: pd.DataFrame) -> tuple[float, ...]:
    """The per-request latency samples (ms) of a labelled window, for a `LiveWindow`; () without the column.

    Example:
        >>> latencies_of(pd.DataFrame({"label": [1, 0, 1], LATENCY_COLUMN: [12.0, float("nan"), 30.0]}))
        (12.0, 30.0)
    """
    if LATENCY_COLUMN not in window.columns:
        return ()
    return tuple(float(value) for value in window[LATENCY_COLUMN].to_numpy(dtype=float) if not np.isnan(value))


def labelled_window(
    log: InferenceLog, model: str, minutes: float, label_column: str = "label", now: datetime | None = None,
    *, latency_version: str | None = None,
) -> pd.DataFrame:
    """The labelled rows of `model` from the last `minutes`: its features, `label_column`, `timestamp`
    and `latency_ms` (LATENCY_COLUMN: the request's latency on its first labelled row, NaN elsewhere;
    with `latency_version`, only on requests the primary at that version answered), as a window file
    would hold them (the log's other columns left out).

    Raises:
        DataInputError: no labelled prediction in that window (EMPTY_FRAME).
        InferenceLogError: the log's database cannot be read.
    """
    end = now or utc_now()
    start = end - timedelta(minutes=minutes)
    window = log.read_window(model, start, end, labelled_only=True)
    if window.empty:
        raise DataInputError(
            InputErrorReason.EMPTY_FRAME,
            f"no labelled predictions of {model!r} in the inference log {log.display_url} between {start:%Y-%m-%d %H:%M:%S} "
            f"and {end:%Y-%m-%d %H:%M:%S} UTC: record labels (InferenceLog.record_labels), widen window_minutes, or pass window_path",
        )
    latency = request_latency(window, latency_version)
    window = window.drop(columns=[name for name in LOG_COLUMNS if name not in ("label", "timestamp")])
    window[LATENCY_COLUMN] = latency
    return window.rename(columns={"label": label_column}) if label_column != "label" else window


@task(name="read-labelled-window", cache_policy=NO_CACHE)
def read_labelled_window(
    log_block: str | None, model: str, minutes: float, label_column: str = "label", now: datetime | None = None,
    latency_version: str | None = None,
) -> pd.DataFrame:
    """`labelled_window` from the InferenceLog block named `log_block` (the default log when None)."""
    log = InferenceLog.load(log_block) if log_block else InferenceLog()
    window = labelled_window(log, model, minutes, label_column, now=now, latency_version=latency_version)
    get_run_logger().info(
        "labelled window: %d rows of %r from the last %g minutes of %s, %d latency samples",
        len(window), model, minutes, log.display_url, len(latencies_of(window)),
    )
    return window

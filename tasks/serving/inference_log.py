"""The inference log, as serving and the crisis response use it.

Serving hands each predict call to an `InferenceLogWriter` (from
`open_inference_log(block)`) as a `PredictionBatch`, or a refused request as a
`RequestError`. The InferenceLog block is configuration only; the writer
(`log_writer`), its spool (`log_spool`), the tables (`log_store`) and the
database calls (`log_database`) are serving's, Prefect-free, and re-exported
here. Labels go in with `record_labels(block, keys, labels)`, rows come out
with `read_window(block, model, start, end)`.

Example:
    ```python
    log = InferenceLog(url="sqlite:////tmp/inference.db")
    writer = open_inference_log(log)
    writer.submit(PredictionBatch(...))        # on the request path: O(1), never raises
    writer.flush()
    record_labels(log, ["req-1"], [1])         # later, when the truth is known
    window = read_window(log, "churn", start=an_hour_ago)   # features, label, prediction, reason, ...
    ```

The crisis response reads its labelled window here when no file is given:
one call, for a model and the last `minutes`. The window keeps each request's
latency in the column `latency_ms` (LATENCY_COLUMN) on the request's first row
only, so `latencies_of(window)` are per-request samples, as the monitor counts
them; it is not a feature (drop it before scoring or slicing by features).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.core.paths import validate_model_name
from prefect_crisis.core.timeline import Timeline, utc_now
from prefect_crisis.core.vocabulary import CrisisEvent, Responder
from prefect_crisis.tasks.loading import saved_block
from prefect_crisis.tasks.serving.log_database import label_spool_folder, read_models, read_rows, store_labels, writer_for
from prefect_crisis.tasks.serving.log_store import LOG_COLUMNS
from prefect_crisis.tasks.serving.log_writer import InferenceLogWriter, LogStats, PredictionBatch, RequestError

__all__ = [
    "LATENCY_COLUMN",
    "InferenceLog",
    "InferenceLogWriter",
    "LogStats",
    "PredictionBatch",
    "RequestError",
    "labelled_window",
    "latencies_of",
    "logged_models",
    "open_inference_log",
    "read_labelled_window",
    "read_window",
    "record_labels",
    "request_latency",
]

LATENCY_COLUMN = "latency_ms"  # the labelled window's latency column (ms, per request; see request_latency)


def open_inference_log(log: InferenceLog, clock: Callable[[], float] = time.monotonic) -> InferenceLogWriter:
    """A writer on the log's database, on its own background thread; records spooled by an earlier process are
    flushed once the database answers. `clock`: monotonic seconds for the retry schedule (tests)."""
    return writer_for(log.settings(), clock)


def record_labels(log: InferenceLog, keys: Iterable[Any], labels: Iterable[Any], *, emit: bool = True, timeline: Timeline | None = None) -> int:
    """Record true labels; returns how many. A key is a request id (the label applies to every row of that
    request) or a (request_id, row_id) pair. A label may come before or after its prediction is written; a
    second label for the same key replaces the first.

    With `emit`, one `ml.labels.recorded` per model whose logged predictions got labels (payload: `rows`
    labelled, `requests`, `labels`), so an automation can run the health monitor for that model at once;
    labels of predictions not logged yet emit nothing. `timeline`: where the events go (default: Prefect events).

    While the log's database is down the labels are spooled to disk like predictions (a warning says where) and
    written, after the labels spooled before them, by the next `record_labels` or a serving writer of the same log
    once the database answers; the health monitor's next sweep reads them.

    Raises:
        InferenceLogError: not one label per key, or the database is down and the label spool cannot keep them all.
    """
    settings = log.settings()
    stored = store_labels(settings, keys, labels, utc_now().replace(tzinfo=None), by_model=emit)
    if stored.spooled:
        try:
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except MissingContextError:  # outside a flow run: the inference log's own logger (serving's)
            logger = logging.getLogger("prefect_crisis.inference_log")
        logger.warning(
            "inference log %s is down: %d labels spooled to %s (%d of %d waiting there); they are written when it answers",
            settings.display_url,
            stored.spooled,
            label_spool_folder(settings),
            stored.in_spool,
            settings.spool_max_records,
        )
    timeline = timeline or Timeline()
    for model, figures in stored.covered.items():
        timeline.emit(CrisisEvent.LABELS_RECORDED, model, figures)
    return stored.count


def logged_models(log: InferenceLog, start: datetime | None = None, end: datetime | None = None) -> list[str]:
    """The models with records received in [start, end) (UTC; naive means UTC), sorted."""
    return read_models(log.settings(), start, end)


def read_window(
    log: InferenceLog, model: str, start: datetime | None = None, end: datetime | None = None, *, labelled_only: bool = True
) -> pd.DataFrame:
    """The rows of `model` received in [start, end) (UTC; naive means UTC), oldest first: the input features
    expanded back from JSON, then `label`, `timestamp` (when the request arrived), `prediction`, `answered_by`,
    `version`, `confidence`, `latency_ms`, `error`, `reason` (why the fallback answered the row), `request_id`,
    `row_id`. `labelled_only` keeps the rows that have a label (refused requests left out)."""
    validate_model_name(model)
    return read_rows(log.settings(), model, start, end, labelled_only=labelled_only)


def request_latency(window: pd.DataFrame, version: str | None = None) -> pd.Series:
    """Per row of a read window (`read_window`): its request's latency on the request's first
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
    log: InferenceLog,
    model: str,
    minutes: float,
    label_column: str = "label",
    now: datetime | None = None,
    *,
    latency_version: str | None = None,
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
    window = read_window(log, model, start, end, labelled_only=True)
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
    log_block: str | None,
    model: str,
    minutes: float,
    label_column: str = "label",
    now: datetime | None = None,
    latency_version: str | None = None,
) -> pd.DataFrame:
    """`labelled_window` from the InferenceLog block named `log_block` (the default log when None)."""
    log = saved_block(InferenceLog, log_block) if log_block else InferenceLog()
    window = labelled_window(log, model, minutes, label_column, now=now, latency_version=latency_version)
    get_run_logger().info(
        "labelled window: %d rows of %r from the last %g minutes of %s, %d latency samples",
        len(window),
        model,
        minutes,
        log.display_url,
        len(latencies_of(window)),
    )
    return window

"""The inference log, as serving and the crisis response use it.

Serving hands each predict call to an `InferenceLogWriter` (from
`InferenceLog.writer()`) as a `PredictionBatch`, or a refused request as a
`RequestError`; the writer, its spool and the tables live with the block in
`prefect_crisis.blocks` (blocks come before tasks in the layers, and the block
makes the writer), and are re-exported here.

The crisis response reads its labelled window here when no file is given:
one call, for a model and the last `minutes`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.inference_store import LOG_COLUMNS
from prefect_crisis.blocks.inference_writer import InferenceLogWriter, LogStats, PredictionBatch, RequestError
from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.core.timeline import utc_now

__all__ = [
    "InferenceLog", "InferenceLogWriter", "LogStats", "PredictionBatch", "RequestError",
    "labelled_window", "read_labelled_window",
]


def labelled_window(
    log: InferenceLog, model: str, minutes: float, label_column: str = "label", now: datetime | None = None
) -> pd.DataFrame:
    """The labelled rows of `model` from the last `minutes`: its features, `label_column` and
    `timestamp`, as a window file would hold them (the log's other columns left out).

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
    window = window.drop(columns=[name for name in LOG_COLUMNS if name not in ("label", "timestamp")])
    return window.rename(columns={"label": label_column}) if label_column != "label" else window


@task(name="read-labelled-window", cache_policy=NO_CACHE)
def read_labelled_window(
    log_block: str | None, model: str, minutes: float, label_column: str = "label", now: datetime | None = None
) -> pd.DataFrame:
    """`labelled_window` from the InferenceLog block named `log_block` (the default log when None)."""
    log = InferenceLog.load(log_block) if log_block else InferenceLog()
    window = labelled_window(log, model, minutes, label_column, now=now)
    get_run_logger().info("labelled window: %d rows of %r from the last %g minutes of %s", len(window), model, minutes, log.display_url)
    return window

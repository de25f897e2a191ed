"""The inference log's database, opened from an InferenceLog's plain settings: the engine, the writer,
labels in, rows and models out. Prefect-free (the block hands over `InferenceLogSettings`); the
functions serving and monitoring call with the block are in `prefect_crisis.tasks.serving.inference_log`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from prefect_crisis.core.errors import InferenceLogError
from prefect_crisis.tasks.serving.log_store import (
    create_tables,
    label_rows,
    labelled_by_model,
    models_query,
    upsert_labels,
    window_frame,
    window_query,
)
from prefect_crisis.tasks.serving.log_writer import InferenceLogWriter

if TYPE_CHECKING:
    from prefect_crisis.blocks.inference_log import InferenceLogSettings

# A database that cannot be reached or answered in time: reported as an InferenceLogError.
UNREACHABLE = (sa_exc.DBAPIError, sa_exc.TimeoutError)


def database_engine(settings: InferenceLogSettings) -> Engine:
    """A new engine on the log's database (nothing connects until it is used)."""
    url = make_url(settings.url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        connect_args["timeout"] = settings.timeout_seconds
        if settings.home is not None:
            settings.home.mkdir(parents=True, exist_ok=True)
    elif url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        connect_args["connect_timeout"] = max(1, math.ceil(settings.timeout_seconds))
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def writer_for(settings: InferenceLogSettings, clock: Callable[[], float] = time.monotonic) -> InferenceLogWriter:
    """A writer on its own background thread; records spooled by an earlier process are flushed once the
    database answers. `clock`: monotonic seconds for the retry schedule (tests)."""
    return InferenceLogWriter(
        database_engine(settings),
        settings.spool_folder,
        spool_max_records=settings.spool_max_records,
        batch_rows=settings.batch_rows,
        flush_seconds=settings.flush_seconds,
        retry_seconds=settings.retry_seconds,
        clock=clock,
        display_url=settings.display_url,
        secrets=settings.secrets,
    )


def failure(settings: InferenceLogSettings, doing: str, error: BaseException) -> InferenceLogError:
    """One line: what could not be done to which log (masked), the database's own first line, what to check."""
    cause = getattr(error, "orig", None) or error
    detail = (str(cause).strip().splitlines() or ["no detail"])[0]
    for secret in settings.secrets:
        detail = detail.replace(secret, "***")
    return InferenceLogError(
        f"cannot {doing} the inference log {settings.display_url}: {type(cause).__name__}: {detail} "
        "(check that the database is up and the URL and password are right)"
    )


def store_labels(
    settings: InferenceLogSettings,
    keys: Iterable[Any],
    labels: Iterable[Any],
    labelled_at: datetime,
    *,
    by_model: bool = True,
) -> tuple[int, dict[str, dict[str, int]]]:
    """Write labels (see `record_labels`): how many, and with `by_model` what they cover per model in the
    logged predictions (`labelled_by_model`; empty without).

    Raises:
        InferenceLogError: not one label per key, or the database cannot be written.
    """
    keys, labels = list(keys), list(labels)
    if len(keys) != len(labels):
        raise InferenceLogError(f"{len(keys)} keys but {len(labels)} labels: give one label per key")
    rows = label_rows(keys, labels, labelled_at)
    engine = database_engine(settings)
    try:
        with engine.begin() as connection:
            create_tables(connection)
            upsert_labels(connection, rows)
            covered = labelled_by_model(connection, rows) if by_model else {}
    except UNREACHABLE as error:
        raise failure(settings, "write labels to", error) from None
    finally:
        engine.dispose()
    return len(rows), covered


def read_models(settings: InferenceLogSettings, start: datetime | None = None, end: datetime | None = None) -> list[str]:
    """The models with records received in [start, end) (UTC; naive means UTC), sorted."""
    engine = database_engine(settings)
    try:
        with engine.begin() as connection:
            create_tables(connection)
            return [model for (model,) in connection.execute(models_query(start, end))]
    except UNREACHABLE as error:
        raise failure(settings, "read", error) from None
    finally:
        engine.dispose()


def read_rows(
    settings: InferenceLogSettings,
    model: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    labelled_only: bool = True,
) -> pd.DataFrame:
    """The rows of `model` received in [start, end) as `window_frame` lays them out (see `read_window`)."""
    engine = database_engine(settings)
    try:
        with engine.begin() as connection:
            create_tables(connection)
            records = connection.execute(window_query(model, start, end, labelled_only)).all()
    except UNREACHABLE as error:
        raise failure(settings, "read", error) from None
    finally:
        engine.dispose()
    return window_frame(records)

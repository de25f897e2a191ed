"""The inference log's database, opened from an InferenceLog's plain settings: the engine, the writer,
labels in, rows and models out. Prefect-free (the block hands over `InferenceLogSettings`); the
functions serving and monitoring call with the block are in `prefect_crisis.tasks.serving.inference_log`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from prefect_crisis.core.errors import InferenceLogError
from prefect_crisis.tasks.serving.log_spool import Spool
from prefect_crisis.tasks.serving.log_store import (
    create_tables,
    label_rows,
    labelled_by_model,
    models_query,
    upsert_labels,
    window_frame,
    window_query,
)
from prefect_crisis.tasks.serving.log_writer import InferenceLogWriter, drain_label_spool

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
        label_spool_folder=label_spool_folder(settings),
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


def label_spool_folder(settings: InferenceLogSettings) -> Path:
    """Where labels wait while the log's database is down: beside its predictions' spool, one folder per database."""
    return settings.spool_folder.with_name(settings.spool_folder.name + "-labels")


@dataclass(frozen=True)
class LabelsStored:
    """What `store_labels` did: `count` labels given; `spooled` of them kept on disk because the database is down;
    `covered`: per model, what the labels written now (the spooled earlier ones first) cover in the logged predictions
    (with `by_model`)."""

    count: int
    covered: dict[str, dict[str, int]] = field(default_factory=dict)
    spooled: int = 0
    in_spool: int = 0  # labels waiting in the spool after this call (its bound: the log's spool_max_records)


def spool_labels(settings: InferenceLogSettings, rows: list[dict], error: BaseException) -> tuple[int, int]:
    """Keep labels the database refused on disk until it answers: (how many, how many wait in the spool now).

    Raises:
        InferenceLogError: the spool cannot keep all of them (full, or its folder unusable): record them again later.
    """
    folder = label_spool_folder(settings)
    try:
        spool = Spool(folder, settings.spool_max_records, database=settings.display_url)
        kept, dropped = spool.append(rows)
        spool.close()
    except OSError as spool_error:
        raise InferenceLogError(
            f"{failure(settings, 'write labels to', error)}; the label spool {folder} is unusable too "
            f"({type(spool_error).__name__}): nothing kept, record these {len(rows)} labels again later"
        ) from None
    if dropped:
        raise InferenceLogError(
            f"{failure(settings, 'write labels to', error)}; the label spool {folder} is full ({settings.spool_max_records} "
            f"records): {kept} of {len(rows)} labels kept, record them again later (a label given twice counts once)"
        )
    return kept, spool.records


def store_labels(
    settings: InferenceLogSettings,
    keys: Iterable[Any],
    labels: Iterable[Any],
    labelled_at: datetime,
    *,
    by_model: bool = True,
) -> LabelsStored:
    """Write labels (see `record_labels`), after any the database refused earlier; while it is down they are spooled
    to disk (`label_spool_folder`) and written by the next `store_labels` or by a serving writer once it answers.

    Raises:
        InferenceLogError: not one label per key, or the database is down and the spool cannot keep them.
    """
    keys, labels = list(keys), list(labels)
    if len(keys) != len(labels):
        raise InferenceLogError(f"{len(keys)} keys but {len(labels)} labels: give one label per key")
    rows = label_rows(keys, labels, labelled_at)
    engine = database_engine(settings)
    try:
        earlier = drain_label_spool(label_spool_folder(settings), engine, settings.spool_max_records, settings.display_url)
        with engine.begin() as connection:
            create_tables(connection)
            upsert_labels(connection, rows)
            covered = labelled_by_model(connection, earlier + rows) if by_model else {}
    except UNREACHABLE as error:
        spooled, waiting = spool_labels(settings, rows, error)
        return LabelsStored(len(rows), spooled=spooled, in_spool=waiting)
    finally:
        engine.dispose()
    return LabelsStored(len(rows), covered)


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

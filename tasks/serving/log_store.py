"""The inference log's tables and the SQL that writes and reads them.

Two tables, created on first use: `predictions`, one row per predicted row (or
one per refused request), keyed by (request_id, row_id); `labels`, keyed the
same way and joined on read, so a label may arrive before or after its
prediction. Inserts are idempotent on the key (ON CONFLICT DO NOTHING on
SQLite and PostgreSQL, read-then-insert elsewhere): flushing a spool twice, or
after a write that had partly succeeded, adds no duplicate.

A log made before the `reason` column existed gets it on open (`create_tables`),
so old SQLite and PostgreSQL logs keep working; their old rows read back None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    inspect,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

ERROR_ROW_ID = "*"  # the row id of the one record of a request refused before any prediction
REQUEST_WIDE = "*"  # the row id of a label that applies to every row of its request
KEY_LENGTH = 255
KEY = ("request_id", "row_id")
# Columns of a read window besides the request's features (the log's own columns win a name clash).
LOG_COLUMNS = (
    "label",
    "timestamp",
    "prediction",
    "answered_by",
    "version",
    "confidence",
    "latency_ms",
    "error",
    "reason",
    "request_id",
    "row_id",
)
ADDED_COLUMNS = ("reason",)  # columns later than the first release: added on open to a log that lacks them

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    Column("request_id", String(KEY_LENGTH), primary_key=True),
    Column("row_id", String(KEY_LENGTH), primary_key=True),
    Column("model", String(100), nullable=False),
    Column("received_at", DateTime, nullable=False),  # UTC, stored naive: every dialect keeps it the same way
    Column("position", Integer, nullable=False),  # the row's place in its request, for reading rows back in order
    Column("request_rows", Integer, nullable=False),
    Column("latency_ms", Float),
    Column("features", Text),  # the row as received, JSON
    Column("prediction", Text),  # JSON, so a class keeps its type (1 stays 1, "yes" stays "yes")
    Column("answered_by", String(16), nullable=False),
    Column("version", String(64)),
    Column("confidence", Float),
    Column("error", Text),
    Column("reason", Text),  # why the fallback answered the row (a RouteReason first); None for the primary's rows
    Index("ix_predictions_model_received_at", "model", "received_at"),
)
labels = Table(
    "labels",
    metadata,
    Column("request_id", String(KEY_LENGTH), primary_key=True),
    Column("row_id", String(KEY_LENGTH), primary_key=True),  # REQUEST_WIDE: every row of the request
    Column("label", Text, nullable=False),  # JSON
    Column("labelled_at", DateTime, nullable=False),
)


def create_tables(connection: Connection) -> None:
    """Create both tables and their indexes if they are missing, and the columns an older log lacks."""
    metadata.create_all(connection, checkfirst=True)
    add_missing_columns(connection)


def add_missing_columns(connection: Connection) -> list[str]:
    """Add to `predictions` the ADDED_COLUMNS it lacks (a log written by an earlier release); returns their names.

    Nullable text columns, so the old rows read back None. Two processes opening the same old log at once may both
    try: PostgreSQL's IF NOT EXISTS makes the second a no-op, SQLite's "duplicate column" error is taken as done.
    """
    present = {column["name"] for column in inspect(connection).get_columns(predictions.name)}
    missing = [name for name in ADDED_COLUMNS if name not in present]
    for name in missing:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"ALTER TABLE {predictions.name} ADD COLUMN IF NOT EXISTS {name} TEXT"))
            continue
        try:
            connection.execute(text(f"ALTER TABLE {predictions.name} ADD COLUMN {name} TEXT"))
        except sa_exc.OperationalError as error:
            if "duplicate column" not in str(error).lower():
                raise
    return missing


def utc_naive(when: datetime) -> datetime:
    """`when` in UTC without tzinfo (a naive datetime is taken as UTC already)."""
    if isinstance(when, pd.Timestamp):
        when = when.to_pydatetime()
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def _plain(value: Any) -> Any:
    """What json cannot write itself: numpy scalars and arrays, timestamps, missing values."""
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat()
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(value, default=_plain, separators=(",", ":"))


def key_text(value: Any) -> str:
    return str(value)[:KEY_LENGTH]


def finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plain(values: Any) -> list:
    """A sequence as a list of Python values, missing ones None: serving hands over pandas Series
    (categoricals among them) as they are, and indexing those row by row costs far more than one pass."""
    if isinstance(values, (pd.Series, pd.Categorical, pd.Index, np.ndarray)):
        series = pd.Series(values, copy=False).astype(object)
        return series.where(series.notna(), None).tolist()
    return list(values)


def batch_rows(batch: Any) -> list[dict]:
    """The `predictions` rows of one PredictionBatch (the features as JSON text, one row per input row)."""
    received_at = utc_naive(batch.received_at)
    row_ids, predictions, answered_by = plain(batch.row_ids), plain(batch.predictions), plain(batch.answered_by)
    versions, confidence, errors = plain(batch.versions), plain(batch.confidence), plain(batch.errors)
    given = getattr(batch, "reasons", None)  # a batch made before the reason column has none
    reasons = plain(given) if given is not None else [None] * len(row_ids)
    columns = [str(name) for name in batch.inputs.columns]
    # to_numpy(object) gives Python scalars per row, ten times faster than to_dict("records") on small frames
    records = [dict(zip(columns, values, strict=True)) for values in batch.inputs.to_numpy(dtype=object).tolist()]
    count = len(row_ids)
    rows = []
    for position in range(count):
        prediction = predictions[position]
        rows.append(
            {
                "request_id": key_text(batch.request_id),
                "row_id": key_text(row_ids[position]),
                "model": batch.model,
                "received_at": received_at,
                "position": position,
                "request_rows": count,
                "latency_ms": finite_or_none(batch.latency_ms),
                "features": to_json(records[position]) if position < len(records) else None,
                "prediction": None if prediction is None else to_json(prediction),
                "answered_by": str(answered_by[position]),
                "version": None if versions[position] is None else str(versions[position]),
                "confidence": finite_or_none(confidence[position]),
                "error": errors[position],
                "reason": None if reasons[position] is None else str(reasons[position]),
            }
        )
    return rows


def error_row(error: Any, answered_by: str) -> dict:
    """The one `predictions` row of a RequestError: no features, no prediction, the reason as its error."""
    return {
        "request_id": key_text(error.request_id),
        "row_id": ERROR_ROW_ID,
        "model": error.model,
        "received_at": utc_naive(error.received_at),
        "position": 0,
        "request_rows": int(error.rows),
        "latency_ms": None,
        "features": None,
        "prediction": None,
        "answered_by": answered_by,
        "version": None,
        "confidence": None,
        "error": error.reason,
        "reason": None,
    }


def _unique_keys(rows: Sequence[dict]) -> list[dict]:
    """`rows` with one row per key, the last one winning (an upsert must not touch a row twice in one statement)."""
    return list({(row["request_id"], row["row_id"]): row for row in rows}.values())


def insert_predictions(connection: Connection, rows: Sequence[dict]) -> None:
    """Insert `rows`, leaving alone any whose key is already there."""
    if not rows:
        return
    # Rows spooled by an earlier release lack the later columns; one statement needs the same keys in every row.
    rows = [row if len(row) == len(predictions.c) else {**dict.fromkeys(ADDED_COLUMNS), **row} for row in rows]
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        connection.execute(insert(predictions).on_conflict_do_nothing(index_elements=list(KEY)), list(rows))
        return
    fresh = _unique_keys(rows)
    existing = _existing_keys(connection, predictions, fresh)
    fresh = [row for row in fresh if (row["request_id"], row["row_id"]) not in existing]
    if fresh:
        connection.execute(predictions.insert(), fresh)


def _existing_keys(connection: Connection, table: Table, rows: Sequence[dict]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    keys = [(row["request_id"], row["row_id"]) for row in rows]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        query = select(table.c.request_id, table.c.row_id).where(tuple_(table.c.request_id, table.c.row_id).in_(chunk))
        found.update((request_id, row_id) for request_id, row_id in connection.execute(query))
    return found


def upsert_labels(connection: Connection, rows: Sequence[dict]) -> None:
    """Insert or replace labels by key."""
    rows = _unique_keys(rows)
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(labels)
        statement = insert.on_conflict_do_update(
            index_elements=list(KEY), set_={"label": insert.excluded.label, "labelled_at": insert.excluded.labelled_at}
        )
        connection.execute(statement, rows)
        return
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        connection.execute(delete(labels).where(tuple_(labels.c.request_id, labels.c.row_id).in_([(r["request_id"], r["row_id"]) for r in chunk])))
        connection.execute(labels.insert(), chunk)


def label_rows(keys: Iterable[Any], values: Iterable[Any], labelled_at: datetime) -> list[dict]:
    """`labels` rows from keys (a request id, or a (request_id, row_id) pair) and their labels."""
    rows = []
    for key, value in zip(keys, values, strict=True):
        request_id, row_id = (key[0], key[1]) if isinstance(key, (tuple, list)) else (key, REQUEST_WIDE)
        rows.append({"request_id": key_text(request_id), "row_id": key_text(row_id), "label": to_json(value), "labelled_at": labelled_at})
    return rows


def window_query(model: str, start: datetime | None, end: datetime | None, labelled_only: bool):
    """Rows of `model` received in [start, end), each with its own label, else its request's."""
    by_row, by_request = labels.alias("by_row"), labels.alias("by_request")
    label = func.coalesce(by_row.c.label, by_request.c.label)
    source = predictions.outerjoin(by_row, and_(by_row.c.request_id == predictions.c.request_id, by_row.c.row_id == predictions.c.row_id)).outerjoin(
        by_request, and_(by_request.c.request_id == predictions.c.request_id, by_request.c.row_id == REQUEST_WIDE)
    )
    query = select(predictions, label.label("label")).select_from(source).where(predictions.c.model == model)
    if start is not None:
        query = query.where(predictions.c.received_at >= utc_naive(start))
    if end is not None:
        query = query.where(predictions.c.received_at < utc_naive(end))
    if labelled_only:  # a refused request has no features to judge a model on
        query = query.where(label.is_not(None), or_(predictions.c.row_id != ERROR_ROW_ID, predictions.c.features.is_not(None)))
    return query.order_by(predictions.c.received_at, predictions.c.request_id, predictions.c.position)


def _decoded(texts: Sequence[str | None]) -> list[Any]:
    return [None if text is None else json.loads(text) for text in texts]


def window_frame(records: Sequence[Any]) -> pd.DataFrame:
    """The features expanded back from JSON, then the log's columns (LOG_COLUMNS)."""
    features = pd.DataFrame([json.loads(r.features) if r.features else {} for r in records])
    log = pd.DataFrame(
        {
            "label": _decoded([r.label for r in records]),
            "timestamp": pd.to_datetime([r.received_at for r in records], utc=True),
            "prediction": _decoded([r.prediction for r in records]),
            "answered_by": [r.answered_by for r in records],
            "version": [r.version for r in records],
            "confidence": pd.Series([r.confidence for r in records], dtype="float64"),
            "latency_ms": pd.Series([r.latency_ms for r in records], dtype="float64"),
            "error": [r.error for r in records],
            "reason": [r.reason for r in records],
            "request_id": [r.request_id for r in records],
            "row_id": [r.row_id for r in records],
        }
    )
    features = features.drop(columns=[name for name in features.columns if name in LOG_COLUMNS])
    return pd.concat([features, log], axis=1)


def models_query(start: datetime | None, end: datetime | None):
    """The distinct models with records received in [start, end)."""
    query = select(predictions.c.model).distinct()
    if start is not None:
        query = query.where(predictions.c.received_at >= utc_naive(start))
    if end is not None:
        query = query.where(predictions.c.received_at < utc_naive(end))
    return query.order_by(predictions.c.model)


def labelled_by_model(connection: Connection, rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Per model, what the label rows cover in `predictions`: `rows` (predicted rows labelled: a
    request-wide label covers every row of its request), `requests` and `labels`. Labels whose
    predictions are not logged (yet) belong to no model and are left out."""
    request_ids = sorted({row["request_id"] for row in rows})
    found: dict[str, list[tuple[str, str]]] = {}  # request id -> (row id, model) of its predicted rows
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        query = select(predictions.c.request_id, predictions.c.row_id, predictions.c.model).where(
            predictions.c.request_id.in_(chunk), predictions.c.features.is_not(None)
        )
        for request_id, row_id, model in connection.execute(query):
            found.setdefault(request_id, []).append((row_id, model))
    covered: dict[str, set[tuple[str, str]]] = {}
    labels_of: dict[str, int] = {}
    for row in rows:
        matches = [(row_id, model) for row_id, model in found.get(row["request_id"], []) if row["row_id"] in (REQUEST_WIDE, row_id)]
        for row_id, model in matches:
            covered.setdefault(model, set()).add((row["request_id"], row_id))
        for model in {model for _, model in matches}:
            labels_of[model] = labels_of.get(model, 0) + 1
    return {
        model: {"rows": len(keys), "requests": len({request_id for request_id, _ in keys}), "labels": labels_of[model]}
        for model, keys in sorted(covered.items())
    }

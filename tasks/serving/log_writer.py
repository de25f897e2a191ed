"""The inference log's writer: predictions handed over on the request path,
written in batches by one background thread, spooled to disk while the
database is down, flushed from the spool when it is back.

`submit()` only puts the item on a queue: no conversion, no I/O, no lock held
longer than an addition, and it never raises. Everything else happens on the
writer's daemon thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.tasks.serving.log_spool import Spool
from prefect_crisis.tasks.serving.log_store import batch_rows, create_tables, error_row, insert_predictions, upsert_labels

# A database that is down, unreachable or too slow: the records go to the spool.
DATABASE_DOWN = (sa_exc.DBAPIError, sa_exc.TimeoutError, TimeoutError, ConnectionError)
REPORT_EVERY_SECONDS = 10.0
INSERT_CHUNK_ROWS = 10_000
SPOOL_WARN_AT = (0.5, 0.8, 0.95)  # fractions of the spool's bound at which the writer warns, once each while it fills
LABEL_CHECK_SECONDS = 5.0  # how often a writer looks for labels spooled by `record_labels` while the database was down


@dataclass(frozen=True, eq=False)
class PredictionBatch:
    """One predict call, handed over as is: no per-row work on the request path.

    `inputs` are the request's rows as received (stored per row as JSON text);
    the sequences run along its rows.
    """

    request_id: str
    model: str  # registered model name
    received_at: datetime  # UTC, when the request arrived
    latency_ms: float  # the whole request
    inputs: pd.DataFrame
    row_ids: Sequence[str]  # the input's id column value, else the position "0", "1", ...
    predictions: Sequence[Any]  # None where the row failed
    answered_by: Sequence[str]  # Responder values
    versions: Sequence[str | None]
    confidence: Sequence[float]  # NaN where unknown
    errors: Sequence[str | None]  # None, or the one-line reason a row failed
    reasons: Sequence[str | None] | None = None  # why a row went to the fallback (a RouteReason first); None: not given

    @property
    def rows(self) -> int:
        return len(self.row_ids)


@dataclass(frozen=True)
class RequestError:
    """A request refused before any prediction (bad input): logged as ONE record, answered by none."""

    request_id: str
    model: str
    received_at: datetime
    reason: str
    rows: int


@dataclass(frozen=True)
class LogStats:
    """Records (rows) so far: written to the database directly, spooled to disk, flushed from the
    spool to the database, dropped (spool full, or a record that could not be converted), pending
    (submitted, not yet written or spooled); in_spool: on disk now, waiting for the database."""

    written: int = 0
    spooled: int = 0
    flushed: int = 0
    dropped: int = 0
    pending: int = 0
    in_spool: int = 0


def _records_of(item: Any) -> int:
    return item.rows if isinstance(item, (PredictionBatch, RequestError)) else 1


class InferenceLogWriter:
    """Appends predictions to the inference log from one background daemon thread.

    Made by `open_inference_log(block)` (`prefect_crisis.tasks.serving.inference_log`); see there for an example.

    Args:
        engine: the database (SQLAlchemy engine; nothing connects until the first write).
        spool_folder: where records wait while the database is down.
        spool_max_records: the spool's bound; records beyond it are dropped and counted.
        label_spool_folder: where labels recorded while the database was down wait (`record_labels`); the writer writes
            them once its own spool is flushed, so each label lands after the predictions it may label.
        batch_rows: rows per insert; the thread waits up to `flush_seconds` to fill a batch.
        retry_seconds: how long a database that failed is left alone before it is tried again.
        max_queue_rows: rows waiting in memory beyond which new batches go to the spool
            instead of the (slow) database.
        clock: monotonic seconds, for the retry schedule (tests move it by hand).
        display_url: the database URL masked, for log lines.
        secrets: strings that must never reach a log line (the password).
    """

    def __init__(
        self,
        engine: Engine,
        spool_folder,
        *,
        spool_max_records: int = 100_000,
        label_spool_folder=None,
        batch_rows: int = 1_000,
        flush_seconds: float = 1.0,
        retry_seconds: float = 30.0,
        max_queue_rows: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        display_url: str = "",
        secrets: Sequence[str] = (),
        logger: logging.Logger | None = None,
    ):
        self._engine = engine
        self._spool_folder = spool_folder
        self._spool_max_records = spool_max_records
        self._label_spool_folder = label_spool_folder
        self._next_label_check = float("-inf")
        self._warned_fill = 0.0  # the highest SPOOL_WARN_AT mark warned of since the spool was last below the first
        self._spool: Spool | None = None
        self._batch_rows = max(int(batch_rows), 1)
        self._flush_seconds = max(float(flush_seconds), 0.0)
        self._retry_seconds = float(retry_seconds)
        self._max_queue_rows = max_queue_rows if max_queue_rows is not None else max(10 * self._batch_rows, 10_000)
        self._clock = clock
        self._display_url = display_url
        self._secrets = [secret for secret in secrets if secret]
        self._logger = logger or logging.getLogger("prefect_crisis.inference_log")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._handled = threading.Condition()
        self._submitted_items = self._handled_items = 0
        self._submitted_rows = self._handled_rows = 0
        self._written = self._spooled = self._flushed = self._dropped = 0
        self._reported = (0, 0, 0)
        self._last_report = float("-inf")
        self._down_until: float | None = None
        self._down_reason = ""
        self._tables_ready = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="crisis-inference-log", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------

    def submit(self, item: PredictionBatch | RequestError) -> None:
        """Hand `item` to the background thread. O(1): never blocks on I/O, never raises."""
        try:
            rows = _records_of(item)
            with self._lock:
                if self._closed:
                    self._dropped += rows
                    return
                self._submitted_items += 1
                self._submitted_rows += rows
            self._queue.put(item)
        except Exception:
            with self._lock:
                self._dropped += 1

    # -- waiting and stopping ------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written or spooled; False on timeout."""
        with self._lock:
            target = self._submitted_items
        self._queue.put(_WAKE)
        with self._handled:
            return self._handled.wait_for(lambda: self._handled_items >= target, timeout=timeout)

    def wait_for(self, condition: Callable[[LogStats], bool], timeout: float = 10.0) -> bool:
        """Wait until `condition(stats)` holds, asked again after each pass of the background thread (one at least every
        flush_seconds: a spool retry that falls due is seen); False on timeout. No polling: the thread wakes it."""
        with self._handled:
            return self._handled.wait_for(lambda: condition(self.stats), timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write or spool what is queued, then stop the thread (later submits are counted as dropped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._engine.dispose()

    @property
    def stats(self) -> LogStats:
        with self._lock:
            pending = self._submitted_rows - self._handled_rows
            return LogStats(self._written, self._spooled, self._flushed, self._dropped, pending, self._spool.records if self._spool else 0)

    def __repr__(self) -> str:
        return f"InferenceLogWriter({self._display_url!r}, {self.stats})"

    # -- the background thread -----------------------------------------------------

    def _run(self) -> None:
        try:
            self._spool = Spool(self._spool_folder, self._spool_max_records, database=self._display_url)
        except OSError as error:
            self._logger.error(
                "inference log %s: spool folder %s unusable (%s); records are dropped while the database is down",
                self._display_url,
                self._spool_folder,
                self._scrub(error),
            )
        stopping = False
        while not stopping:
            items, stopping = self._take()
            try:
                self._deliver(items)
                self._retry_spool()
            except Exception as error:
                self._logger.error(
                    "inference log %s: %d records could not be logged: %s",
                    self._display_url,
                    sum(_records_of(item) for item in items),
                    self._scrub(error),
                )
                with self._lock:
                    self._dropped += sum(_records_of(item) for item in items)
            self._report()  # before _done: whoever flush()es sees the line already written
            self._done(items)
        if self._spool is not None:
            self._spool.close()

    def _take(self) -> tuple[list, bool]:
        """A batch: the first item waited for up to flush_seconds, then more until batch_rows rows,
        flush_seconds, or a flush() asks for what is there."""
        items: list = []
        rows = 0
        deadline = time.monotonic() + self._flush_seconds
        while rows < self._batch_rows:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            if item is _WAKE:
                break
            items.append(item)
            rows += _records_of(item)
        return items, False

    def _done(self, items: list) -> None:
        with self._lock:
            self._handled_rows += sum(_records_of(item) for item in items)
        with self._handled:
            self._handled_items += len(items)
            self._handled.notify_all()

    def _rows(self, items: list) -> list[dict]:
        rows: list[dict] = []
        for item in items:
            try:
                if isinstance(item, PredictionBatch):
                    rows += batch_rows(item)
                elif isinstance(item, RequestError):
                    rows.append(error_row(item, Responder.NONE.value))
                else:
                    raise TypeError(f"not a PredictionBatch or RequestError: {type(item).__name__}")
            except (TypeError, ValueError, AttributeError, IndexError, KeyError) as error:
                # A malformed item (sequences shorter than its rows, say) costs its own records only.
                self._logger.error(
                    "inference log %s: request %r not logged (%d records dropped): %s",
                    self._display_url,
                    getattr(item, "request_id", None),
                    _records_of(item),
                    self._scrub(error),
                )
                with self._lock:
                    self._dropped += _records_of(item)
        return rows

    def _deliver(self, items: list) -> None:
        if not items:
            return
        rows = self._rows(items)
        if not rows:
            return
        with self._lock:
            backlog = self._submitted_rows - self._handled_rows - len(rows)
        if self._is_down() or backlog > self._max_queue_rows:
            self._to_spool(rows)  # the database is down, or slower than the requests: the disk keeps up
            return
        try:
            self._insert(rows)
        except DATABASE_DOWN as error:
            self._mark_down(error)
            self._to_spool(rows)
            return
        with self._lock:
            self._written += len(rows)

    def _insert(self, rows: list[dict]) -> None:
        with self._engine.begin() as connection:
            if not self._tables_ready:
                create_tables(connection)
            for start in range(0, len(rows), INSERT_CHUNK_ROWS):
                insert_predictions(connection, rows[start : start + INSERT_CHUNK_ROWS])
        self._tables_ready = True
        self._mark_up()

    def _retry_spool(self) -> None:
        """Flush the spool while the database takes it and no new requests wait; then the labels spooled meanwhile."""
        if self._spool is None or self._is_down():
            return
        with self._lock:
            if self._submitted_rows - self._handled_rows > self._batch_rows:
                return
        if self._spool.records:
            try:
                flushed, unreadable = self._spool.drain(self._insert, limit=self._max_queue_rows)
            except DATABASE_DOWN as error:
                self._mark_down(error)
                return
            with self._lock:
                self._flushed += flushed
                self._dropped += unreadable
            self._warn_filling()  # below the first mark again: the next fill warns anew
        if self._spool.records == 0 and self._clock() >= self._next_label_check:
            self._next_label_check = self._clock() + LABEL_CHECK_SECONDS
            self._flush_labels()

    def _flush_labels(self) -> None:
        """Write the labels spooled while the database was down (`record_labels`), once the predictions' spool is empty."""
        if self._label_spool_folder is None:
            return
        try:
            flushed = drain_label_spool(self._label_spool_folder, self._engine, self._spool_max_records, self._display_url)
        except DATABASE_DOWN as error:
            self._mark_down(error)
            return
        except OSError as error:
            self._logger.error("inference log %s: label spool %s unreadable: %s", self._display_url, self._label_spool_folder, self._scrub(error))
            return
        if flushed:
            self._logger.info("inference log %s: %d spooled labels written", self._display_url, len(flushed))

    def _to_spool(self, rows: list[dict]) -> None:
        spooled, dropped = self._spool.append(rows) if self._spool is not None else (0, len(rows))
        with self._lock:
            self._spooled += spooled
            self._dropped += dropped
        self._warn_filling()

    def _warn_filling(self) -> None:
        """A warning each time the spool passes a mark of its bound (SPOOL_WARN_AT), before it drops anything."""
        if self._spool is None:
            return
        fill = self._spool.records / self._spool_max_records
        if fill < SPOOL_WARN_AT[0]:
            self._warned_fill = 0.0
            return
        mark = max(level for level in SPOOL_WARN_AT if fill >= level)
        if mark <= self._warned_fill:
            return
        self._warned_fill = mark
        self._logger.warning(
            "inference log %s: the spool is %d%% full (%d of %d records, %s): at its bound new records are dropped; bring the "
            "database back or raise spool_max_records",
            self._display_url,
            int(fill * 100),
            self._spool.records,
            self._spool_max_records,
            self._spool_folder,
        )

    def _is_down(self) -> bool:
        return self._down_until is not None and self._clock() < self._down_until

    def _mark_down(self, error: BaseException) -> None:
        if self._down_until is None:
            self._last_report = float("-inf")  # say at once that the database went down
        self._down_until = self._clock() + self._retry_seconds
        self._down_reason = self._scrub(error)
        self._tables_ready = False
        self._engine.dispose()  # pooled connections may point at what went away (a dead server, a replaced file)

    def _mark_up(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            self._last_report = float("-inf")  # say at once that the database is back

    def _scrub(self, error: BaseException) -> str:
        """One line about `error`, without the SQL, the parameters or any secret."""
        cause = getattr(error, "orig", None) or error
        lines = str(cause).strip().splitlines()
        text = f"{type(cause).__name__}: {lines[0] if lines else 'no detail'}"[:300]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _report(self) -> None:
        """A log line when the spooled, flushed or dropped counts moved (at most every REPORT_EVERY_SECONDS)."""
        with self._lock:
            counts = (self._spooled, self._flushed, self._dropped)
        now = self._clock()
        if counts == self._reported or (now - self._last_report < REPORT_EVERY_SECONDS and self._thread.is_alive() and not self._closed):
            return
        self._reported, self._last_report = counts, now
        state = f"database down ({self._down_reason})" if self._down_until is not None else "database up"
        level = logging.WARNING if self._down_until is not None or counts[2] else logging.INFO
        self._logger.log(
            level,
            "inference log %s: %s; %d records spooled, %d flushed from the spool, %d dropped, %d in the spool %s",
            self._display_url,
            state,
            *counts,
            self._spool.records if self._spool else 0,
            self._spool_folder,
        )


def drain_label_spool(folder, engine: Engine, max_records: int, display_url: str = "") -> list[dict]:
    """Write the labels spooled in `folder` while the database was down, oldest segment first, each segment in its own
    transaction (deleted once committed); returns the labels written (none when nothing waits).

    Raises:
        the database's error when it fails again (what is not written stays spooled).
    """
    if not any(path.name != "database.txt" for path in Path(folder).glob("*")):
        return []
    written: list[dict] = []

    def insert(rows: list[dict]) -> None:
        with engine.begin() as connection:
            create_tables(connection)
            upsert_labels(connection, rows)
        written.extend(rows)

    Spool(folder, max_records, database=display_url).drain(insert)
    return written


_STOP = object()  # close(): deliver what is queued, then end the thread
_WAKE = object()  # flush(): stop filling the batch, deliver now

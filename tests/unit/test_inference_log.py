"""The inference log on SQLite: batching, idempotent inserts, the spool (bound,
outages, restarts), labels before and after predictions, windows read back,
and no password anywhere it could leak."""

from __future__ import annotations

import logging
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, event, func, select

from prefect_crisis.blocks import InferenceLog
from prefect_crisis.core.errors import DataInputError, InferenceLogError, InputErrorReason
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.tasks.serving.inference_log import (
    InferenceLogWriter,
    LogStats,
    PredictionBatch,
    RequestError,
    labelled_window,
    open_inference_log,
    read_window,
    record_labels,
)
from prefect_crisis.tasks.serving.log_database import label_spool_folder
from prefect_crisis.tasks.serving.log_store import create_tables, insert_predictions, predictions
from tests.helpers import wait_for

LOGGER = "prefect_crisis.inference_log"
NOW = datetime.now(UTC).replace(microsecond=0)


def batch(request_id: str, rows: int = 1, *, model: str = "churn", at: datetime = NOW, first: int = 0) -> PredictionBatch:
    inputs = pd.DataFrame(
        {
            "id": [f"{request_id}-{i}" for i in range(rows)],
            "x": [float(first + i) for i in range(rows)],
            "city": ["oslo" if i % 2 else "lima" for i in range(rows)],
        }
    )
    return PredictionBatch(
        request_id=request_id,
        model=model,
        received_at=at,
        latency_ms=2.5,
        inputs=inputs,
        row_ids=[str(i) for i in range(rows)],
        predictions=[i % 2 for i in range(rows)],
        answered_by=[Responder.PRIMARY.value] * rows,
        versions=["3"] * rows,
        confidence=[0.75] * rows,
        errors=[None] * rows,
    )


def count_rows(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(predictions)).scalar_one()
    finally:
        engine.dispose()


class Clock:
    """Monotonic seconds moved by hand: the retry schedule without waiting."""

    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def writers():
    made: list[InferenceLogWriter] = []
    yield made
    for writer in made:
        writer.close(timeout=5)


@pytest.fixture
def log(tmp_path) -> InferenceLog:
    (tmp_path / "db").mkdir()
    return InferenceLog(
        url=f"sqlite:///{tmp_path / 'db' / 'inference.db'}",
        spool_path=str(tmp_path / "spool"),
        flush_seconds=0.05,
        retry_seconds=60,
        timeout_seconds=0.2,
    )


def make_db_folder_unusable(log: InferenceLog) -> Path:
    folder = Path(log.url.removeprefix("sqlite:///")).parent
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()
    folder.write_text("a file where the database folder should be")  # sqlite: unable to open database file
    return folder


def bring_db_folder_back(folder: Path) -> None:
    folder.unlink()
    folder.mkdir()


def test_batches_are_written_in_inserts_of_batch_rows_and_flush_does_not_wait_for_a_full_batch(tmp_path, writers):
    url = f"sqlite:///{tmp_path / 'inference.db'}"
    engine = create_engine(url)
    inserts: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO predictions"):
            inserts.append(len(parameters) if executemany else 1)

    writer = InferenceLogWriter(engine, tmp_path / "spool", batch_rows=100, flush_seconds=30)
    writers.append(writer)
    for number in range(250):
        writer.submit(batch(f"r{number}"))
    started = time.monotonic()
    assert writer.flush(timeout=20)
    assert time.monotonic() - started < 15, "flush waited for a batch that would never fill"
    assert inserts == [100, 100, 50]
    assert writer.stats == LogStats(written=250)
    assert count_rows(url) == 250


def test_a_batch_of_many_rows_is_one_record_per_row_and_a_refused_request_one_record(log, writers):
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(batch("big", rows=1_500))
    writer.submit(RequestError("refused", "churn", NOW, "column 'x' is missing", rows=7))
    assert writer.flush()
    assert writer.stats.written == 1_501
    everything = read_window(log, "churn", labelled_only=False)
    refused = everything[everything.request_id == "refused"]
    assert len(refused) == 1
    assert refused.iloc[0][["row_id", "answered_by", "error"]].tolist() == ["*", Responder.NONE.value, "column 'x' is missing"]
    assert everything[everything.request_id == "big"].row_id.tolist() == [str(i) for i in range(1_500)]  # in request order


@pytest.mark.parametrize("dialect", ["sqlite", "generic"])
def test_inserting_the_same_rows_again_adds_nothing(tmp_path, monkeypatch, dialect):
    engine = create_engine(f"sqlite:///{tmp_path / 'inference.db'}")
    if dialect == "generic":  # the read-then-insert path of dialects without ON CONFLICT
        monkeypatch.setattr(engine.dialect, "name", "generic")
    from prefect_crisis.tasks.serving.log_store import batch_rows

    rows = batch_rows(batch("r1", rows=5)) + batch_rows(batch("r2", rows=3))
    with engine.begin() as connection:
        create_tables(connection)
        insert_predictions(connection, rows[:4])  # an outage cut a first attempt short
    with engine.begin() as connection:
        insert_predictions(connection, rows)
        insert_predictions(connection, rows)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(predictions)).scalar_one() == 8


def test_an_unusable_database_folder_spools_with_exact_counts_and_the_flush_adds_no_duplicate(log, writers, caplog):
    clock = Clock()
    folder = Path(log.url.removeprefix("sqlite:///")).parent
    writer = open_inference_log(log, clock=clock)
    writers.append(writer)
    writer.submit(batch("before", rows=10))
    assert writer.flush() and writer.stats.written == 10

    make_db_folder_unusable(log)
    caplog.set_level(logging.INFO, logger=LOGGER)
    writer.submit(batch("before", rows=10))  # the same request again: idempotent after the outage
    for number in range(5):
        writer.submit(batch(f"during-{number}", rows=4))
    assert writer.flush()
    assert writer.stats == LogStats(written=10, spooled=30, in_spool=30)
    assert "database down" in caplog.text and "30 records spooled" in caplog.text

    bring_db_folder_back(folder)
    writer.submit(batch("still-waiting", rows=2))  # the retry is not due yet: spooled, not tried
    assert writer.flush()
    assert writer.stats.spooled == 32 and writer.stats.written == 10
    clock.now += 61
    assert writer.wait_for(lambda current: current.flushed == 32, timeout=15), writer.stats
    assert writer.stats == LogStats(written=10, spooled=32, flushed=32, in_spool=0)
    assert count_rows(log.url) == 10 + 20 + 2
    assert "database up" in caplog.text and "32 flushed" in caplog.text


def test_a_locked_database_counts_as_down_until_the_lock_goes(log, writers):
    clock = Clock()
    path = Path(log.url.removeprefix("sqlite:///"))
    writer = open_inference_log(log, clock=clock)
    writers.append(writer)
    writer.submit(batch("first"))
    assert writer.flush() and writer.stats.written == 1
    blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        for number in range(6):
            writer.submit(batch(f"locked-{number}", rows=3))
        assert writer.flush()
        assert (writer.stats.spooled, writer.stats.written) == (18, 1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    clock.now += 61
    assert writer.wait_for(lambda current: current.flushed == 18, timeout=15), writer.stats
    assert count_rows(log.url) == 19


def test_a_full_spool_drops_exactly_what_is_over_its_bound_and_says_so(tmp_path, writers, caplog):
    log = InferenceLog(
        url=f"sqlite:///{tmp_path / 'file' / 'inference.db'}",
        spool_path=str(tmp_path / "spool"),
        spool_max_records=50,
        flush_seconds=0.05,
        retry_seconds=60,
    )
    (tmp_path / "file").write_text("not a folder")
    caplog.set_level(logging.INFO, logger=LOGGER)
    writer = open_inference_log(log, clock=Clock())
    writers.append(writer)
    for number in range(8):
        writer.submit(batch(f"r{number}", rows=10))
    assert writer.flush()
    assert writer.stats == LogStats(spooled=50, dropped=30, in_spool=50)
    lines = sum(len(path.read_text().splitlines()) for path in log.spool_folder.iterdir() if path.name != "database.txt")
    assert lines == 50
    assert "50 records spooled" in caplog.text and "30 dropped" in caplog.text
    assert "the spool is 100% full (50 of 50 records" in caplog.text and "raise spool_max_records" in caplog.text


def test_records_spooled_by_a_process_that_stopped_are_flushed_by_the_next_writer(log, writers):
    folder = make_db_folder_unusable(log)  # the database is unreachable while the first process runs
    script = (
        "import os, sys\n"
        "from prefect_crisis.blocks import InferenceLog\n"
        "from tests.unit.test_inference_log import batch, open_inference_log\n"
        f"log = InferenceLog.model_validate_json({log.model_dump_json()!r})\n"
        "writer = open_inference_log(log)\n"
        "for number in range(7):\n"
        "    writer.submit(batch(f'gone-{number}', rows=6))\n"
        "assert writer.flush(), 'flush timed out'\n"
        "print(writer.stats.spooled, flush=True)\n"
        "os._exit(0)  # stops without closing: its segment is left open\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "CRISIS_NO_AUTOCONNECT": "1"},
    )
    assert ran.returncode == 0 and ran.stdout.split()[-1] == "42", ran.stdout + ran.stderr
    assert [path.suffix for path in log.spool_folder.iterdir() if path.name != "database.txt"] == [".open"]

    bring_db_folder_back(folder)
    writer = open_inference_log(log, clock=Clock())
    writers.append(writer)
    assert writer.wait_for(lambda current: current.flushed == 42, timeout=15), writer.stats
    assert count_rows(log.url) == 42 and writer.stats.in_spool == 0
    assert not [path for path in log.spool_folder.iterdir() if path.name != "database.txt"]


def test_a_closed_writer_leaves_its_spool_to_the_next_writer_of_the_same_process(log, writers):
    folder = make_db_folder_unusable(log)
    first = open_inference_log(log, clock=Clock())
    first.submit(batch("a", rows=5))
    first.close()
    assert first.stats.spooled == 5
    first.submit(batch("after-close"))  # never raises; counted
    assert first.stats.dropped == 1
    bring_db_folder_back(folder)
    second = open_inference_log(log, clock=Clock())
    writers.append(second)
    assert second.wait_for(lambda current: current.flushed == 5, timeout=15), second.stats
    assert count_rows(log.url) == 5


def test_a_backlog_past_the_queue_bound_spills_to_the_spool_and_nothing_is_lost(tmp_path, writers):
    url = f"sqlite:///{tmp_path / 'inference.db'}"
    engine = create_engine(url)
    slow = {"first": True}
    held, release = threading.Event(), threading.Event()

    @event.listens_for(engine, "before_cursor_execute")
    def _hold_the_first_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO predictions") and slow.pop("first", False):
            held.set()
            release.wait(20)  # the database is slow while requests keep coming

    writer = InferenceLogWriter(engine, tmp_path / "spool", batch_rows=10, flush_seconds=0.05, max_queue_rows=5)
    writers.append(writer)
    writer.submit(batch("first"))
    assert held.wait(15)
    for number in range(50):
        writer.submit(batch(f"r{number}"))
    release.set()
    assert writer.flush()
    stats = writer.stats
    assert stats.spooled >= 30 and stats.written + stats.spooled == 51 and stats.dropped == 0
    assert writer.wait_for(lambda current: current.flushed == stats.spooled, timeout=15), writer.stats
    assert count_rows(url) == 51


def test_a_malformed_batch_costs_its_own_records_only(log, writers):
    writer = open_inference_log(log)
    writers.append(writer)
    broken = PredictionBatch(
        "broken", "churn", NOW, 1.0, pd.DataFrame({"x": [1, 2]}), ["0", "1"], [1], [Responder.PRIMARY.value], ["1"], [0.5], [None]
    )  # one prediction for two rows
    writer.submit(broken)
    writer.submit(object())  # not even a batch
    writer.submit(batch("fine", rows=3))
    assert writer.flush()
    assert (writer.stats.written, writer.stats.dropped) == (3, 3)


def test_labels_before_and_after_their_predictions_are_joined_on_read(log, writers):
    assert record_labels(log, ["early"], [1]) == 1  # a request-wide label, before its prediction exists
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(batch("early", rows=2))
    writer.submit(batch("late", rows=3))
    writer.submit(batch("unlabelled"))
    assert writer.flush()
    assert record_labels(log, [("late", "0"), ("late", "2")], ["yes", "no"]) == 2
    assert record_labels(log, [("late", "2")], ["yes"]) == 1  # a correction replaces the first label
    window = read_window(log, "churn")
    assert list(zip(window.request_id, window.row_id, window.label, strict=True)) == [
        ("early", "0", 1),
        ("early", "1", 1),
        ("late", "0", "yes"),
        ("late", "2", "yes"),
    ]
    with pytest.raises(InferenceLogError, match="2 keys but 1 labels"):
        record_labels(log, ["a", "b"], [1])


def test_read_window_gives_the_features_back_with_the_logs_columns_within_the_time_range(log, writers):
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(batch("old", rows=2, at=NOW - timedelta(hours=2)))
    writer.submit(batch("recent", rows=2, at=NOW - timedelta(minutes=30), first=10))
    writer.submit(batch("edge", at=NOW))
    writer.submit(batch("other-model", model="fraud", at=NOW - timedelta(minutes=30)))
    failed = PredictionBatch(
        "failed",
        "churn",
        NOW - timedelta(minutes=20),
        9.0,
        pd.DataFrame({"x": [1.0]}),
        ["0"],
        [None],
        [Responder.NONE.value],
        [None],
        [math.nan],
        ["both models raised"],
    )
    writer.submit(failed)
    assert writer.flush()
    record_labels(log, ["old", "recent", "edge", "other-model", "failed"], [0, 1, 1, 1, 0])

    window = read_window(log, "churn", NOW - timedelta(hours=1), NOW)  # [start, end): "edge" is out
    assert window.request_id.tolist() == ["recent", "recent", "failed"]
    assert list(window.columns) == [
        "id",
        "x",
        "city",
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
    ]
    assert window.x.tolist()[:2] == [10.0, 11.0] and window.city.tolist()[:2] == ["lima", "oslo"]
    assert window.timestamp.iloc[0] == pd.Timestamp(NOW - timedelta(minutes=30))
    assert window.prediction.tolist()[:2] == [0, 1] and pd.isna(window.prediction.iloc[2])
    assert window.answered_by.tolist() == [Responder.PRIMARY.value] * 2 + [Responder.NONE.value]
    assert window.confidence.iloc[0] == 0.75 and math.isnan(window.confidence.iloc[2])
    assert window.error.isna().tolist() == [True, True, False] and window.error.iloc[2] == "both models raised"
    assert window.latency_ms.tolist() == [2.5, 2.5, 9.0]
    naive = read_window(log, "churn", (NOW - timedelta(hours=1)).replace(tzinfo=None), (NOW + timedelta(seconds=1)).replace(tzinfo=None))
    assert naive.request_id.tolist() == ["recent", "recent", "failed", "edge"]  # naive times are UTC


def test_an_empty_labelled_window_says_what_to_do_in_one_line(log, writers):
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(batch("unlabelled"))
    assert writer.flush()
    with pytest.raises(DataInputError) as raised:
        labelled_window(log, "churn", 60, now=NOW + timedelta(seconds=1))
    message = str(raised.value)
    assert raised.value.reason == InputErrorReason.EMPTY_FRAME and "\n" not in message
    assert "record labels" in message and "window_path" in message
    record_labels(log, ["unlabelled"], [1])
    window = labelled_window(log, "churn", 60, label_column="churned", now=NOW + timedelta(seconds=1))
    assert list(window.columns) == ["id", "x", "city", "churned", "timestamp", "latency_ms"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_a_password_is_in_no_log_line_error_repr_or_spool_file(tmp_path, writers, caplog):
    secret = f"pw-{uuid.uuid4().hex}"
    log = InferenceLog(
        url=f"postgresql+psycopg://crisis:{secret}@127.0.0.1:{closed_port()}/crisis",
        spool_path=str(tmp_path / "spool"),
        flush_seconds=0.05,
        timeout_seconds=1,
    )
    assert log.url == log.url.replace(secret, "") and log.password.get_secret_value() == secret
    assert secret not in log.display_url and "***" in log.display_url
    assert secret not in repr(log) and secret not in str(log.model_dump())
    caplog.set_level(logging.DEBUG)
    writer = open_inference_log(log, clock=Clock())
    writers.append(writer)
    for number in range(3):
        writer.submit(batch(f"r{number}", rows=2))
    assert writer.flush()
    assert writer.stats.spooled == 6
    writer.close()
    assert "database down" in caplog.text and secret not in caplog.text
    assert secret not in repr(writer)
    spooled = "".join(path.read_text() for path in log.spool_folder.rglob("*") if path.is_file())
    assert "r0" in spooled and secret not in spooled
    caplog.clear()
    assert record_labels(log, ["r0"], [1]) == 1  # the database is down: the label is spooled, not refused
    assert "labels spooled" in caplog.text and secret not in caplog.text
    labels = "".join(path.read_text() for path in label_spool_folder(log.settings()).rglob("*") if path.is_file())
    assert '"r0"' in labels and secret not in labels
    full = log.model_copy(update={"spool_max_records": 1})  # the label spool holds one already: this one is refused
    with pytest.raises(InferenceLogError) as raised:
        record_labels(full, ["r1"], [0])
    assert secret not in str(raised.value) and "\n" not in str(raised.value) and "***" in str(raised.value)
    assert "full" in str(raised.value) and "again later" in str(raised.value)


def test_labels_recorded_while_the_database_is_down_are_spooled_and_land_after_their_predictions(log, writers, caplog):
    """The outage the issue measured: predictions and labels both during it. Nothing is refused or lost; the serving
    writer flushes its predictions, then the labels, so every label joins its prediction; labels given again later
    replace the spooled ones, not the other way round."""
    folder = make_db_folder_unusable(log)
    clock = Clock()
    writer = open_inference_log(log, clock=clock)
    writers.append(writer)
    for number in range(5):
        writer.submit(batch(f"out-{number}", rows=4))
    assert writer.flush() and writer.stats.spooled == 20
    caplog.set_level(logging.WARNING)
    keys = [(f"out-{number}", str(row)) for number in range(5) for row in range(4)]
    assert record_labels(log, keys, [row % 2 for row in range(20)]) == 20  # not an error: spooled
    assert "20 labels spooled" in caplog.text and "(20 of 100000 waiting there)" in caplog.text
    spooled = label_spool_folder(log.settings())
    assert sum(len(path.read_text().splitlines()) for path in spooled.iterdir() if path.name != "database.txt") == 20

    bring_db_folder_back(folder)
    clock.now += 61  # the writer's retry is due: predictions first, then the labels
    assert writer.wait_for(lambda current: current.flushed == 20, timeout=15), writer.stats
    window = wait_for(lambda: read_window(log, "churn"), lambda rows: len(rows) == 20, timeout=15)
    assert len(window) == 20 and window["label"].astype(int).tolist().count(1) == 10
    assert not [path for path in spooled.iterdir() if path.name != "database.txt"]


def test_labels_spooled_earlier_are_written_before_newer_ones_by_the_next_record_labels(log, writers):
    writer = open_inference_log(log, clock=Clock())
    writers.append(writer)
    writer.submit(batch("r1", rows=2))
    assert writer.flush() and writer.stats.written == 2
    writer.close()
    folder = make_db_folder_unusable(log)
    events = []
    timeline = Timeline(sink=events.append)
    assert record_labels(log, ["r1"], [0], timeline=timeline) == 1  # spooled: nothing to say yet
    assert events == []
    bring_db_folder_back(folder)
    from prefect_crisis.tasks.serving.log_store import batch_rows

    engine = create_engine(log.url)  # the database file is new: its predictions come again (no writer: it would flush the labels)
    with engine.begin() as connection:
        create_tables(connection)
        insert_predictions(connection, batch_rows(batch("r1", rows=2)))
    engine.dispose()
    assert record_labels(log, [("r1", "0")], [1], timeline=timeline) == 1  # after the spooled request-wide label
    window = read_window(log, "churn")
    assert window.sort_values("row_id")["label"].astype(int).tolist() == [1, 0]  # the row's own label, then the request's
    assert [event.payload["rows"] for event in events] == [2]  # one event: both labels, written now, cover two rows


def test_the_default_log_lives_under_the_state_folder(crisis_home):
    log = InferenceLog()
    assert log.resolved_url == f"sqlite:///{crisis_home / 'inference.db'}"
    assert log.spool_folder.parent == crisis_home / "inference-spool"
    assert record_labels(log, ["r1"], [1]) == 1 and (crisis_home / "inference.db").exists()


def test_the_routing_reason_of_each_row_is_stored_and_read_back(log, writers):
    from prefect_crisis.core.vocabulary import RouteReason
    from prefect_crisis.tasks.serving.row_routing import route_reason_of

    why = f"{RouteReason.PRIMARY_INPUT_INVALID}: 'x' is missing"
    routed = PredictionBatch(
        "routed",
        "churn",
        NOW,
        3.0,
        pd.DataFrame({"x": [1.0, None]}),
        ["0", "1"],
        [1, 0],
        [Responder.PRIMARY.value, Responder.FALLBACK.value],
        ["2", "1"],
        [0.9, 0.7],
        [None, None],
        reasons=pd.Series([None, why], dtype=object),
    )
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(routed)
    writer.submit(batch("unexplained"))  # a batch made without reasons
    assert writer.flush() and writer.stats.written == 3
    window = read_window(log, "churn", labelled_only=False).set_index(["request_id", "row_id"])
    assert window.loc[("routed", "1"), "reason"] == why and route_reason_of(why) is RouteReason.PRIMARY_INPUT_INVALID
    assert pd.isna(window.loc[("routed", "0"), "reason"]) and pd.isna(window.loc[("unexplained", "0"), "reason"])


def test_a_log_written_before_the_reason_column_opens_and_gains_it(log, writers):
    from sqlalchemy import inspect, text

    engine = create_engine(log.resolved_url)
    with engine.begin() as connection:  # the predictions table as the first release made it
        create_tables(connection)
        connection.execute(text("ALTER TABLE predictions DROP COLUMN reason"))
        assert "reason" not in {column["name"] for column in inspect(connection).get_columns("predictions")}
        insert_predictions(connection, [])
        connection.execute(
            text(
                "INSERT INTO predictions (request_id, row_id, model, received_at, position, request_rows, answered_by) "
                "VALUES ('old', '0', 'churn', :at, 0, 1, 'primary')"
            ),
            {"at": NOW.replace(tzinfo=None)},
        )
    engine.dispose()
    assert read_window(log, "churn", labelled_only=False).reason.isna().tolist() == [True]  # opened: the column is added
    writer = open_inference_log(log)
    writers.append(writer)
    writer.submit(batch("new"))
    assert writer.flush() and writer.stats.written == 1
    assert read_window(log, "churn", labelled_only=False).request_id.tolist() == ["old", "new"]

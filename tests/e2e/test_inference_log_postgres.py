"""The inference log on a real PostgreSQL 15: written and read back through a
postgresql+psycopg URL with a password, and an outage mid-stream (the server is
stopped, then started again) that loses nothing and duplicates nothing."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text

from prefect_crisis.blocks import InferenceLog
from prefect_crisis.tasks.serving.inference_log import LogStats, RequestError, open_inference_log, read_window, record_labels
from prefect_crisis.tasks.serving.log_store import predictions
from tests.unit.test_inference_log import NOW, Clock, batch

pytestmark = pytest.mark.e2e


def fresh_tables(server) -> None:
    engine = create_engine(server.url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS predictions, labels"))
    engine.dispose()


def counts(server) -> tuple[int, int]:
    """(rows, distinct keys) of the predictions table."""
    engine = create_engine(server.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(predictions)).scalar_one()
            keys = connection.execute(text("SELECT count(*) FROM (SELECT DISTINCT request_id, row_id FROM predictions) k")).scalar_one()
            return rows, keys
    finally:
        engine.dispose()


@pytest.fixture
def log(postgres_server, tmp_path) -> InferenceLog:
    fresh_tables(postgres_server)
    return InferenceLog(url=postgres_server.url, spool_path=str(tmp_path / "spool"), flush_seconds=0.05, retry_seconds=60, timeout_seconds=2)


def test_predictions_and_labels_round_trip_through_postgresql(log, postgres_server):
    assert log.url.endswith(f"127.0.0.1:{postgres_server.port}/postgres") and postgres_server.password not in log.url
    writer = open_inference_log(log)
    try:
        writer.submit(batch("pg-1", rows=3))
        writer.submit(batch("pg-1", rows=3))  # the same request twice: ON CONFLICT DO NOTHING
        writer.submit(RequestError("pg-refused", "churn", NOW, "no rows", rows=0))
        assert writer.flush()
        assert writer.stats == LogStats(written=7)
    finally:
        writer.close()
    assert record_labels(log, [("pg-1", "1"), "pg-1"], [0, 1]) == 2
    window = read_window(log, "churn", NOW - timedelta(minutes=1), NOW + timedelta(minutes=1))
    assert window.row_id.tolist() == ["0", "1", "2"] and window.label.tolist() == [1, 0, 1]
    assert window.x.tolist() == [0.0, 1.0, 2.0] and window.timestamp.iloc[0] == NOW
    assert counts(postgres_server) == (4, 4)
    engine = create_engine(postgres_server.url)
    with engine.connect() as connection:
        indexes = connection.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'predictions'")).scalars().all()
    engine.dispose()
    assert any("(model, received_at)" in index for index in indexes), indexes


def test_a_server_stopped_mid_stream_spools_exactly_and_the_flush_after_restart_adds_no_duplicate(log, postgres_server, caplog):
    caplog.set_level(logging.INFO, logger="prefect_crisis.inference_log")
    clock = Clock()
    writer = open_inference_log(log, clock=clock)
    submitted = []
    stop_streaming = threading.Event()

    def stream():
        number = 0
        while not stop_streaming.is_set():
            writer.submit(batch(f"stream-{number}", rows=5))
            submitted.append(5)
            number += 1
            time.sleep(0.005)  # a steady trickle of requests

    try:
        for number in range(10):
            writer.submit(batch(f"before-{number}", rows=10))
        assert writer.flush() and writer.stats == LogStats(written=100)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        assert writer.wait_for(lambda stats: stats.written >= 150)  # some of the stream is in the database
        postgres_server.stop()
        try:
            assert writer.wait_for(lambda stats: stats.spooled >= 100)  # and some of it is on disk
            stop_streaming.set()
            streamer.join(10)
            writer.submit(batch("before-0", rows=10))  # written before the outage, sent again during it
            assert writer.flush()
            stats = writer.stats
            streamed = sum(submitted)
            assert stats.dropped == 0 and stats.pending == 0
            assert stats.written + stats.spooled == 100 + streamed + 10  # every record written or spooled, exactly
            assert stats.in_spool == stats.spooled
            spooled_lines = sum(len(path.read_text().splitlines()) for path in log.spool_folder.iterdir() if path.name != "database.txt")
            assert spooled_lines == stats.spooled
            assert "database down" in caplog.text
        finally:
            postgres_server.start()
        clock.now += 61
        assert writer.wait_for(lambda now: now.flushed == stats.spooled, timeout=30), writer.stats
        assert counts(postgres_server) == (100 + streamed, 100 + streamed)  # N rows, no duplicate
        assert writer.stats.in_spool == 0
        assert postgres_server.password not in caplog.text
    finally:
        stop_streaming.set()
        writer.close()

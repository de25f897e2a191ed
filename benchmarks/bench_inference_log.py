"""Inference log throughput: records/s written to SQLite through the background
writer (requests of 1, 100 and 10,000 rows), records/s into the spool while the
database is down, and the cost of `submit()` on the request path.

    .venv/bin/python benchmarks/bench_inference_log.py

Plain Python; prints a table. A temporary folder holds the database and spool.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from prefect_crisis.blocks import InferenceLog
from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.tasks.serving.inference_log import PredictionBatch, open_inference_log

FEATURES = 10
TARGET_RECORDS = 60_000


def request(number: int, rows: int, inputs: pd.DataFrame) -> PredictionBatch:
    return PredictionBatch(
        request_id=f"req-{number}",
        model="bench",
        received_at=datetime.now(UTC),
        latency_ms=1.2,
        inputs=inputs,
        row_ids=[str(i) for i in range(rows)],
        predictions=[1] * rows,
        answered_by=[Responder.PRIMARY.value] * rows,
        versions=["1"] * rows,
        confidence=[0.9] * rows,
        errors=[None] * rows,
    )


def run(log: InferenceLog, rows: int, records: int, database_up: bool) -> tuple[float, float, object]:
    """(records/s until everything is in the database (or, database down, in the spool),
    mean submit() microseconds, stats). Submitted as fast as possible: a backlog past the
    queue bound goes through the spool, and counts once it is flushed from there."""
    generator = np.random.default_rng(rows)
    inputs = pd.DataFrame(generator.normal(size=(rows, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    requests = [request(number, rows, inputs) for number in range(max(records // rows, 1))]
    writer = open_inference_log(log)
    submit_seconds = 0.0
    started = time.perf_counter()
    for item in requests:
        before = time.perf_counter()
        writer.submit(item)
        submit_seconds += time.perf_counter() - before
    assert writer.flush(timeout=600), "the writer did not finish in 10 minutes"
    total = len(requests) * rows
    deadline = time.monotonic() + 600
    while database_up and writer.stats.written + writer.stats.flushed < total and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    stats = writer.stats
    writer.close()
    return total / elapsed, 1e6 * submit_seconds / len(requests), stats


def main() -> None:
    print(f"inference log benchmark: {FEATURES} float features per row, about {TARGET_RECORDS:,} records per case, Python {sys.version.split()[0]}")
    print()
    print(f"| {'case':<34} | {'rows/request':>12} | {'records/s':>10} | {'submit() µs':>11} | {'via spool':>9} |")
    print(f"|{'-' * 36}|{'-' * 13}:|{'-' * 11}:|{'-' * 12}:|{'-' * 10}:|")
    with tempfile.TemporaryDirectory() as folder:
        for rows in (1, 100, 10_000):
            records = 20_000 if rows == 1 else TARGET_RECORDS
            log = InferenceLog(
                url=f"sqlite:///{Path(folder) / f'bench-{rows}.db'}", spool_path=str(Path(folder) / "spool"), batch_rows=1_000, flush_seconds=0.05
            )
            per_second, submit_us, stats = run(log, rows, records, database_up=True)
            assert stats.written + stats.flushed == (records // rows) * rows and stats.dropped == 0, stats
            print(f"| {'SQLite, written':<34} | {rows:>12,} | {per_second:>10,.0f} | {submit_us:>11.1f} | {stats.flushed:>9,} |")
        down = Path(folder) / "not-a-folder"
        down.write_text("the database folder is a file: every connect fails")
        for rows in (100, 10_000):
            log = InferenceLog(
                url=f"sqlite:///{down / 'bench.db'}",
                spool_path=str(Path(folder) / "spool-down"),
                batch_rows=1_000,
                flush_seconds=0.05,
                retry_seconds=3_600,
                spool_max_records=1_000_000,
            )
            per_second, submit_us, stats = run(log, rows, TARGET_RECORDS, database_up=False)
            assert stats.spooled == (TARGET_RECORDS // rows) * rows, stats
            print(f"| {'database down, into the spool':<34} | {rows:>12,} | {per_second:>10,.0f} | {submit_us:>11.1f} | {stats.spooled:>9,} |")


if __name__ == "__main__":
    main()

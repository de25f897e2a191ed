"""Validation speed and memory, side by side with pandera, in one run.

The frame: 1,000,000 rows x 20 numeric + 2 categorical columns, 1% of rows
corrupted (a missing value, an out-of-range value or an unknown category).
The same contract checks on both sides: not-null, range, dtype, allowed
categories.

- pandera lazy=True: collects failure cases, does not split the frame.
- pandera drop_invalid_rows=True: its nearest thing to a quarantine (the
  invalid rows are dropped, their reasons are not kept with them).
- prefect-crisis contract checks: kept frame + quarantined frame with every
  reason per row.
- prefect-crisis full validation: contract + integrity (exact duplicate rows)
  + robust outliers + drift (PSI and KS) of all 22 columns against a 1M-row
  reference.

Peak memory is the highest resident set size seen (sampled every 2 ms by a
psutil thread) above the resident size before the call.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_validation.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil

from prefect_crisis.tasks.drills.synthetic import CHANNELS, FEATURE_LIMIT, SEGMENTS, feature_names, make_batch, synthetic_contract
from prefect_crisis.tasks.validation.checks import validate_data

RESULTS = Path(__file__).parent / "results"


class PeakRss:
    """Highest RSS above the starting RSS while the block runs."""

    def __init__(self, every: float = 0.002):
        self.every = every
        self.process = psutil.Process()

    def __enter__(self) -> PeakRss:
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.baseline


def measure(name: str, call: Callable[[], object], repeats: int) -> dict:
    seconds, peaks, outcome = [], [], None
    for _ in range(repeats):
        with PeakRss() as memory:
            started = time.perf_counter()
            outcome = call()
            seconds.append(time.perf_counter() - started)
        peaks.append(memory.extra_bytes)
        del memory
    return {
        "name": name,
        "seconds": seconds,
        "best": min(seconds),
        "median": statistics.median(seconds),
        "peak_extra_bytes": max(peaks),
        "outcome": outcome,
    }


def pandera_schemas():
    import pandera.pandas as pa

    columns = {name: pa.Column(float, pa.Check.in_range(-FEATURE_LIMIT, FEATURE_LIMIT), nullable=False) for name in feature_names(20)}
    columns["segment"] = pa.Column(str, pa.Check.isin(SEGMENTS), nullable=False)
    columns["channel"] = pa.Column(str, pa.Check.isin(CHANNELS), nullable=False)
    return pa, pa.DataFrameSchema(columns), pa.DataFrameSchema(columns, drop_invalid_rows=True)


def candidates(rows: int):
    """Name -> zero-argument call, each over the same frame and reference."""
    frame = make_batch(rows, seed=1, corrupt_fraction=0.01, with_label=False)
    reference = make_batch(rows, seed=2, with_label=False)
    contract_only = synthetic_contract(with_label=False, check_duplicate_rows=False)
    for column in contract_only.columns:
        column.check_outliers = False
    full = synthetic_contract(with_label=False)
    pa, lazy_schema, drop_schema = pandera_schemas()

    def pandera_lazy():
        try:
            lazy_schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as errors:
            return {"failure_cases": len(errors.failure_cases), "failing_rows": int(errors.failure_cases["index"].nunique())}
        return {"failure_cases": 0, "failing_rows": 0}

    def pandera_drop():
        return {"kept": len(drop_schema.validate(frame, lazy=True))}

    def crisis_contract():
        report = validate_data(frame, contract_only).report
        return {"kept": report.kept, "quarantined": report.quarantined}

    def crisis_full():
        report = validate_data(frame, full, reference).report
        return {"kept": report.kept, "quarantined": report.quarantined, "drifted": report.drifted_features, "reasons": report.check_counts}

    calls = {
        "pandera lazy=True (failure cases)": pandera_lazy,
        "pandera drop_invalid_rows=True": pandera_drop,
        "prefect-crisis contract checks + quarantine": crisis_contract,
        "prefect-crisis full validation (+integrity, outliers, drift)": crisis_full,
    }
    return frame, calls


def run_one(name: str, rows: int, repeats: int) -> None:
    """Measure one candidate in this (fresh) process and print its figures as JSON."""
    warnings.filterwarnings("ignore")
    frame, calls = candidates(rows)
    result = measure(name, calls[name], repeats)
    result["frame_bytes"] = int(frame.memory_usage(deep=True).sum())
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args.rows, args.repeats)
        return

    print(f"{args.rows:,} rows x 22 columns (1% corrupted); each candidate in a fresh process, best of {args.repeats}", flush=True)
    runs = []
    for name in NAMES:
        print(f"measuring {name} ...", flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--only", name, "--rows", str(args.rows), "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))

    lazy, drop, contract, whole = runs
    frame_bytes = contract["frame_bytes"]
    assert contract["outcome"]["kept"] == drop["outcome"]["kept"], "both sides must keep the same rows"
    assert contract["outcome"]["quarantined"] == lazy["outcome"]["failing_rows"], "both sides must find the same rows"

    print(f"\nframe: {args.rows:,} rows x 22 columns, {frame_bytes / 2**20:.0f} MiB")
    print(f"{'':62} {'best s':>7} {'median s':>9} {'rows/s':>11} {'peak extra':>11} {'x frame':>8}")
    for run in runs:
        print(
            f"{run['name']:62} {run['best']:7.3f} {run['median']:9.3f} {args.rows / run['best']:11,.0f} "
            f"{run['peak_extra_bytes'] / 2**20:7.0f} MiB {run['peak_extra_bytes'] / frame_bytes:8.2f}"
        )
    print()
    print(f"contract checks vs pandera drop_invalid_rows: {drop['best'] / contract['best']:.1f}x faster (target >= 3x)")
    print(f"contract checks vs pandera lazy:              {lazy['best'] / contract['best']:.1f}x faster (target >= 1x)")
    print(f"full validation: {whole['best']:.2f} s (target < 1.5 s), peak {whole['peak_extra_bytes'] / frame_bytes:.2f}x the frame (target < 3x)")
    print(f"same rows found: {contract['outcome']['quarantined']:,} quarantined by both; full validation: {whole['outcome']}")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validation.json").write_text(json.dumps({"rows": args.rows, "frame_bytes": frame_bytes, "runs": runs}, indent=2))


NAMES = [
    "pandera lazy=True (failure cases)",
    "pandera drop_invalid_rows=True",
    "prefect-crisis contract checks + quarantine",
    "prefect-crisis full validation (+integrity, outliers, drift)",
]

if __name__ == "__main__":
    main()

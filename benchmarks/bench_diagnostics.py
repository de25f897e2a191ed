"""Diagnostics speed, side by side with Evidently 0.7 in one run.

100,000 labelled predictions x 20 numeric features, 3 classes, drift in 3
features (f02, f05, f07), written to parquet files that both sides read.

- prefect-crisis: `diagnose(...)` with confusion matrix, per-class figures,
  calibration, error over time, error slices and drift (PSI + KS) against the
  reference; best of 3, reading the parquet files included.
- Evidently 0.7: `DataDriftPreset` + `ClassificationPreset` on the same files.
  Evidently 0.7 does not import with pandas 3, so it gets its own virtual
  environment (benchmarks/.venv-evidently, built on first run) and runs as a
  subprocess (benchmarks/evidently_peer.py), which times its own reports.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_diagnostics.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np
import pandas as pd

from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.response.diagnostics import diagnose

HERE = Path(__file__).parent
PEER_VENV = HERE / ".venv-evidently"
DRIFTED = ("f02", "f05", "f07")
ROWS = 100_000


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print("building benchmarks/.venv-evidently (evidently 0.7, pandas < 3) ...", flush=True)
        venv.create(PEER_VENV, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "evidently==0.7.*", "pandas<3", "pyarrow"], check=True)
    return python


def write_files(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    frames = []
    for seed, drift in ((1, ()), (2, DRIFTED)):
        frame = make_batch(ROWS, seed=seed, with_label=False, drift_features=drift).drop(columns=["segment", "channel"])
        target = rng.integers(0, 3, ROWS)
        prediction = target.copy()
        wrong = rng.random(ROWS) < 0.15
        prediction[wrong] = (target[wrong] + 1) % 3
        frame["target"], frame["prediction"] = target, prediction
        frame["timestamp"] = pd.date_range("2026-11-01", periods=ROWS, freq="s", tz="UTC")
        frames.append(frame)
    paths = folder / "reference.parquet", folder / "current.parquet"
    for frame, path in zip(frames, paths, strict=True):
        frame.to_parquet(path)
    return paths


def crisis_run(reference_path: Path, current_path: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
    features = [c for c in current.columns if c.startswith("f")]
    proba = np.eye(3)[current["prediction"].to_numpy()] * 0.8 + 0.2 / 3
    report = diagnose(current["target"], current["prediction"], proba, current[features], current["timestamp"], reference[features])
    return time.perf_counter() - started, report.drifted_features


def main() -> None:
    python = peer_python()
    with tempfile.TemporaryDirectory() as folder:
        reference_path, current_path = write_files(Path(folder))
        print(f"{ROWS:,} labelled predictions x 20 features, 3 classes, drift in {', '.join(DRIFTED)}", flush=True)
        runs = [crisis_run(reference_path, current_path) for _ in range(3)]
        crisis_seconds, crisis_drifted = min(runs)
        print("running Evidently 0.7 in its own environment ...", flush=True)
        output = subprocess.run([python, HERE / "evidently_peer.py", reference_path, current_path], capture_output=True, text=True, check=True)
        peer = json.loads(output.stdout.strip().splitlines()[-1])
    peer_total = peer["drift_seconds"] + peer["classification_seconds"]
    print(f"\n{'':58} {'seconds':>8}  drifted features found")
    print(f"{'Evidently 0.7 DataDriftPreset':58} {peer['drift_seconds']:8.2f}  {', '.join(peer['drifted'])}")
    print(f"{'Evidently 0.7 ClassificationPreset':58} {peer['classification_seconds']:8.2f}")
    print(f"{'Evidently 0.7 total':58} {peer_total:8.2f}")
    print(f"{'prefect-crisis diagnose (all of it, reading files incl.)':58} {crisis_seconds:8.2f}  {', '.join(crisis_drifted)}")
    print(
        f"\nprefect-crisis is {peer_total / crisis_seconds:.1f}x faster (target >= 10x); same drifted features: {crisis_drifted == sorted(peer['drifted']) == list(DRIFTED)}"
    )
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "diagnostics.json").write_text(
        json.dumps({"rows": ROWS, "crisis_seconds": crisis_seconds, "crisis_drifted": crisis_drifted, "evidently": peer}, indent=2)
    )


if __name__ == "__main__":
    sys.exit(main())

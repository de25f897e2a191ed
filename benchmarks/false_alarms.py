"""False alarms of validation's statistics on clean data, by batch size.

Drift: the share of same-population feature pairs flagged as drifted, over
seeded draws per size and shape (normal, log-normal, Student t3, Poisson,
categorical), against the old rule (PSI > 0.2 alone). Outliers: the share of
rows of clean customer-table batches (30 skewed, heavy-tailed and discrete
columns) quarantined as outliers with fences learned from a 5,000-row
reference, against the old rule (modified z-score above 3.5 on each batch).

    .venv/bin/python benchmarks/false_alarms.py [--draws 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from prefect_crisis.blocks import DataContract
from prefect_crisis.tasks.drills.synthetic import CATEGORIES, CATEGORY_SHARES, COLUMN_SHAPES, customer_table
from prefect_crisis.tasks.validation.checks import validate_data
from prefect_crisis.tasks.validation.drift import DriftSettings, categorical_drift, numeric_drift, psi_categorical, psi_numeric

SIZES = (30, 89, 200, 1_000)
SHARES = CATEGORY_SHARES
SHAPES = COLUMN_SHAPES


def drift_rates(rows: int, draws: int) -> tuple[dict[str, float], float]:
    """Flag rate per shape now, and the old PSI > 0.2 rule's rate over all shapes."""
    settings = DriftSettings()
    rates, old = {}, []
    for shape, draw in SHAPES.items():
        rng = np.random.default_rng(rows)
        flagged = []
        for _ in range(draws):
            reference, current = draw(rng, rows), draw(rng, rows)
            flagged.append(numeric_drift("x", reference, current, settings).drifted)
            old.append(psi_numeric(reference, current, 10) > 0.2)
        rates[shape] = float(np.mean(flagged))
    rng = np.random.default_rng(rows)
    flagged = []
    for _ in range(draws):
        reference = pd.Series(rng.choice(CATEGORIES, rows, p=SHARES))
        current = pd.Series(rng.choice(CATEGORIES, rows, p=SHARES))
        flagged.append(categorical_drift("c", reference, current, settings).drifted)
        old.append(psi_categorical(reference, current) > 0.2)
    rates["categorical"] = float(np.mean(flagged))
    return rates, float(np.mean(old))


def old_outlier_rows(batch: pd.DataFrame) -> int:
    """Rows the old rule flagged: modified z-score above 3.5 on the batch, any numeric column."""
    flagged = np.zeros(len(batch), dtype=bool)
    for name in batch.columns:
        if name in ("customer_id", "plan"):
            continue
        values = batch[name].to_numpy(dtype=float)
        median = np.median(values)
        mad = np.median(np.abs(values - median))
        scale = mad / 0.6745 if mad > 0 else 1.253314 * np.mean(np.abs(values - median))
        if scale > 0:
            flagged |= np.abs(values - median) > 3.5 * scale
    return int(flagged.sum())


def outlier_rates(rows: int, contract: DataContract, batches_rows: int) -> tuple[float, float, int]:
    rng = np.random.default_rng(rows + 1)
    quarantined = old = total = rejected = 0
    for _ in range(max(5, batches_rows // rows)):
        batch = customer_table(rng, rows)
        report = validate_data(batch, contract).report
        rejected += report.verdict.value == "reject"
        quarantined += report.quarantined
        old += old_outlier_rows(batch)
        total += report.rows
    return quarantined / total, old / total, rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1_000, help="same-population pairs per size and shape")
    parser.add_argument("--rows", type=int, default=20_000, help="clean rows validated per batch size for outliers")
    args = parser.parse_args()
    started = time.perf_counter()

    print(f"Drift: share of same-population features flagged ({args.draws} draws per size and shape; limit 1%)")
    print(f"| rows per side | {' | '.join(SHAPES)} | categorical | before: PSI > 0.2 alone |")
    print("|---:|" + "---:|" * (len(SHAPES) + 2))
    for rows in SIZES:
        rates, old = drift_rates(rows, args.draws)
        print(f"| {rows:,} | " + " | ".join(f"{rate:.2%}" for rate in rates.values()) + f" | {old:.1%} |", flush=True)

    reference = customer_table(np.random.default_rng(0), 5_000)
    contract = DataContract.from_reference(reference, key_column="customer_id")
    print(f"\nOutliers: share of clean rows quarantined, 30 numeric columns, fences from a 5,000-row reference ({args.rows:,} rows per size)")
    print("| rows per batch | quarantined now | batches rejected now | before: modified z > 3.5 per batch |")
    print("|---:|---:|---:|---:|")
    for rows in SIZES:
        now, old, rejected = outlier_rates(rows, contract, args.rows)
        print(f"| {rows:,} | {now:.2%} | {rejected} | {old:.1%} |", flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

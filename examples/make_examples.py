"""Write the README's example data (seeded, so the files in the repository are
what this script writes): a churn-like reference, a new batch with a few
broken rows, and a labelled window for the crisis response.

    .venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def customers(rng: np.random.Generator, rows: int, first_id: int) -> pd.DataFrame:
    """Customers of a subscription product and whether they churned (depends on the features)."""
    tenure = rng.integers(0, 120, rows)
    spend = rng.lognormal(3.3, 0.6, rows).round(2)
    calls = rng.poisson(1.5, rows)
    plan = rng.choice(["free", "pro", "team"], rows, p=[0.6, 0.3, 0.1])
    logit = 0.8 - 0.035 * tenure + 0.7 * calls - 0.01 * spend
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    note = np.where(rng.random(rows) < 0.1, rng.choice(["moved", "price", "support"], rows), None)
    return pd.DataFrame(
        {
            "customer_id": first_id + np.arange(rows),
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "plan": plan,
            "note": pd.array(note, dtype="string"),
            "churned": churned,
        }
    )


def main() -> None:
    rng = np.random.default_rng(2026)
    reference = customers(rng, 1_000, first_id=100_000)
    batch = customers(rng, 400, first_id=200_000)
    # a few broken rows, as a feed has them: quarantined row by row, the batch is accepted
    batch.loc[3, "monthly_spend"] = -12.0
    batch.loc[17, "plan"] = "enterprise"
    batch.loc[42, "tenure_months"] = 900
    batch.loc[58, "monthly_spend"] = np.nan
    window = customers(rng, 400, first_id=300_000)
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    window["timestamp"] = [start + timedelta(seconds=9 * i) for i in range(len(window))]
    reference.to_parquet(HERE / "reference.parquet", index=False)
    batch.to_parquet(HERE / "batch.parquet", index=False)
    batch.to_csv(HERE / "batch.csv", index=False)
    window.to_parquet(HERE / "labelled-window.parquet", index=False)


if __name__ == "__main__":
    main()

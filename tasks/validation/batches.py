"""Load batches and references: parquet or CSV files (paths or fsspec URLs), or
the synthetic stream."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.tasks.drills.synthetic import make_batch

SyntheticCondition = Literal["clean", "corrupted", "drifted", "broken", "poisoned"]

# Share of rows given a defect: "corrupted" is quarantined row by row, "broken"
# is past any sane contract's limit and gets the whole batch rejected.
CORRUPT_FRACTION = {"corrupted": 0.02, "broken": 0.3}


def load_frame(uri: str) -> pd.DataFrame:
    """Read a parquet or CSV file into a DataFrame.

    Raises:
        DataInputError: the file is missing, unreadable, or neither parquet nor CSV.
    """
    if "://" not in uri and not Path(uri).exists():
        raise DataInputError(InputErrorReason.MISSING_SOURCE, f"batch {uri!r} does not exist: check the path")
    lowered = uri.lower()
    try:
        if lowered.endswith((".parquet", ".pq")):
            return pd.read_parquet(uri)
        if lowered.endswith((".csv", ".csv.gz")):
            return pd.read_csv(uri)
    except (OSError, ValueError) as error:
        raise DataInputError(
            InputErrorReason.UNREADABLE_SOURCE, f"cannot read batch {uri!r}: {error}"
        ) from error
    raise DataInputError(
        InputErrorReason.UNREADABLE_SOURCE,
        f"cannot read batch {uri!r}: expected a .parquet or .csv file",
    )


def synthetic_batch(condition: SyntheticCondition, rows: int, seed: int) -> pd.DataFrame:
    """One batch of the synthetic stream in the given condition."""
    if condition in CORRUPT_FRACTION:
        return make_batch(rows, seed=seed, corrupt_fraction=CORRUPT_FRACTION[condition])
    if condition == "drifted":
        return make_batch(rows, seed=seed, drift_features=("f01", "f03"))
    batch = make_batch(rows, seed=seed)
    if condition == "poisoned":
        # Labels flipped upstream: every value is valid, so validation passes it.
        batch["label"] = 1 - batch["label"]
    return batch


@task(name="load-batch", cache_policy=NO_CACHE)
def load_batch(
    batch_path: str | None, synthetic_condition: SyntheticCondition = "clean", rows: int = 5_000, seed: int = 0
) -> pd.DataFrame:
    """Read `batch_path`, or make a synthetic batch when it is None."""
    if batch_path is None:
        return synthetic_batch(synthetic_condition, rows, seed)
    return load_frame(batch_path)

"""Read batches and references: parquet or CSV files (paths or fsspec URLs). The
synthetic stream's conditions are named here; its batches are made by the
`load-batch` task (`prefect_crisis.tasks.validation.tasks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from prefect_crisis.core.errors import DataInputError, InputErrorReason

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
        raise DataInputError(InputErrorReason.UNREADABLE_SOURCE, f"cannot read batch {uri!r}: {error}") from error
    raise DataInputError(
        InputErrorReason.UNREADABLE_SOURCE,
        f"cannot read batch {uri!r}: expected a .parquet or .csv file",
    )

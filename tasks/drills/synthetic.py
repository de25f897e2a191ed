"""A synthetic stream of labelled batches, with corruption and drift on demand.

Used by the demo, the drill, the tests and the benchmarks, so all of them
exercise the same shapes: numeric features `f00..fNN`, two categorical
columns, and a binary label that depends on the features.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from prefect_crisis.blocks.contract import ColumnSpec, DataContract
from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.core.paths import validate_model_name

SEGMENTS = ["consumer", "smb", "enterprise", "public", "education"]
CHANNELS = ["web", "mobile", "partner"]
FEATURE_LIMIT = 50.0


def feature_names(n_numeric: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n_numeric)]


def synthetic_contract(n_numeric: int = 20, *, with_label: bool = True, **overrides) -> DataContract:
    """The contract the synthetic stream is written against."""
    columns = [ColumnSpec(name=name, dtype="float", min_value=-FEATURE_LIMIT, max_value=FEATURE_LIMIT) for name in feature_names(n_numeric)]
    columns += [
        ColumnSpec(name="segment", dtype="string", allowed_values=SEGMENTS),
        ColumnSpec(name="channel", dtype="string", allowed_values=CHANNELS),
    ]
    if with_label:
        columns.append(ColumnSpec(name="label", dtype="int", min_value=0, max_value=1, check_outliers=False, check_drift=False))
    return DataContract(columns=columns, **overrides)


def make_batch(
    rows: int,
    *,
    seed: int = 0,
    n_numeric: int = 20,
    corrupt_fraction: float = 0.0,
    drift_features: tuple[str, ...] = (),
    drift_shift: float = 1.5,
    with_label: bool = True,
) -> pd.DataFrame:
    """One batch of `rows` rows.

    Args:
        corrupt_fraction: share of rows given one defect each, in equal parts
            a missing value, an out-of-range value and an unknown category.
        drift_features: features whose mean moves by `drift_shift` standard deviations.

    Example:
        >>> batch = make_batch(1_000, seed=1, corrupt_fraction=0.03)
        >>> batch.shape, int(batch.isna().to_numpy().sum())
        ((1000, 23), 10)
    """
    rng = np.random.default_rng(seed)
    names = feature_names(n_numeric)
    features = rng.standard_normal((rows, n_numeric))
    for name in drift_features:
        features[:, names.index(name)] += drift_shift
    frame = pd.DataFrame(features, columns=names)
    frame["segment"] = pd.array(rng.choice(SEGMENTS, size=rows), dtype="str")
    frame["channel"] = pd.array(rng.choice(CHANNELS, size=rows, p=[0.6, 0.3, 0.1]), dtype="str")
    if with_label:
        signal = features[:, : min(5, n_numeric)] @ np.linspace(1.0, 0.2, min(5, n_numeric))
        frame["label"] = (signal + 0.5 * rng.standard_normal(rows) > 0).astype(np.int64)
    if corrupt_fraction > 0:
        _corrupt(frame, rng, names, corrupt_fraction)
    return frame


def _corrupt(frame: pd.DataFrame, rng: np.random.Generator, names: list[str], fraction: float) -> None:
    rows = len(frame)
    chosen = rng.choice(rows, size=max(1, int(rows * fraction)), replace=False)
    missing, out_of_range, unknown = np.array_split(chosen, 3)
    columns = rng.integers(0, len(names), size=len(chosen))
    values = frame[names].to_numpy(copy=True)
    values[missing, columns[: len(missing)]] = np.nan
    values[out_of_range, columns[len(missing) : len(missing) + len(out_of_range)]] = 10 * FEATURE_LIMIT
    frame[names] = values
    segment = frame["segment"].to_numpy(dtype=object)
    segment[unknown] = "unknown-segment"
    frame["segment"] = pd.array(segment, dtype="str")


def customer_table(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Thirty numeric columns shaped as a customer table has them, a key and a plan.

    Log-normal amounts, heavy-tailed scores (Student t, 3 degrees of freedom),
    Pareto revenues, Poisson visit counts and mostly-zero refunds: the shapes
    that break statistics tuned on Gaussians.

    Example:
        >>> table = customer_table(np.random.default_rng(0), 100)
        >>> table.shape, int(table["customer_id"].is_unique)
        ((100, 32), 1)
    """
    columns: dict[str, np.ndarray] = {"customer_id": rng.integers(0, 10**12) + np.arange(rows)}
    for i in range(6):
        columns[f"amount_{i}"] = rng.lognormal(3, 0.8 + 0.2 * i, rows).round(2)
    for i in range(6):
        columns[f"score_{i}"] = rng.standard_t(3, rows) * 10 + i
    for i in range(6):
        columns[f"revenue_{i}"] = ((rng.pareto(2.0 + 0.5 * i, rows) + 1) * 1_000).round(2)
    for i in range(6):
        columns[f"visits_{i}"] = rng.poisson(0.5 + i, rows)
    for i in range(6):
        # Mostly zero, then skewed: ties on most rows.
        columns[f"refunds_{i}"] = np.where(rng.random(rows) < 0.8, 0.0, rng.gamma(2, 50, rows)).round(2)
    columns["plan"] = rng.choice(["free", "pro", "team"], rows, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(columns)


# Column shapes real tables have, for false-alarm checks of validation's statistics:
# each draws `n` values of one population from a generator.
COLUMN_SHAPES = {
    "normal": lambda rng, n: rng.normal(50, 5, n),
    "log-normal": lambda rng, n: rng.lognormal(3, 1.2, n),
    "student-t3": lambda rng, n: rng.standard_t(3, n),
    "poisson": lambda rng, n: rng.poisson(2, n).astype(float),
}
# A categorical column with a long tail of rare categories.
CATEGORIES = np.array(["consumer", "smb", "enterprise", "public", "education", "partner", "other"])
CATEGORY_SHARES = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.04, 0.01])


# Below this the holdouts are too small for the promotion gate and the rollback
# decision to tell the story (a few rows decide nothing).
DEMO_MIN_ROWS = 1_000
DEMO_MAX_ROWS = 1_000_000


def demo_model_name(prefix: str = "synthetic", now: datetime | None = None) -> str:
    """A model name of its own for one demo run: `<prefix>-<UTC time>-<4 hex>`."""
    when = now or datetime.now(UTC)
    return validate_model_name(f"{prefix}-{when:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}")


def check_demo_rows(rows: int) -> int:
    """`rows` if the demo can tell its story with batches of that size, else a one-line error."""
    if isinstance(rows, bool) or not isinstance(rows, int) or not DEMO_MIN_ROWS <= rows <= DEMO_MAX_ROWS:
        raise DataInputError(
            InputErrorReason.TOO_FEW_ROWS if isinstance(rows, int) and rows < DEMO_MIN_ROWS else InputErrorReason.EMPTY_FRAME,
            f"--rows {rows!r}: the demo needs between {DEMO_MIN_ROWS:,} and {DEMO_MAX_ROWS:,} rows per batch",
        )
    return rows

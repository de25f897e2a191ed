"""How `DataContract.from_reference` learns a contract from reference data: each
column's logical type, its codes, classes or categories, its floor and outlier
fences, as plain functions over pandas Series (no Prefect: the Block calls them,
and validation reads `MIN_REFERENCE_ROWS`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from prefect_crisis.core.contract_spec import did_you_mean
from prefect_crisis.core.errors import ContractError, ContractErrorReason
from prefect_crisis.core.fences import rate_per_side, reference_fences

# A reference smaller than this cannot stand for a population (drift, fences).
MIN_REFERENCE_ROWS = 30
# A category seen once is a sign of unseen ones: Good-Turing puts the chance
# that a new row brings an unseen category at (categories seen once) / rows.
# Above this chance, categories are not enforced.
MAX_UNSEEN_CATEGORY_RATE = 0.001


def infer_dtype(series: pd.Series) -> str:
    """The contract's logical type of a reference column.

    Example:
        >>> [infer_dtype(pd.Series(v)) for v in ([1, 2], [1.5, None], [True], ["a"], pd.to_datetime(["2024-01-01"]))]
        ['int', 'float', 'bool', 'string', 'datetime']
    """
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_integer_dtype(dtype):
        return "int"
    if ptypes.is_numeric_dtype(dtype):
        return "float"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def known_categories(series: pd.Series, max_categories: int) -> list[str] | None:
    """The categories to enforce, or None when there are too many or unseen ones are likely.

    Example:
        >>> known_categories(pd.Series(["a", "b"] * 500), 50)
        ['a', 'b']
        >>> known_categories(pd.Series([f"id{i}" for i in range(1000)]), 50) is None
        True
    """
    counts = series.dropna().astype(str).value_counts()
    if counts.empty or len(counts) > max_categories:
        return None
    if (counts == 1).sum() / counts.sum() > MAX_UNSEEN_CATEGORY_RATE:
        return None
    return sorted(counts.index.tolist())


# An integral column with at most this many distinct values, each in at least
# `MIN_LEVEL_SHARE` of the rows and `MIN_LEVEL_ROWS` rows, is a set of codes: a value
# outside it is an unknown category. A rare value is the sign of a measurement's
# tail, where unseen values are to be expected (a pixel's 14 between 13 and 15).
MAX_LEVELS = 20
MIN_LEVEL_ROWS = 5
MIN_LEVEL_SHARE = 0.01


def _finite(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def _codes(values: np.ndarray, dtype: str, limit: int, min_rows: int, min_share: float = 0.0) -> list | None:
    """The distinct values of an integral column, when they are few and each well supported; else None."""
    if len(values) == 0 or not np.all(values == np.round(values)):
        return None
    levels, counts = np.unique(values, return_counts=True)
    if not 1 <= len(levels) <= limit or counts.min() < max(min_rows, min_share * len(values)):
        return None
    return [int(level) if dtype == "int" else float(level) for level in levels]


def learn_kind(name: str, series: pd.Series, *, key_column: str | None, label_column: str | None, max_categories: int, max_levels: int) -> dict:
    """A column's type, nullability and, for codes, classes and categories, its set of values."""
    dtype = infer_dtype(series)
    spec: dict = {"name": name, "dtype": dtype, "nullable": bool(series.isna().any())}
    if name == key_column:
        # Identifiers are unique by design: their values say nothing about drift or outliers.
        spec.update(check_drift=False, check_outliers=False)
        return spec
    if dtype in ("bool", "datetime"):
        spec["check_outliers"] = False
    if name == label_column:
        # Labels arrive with the truth, and a classifier knows only the classes it was trained on.
        spec["check_drift"] = False
        if dtype == "string":
            classes = sorted(series.dropna().astype(str).unique().tolist())
            spec["allowed_values"] = classes if len(classes) <= max_categories else None
        elif dtype in ("int", "float"):
            codes = _codes(_finite(series), dtype, max_categories, min_rows=1)
            if codes is not None:
                spec.update(allowed_values=codes, check_outliers=False)
        return spec
    if dtype == "string":
        spec["allowed_values"] = known_categories(series, max_categories)
    elif dtype in ("int", "float"):
        codes = _codes(_finite(series), dtype, max_levels, min_rows=MIN_LEVEL_ROWS, min_share=MIN_LEVEL_SHARE)
        if codes is not None and len(codes) > 1:
            spec.update(allowed_values=codes, check_outliers=False)
    return spec


def learn_bounds(spec: dict, series: pd.Series, *, margin: float | None, fence_rate: float) -> None:
    """A numeric column's floor, tolerance bands, optional hard range, and its value when constant."""
    values = _finite(series)
    if len(values) == 0:
        return
    low, high = float(values.min()), float(values.max())
    floor = 0.0 if low >= 0 else None
    if low == high:
        spec["constant_value"] = low
    fences = reference_fences(values, fence_rate)
    if fences is not None:
        spec["outlier_low"] = None if fences.low is None or (floor is not None and fences.low <= floor) else fences.low
        spec["outlier_high"] = fences.high
    spec["min_value"] = floor
    if margin is not None:
        span = high - low or abs(high) or 1.0
        spec["min_value"] = low - margin * span if floor is None else max(floor, low - margin * span)
        spec["max_value"] = high + margin * span
        if spec["dtype"] == "int":
            spec["min_value"], spec["max_value"] = float(math.floor(spec["min_value"])), float(math.ceil(spec["max_value"]))


def learn_columns(
    frame: pd.DataFrame,
    *,
    key_column: str | None,
    label_column: str | None,
    margin: float | None,
    max_categories: int,
    max_levels: int,
    outlier_rate: float,
) -> list[dict]:
    """The column specs (as `ColumnSpec` keyword arguments) learned from a reference;
    see `DataContract.from_reference` for what is learned.

    Raises:
        ContractError: the reference is too small, or names a key or label column it lacks.

    Example:
        >>> frame = pd.DataFrame({"id": range(40), "plan": ["free", "pro"] * 20})
        >>> learn_columns(frame, key_column="id", label_column=None, margin=None, max_categories=50, max_levels=20, outlier_rate=0.01)[1]
        {'name': 'plan', 'dtype': 'string', 'nullable': False, 'allowed_values': ['free', 'pro']}
    """
    if not isinstance(frame, pd.DataFrame) or len(frame) < MIN_REFERENCE_ROWS:
        rows = len(frame) if isinstance(frame, pd.DataFrame) else 0
        raise ContractError(
            ContractErrorReason.REFERENCE_TOO_SMALL,
            f"the reference has {rows} rows; at least {MIN_REFERENCE_ROWS} are needed to learn ranges, fences and drift baselines",
        )
    names = [str(c) for c in frame.columns]
    for role, name in (("key_column", key_column), ("label_column", label_column)):
        if name is not None and name not in frame.columns:
            raise ContractError(
                ContractErrorReason.UNKNOWN_COLUMN,
                f"{role} {name!r} is not a column of the reference{did_you_mean(name, names)}; it has {names}",
                [name],
            )
    specs = [
        learn_kind(str(name), frame[name], key_column=key_column, label_column=label_column, max_categories=max_categories, max_levels=max_levels)
        for name in frame.columns
    ]
    fenced = [spec for spec in specs if spec["dtype"] in ("int", "float") and spec.get("check_outliers", True)]
    fence_rate = rate_per_side(outlier_rate, len(fenced))
    for spec in fenced:
        learn_bounds(spec, frame[spec["name"]], margin=margin, fence_rate=fence_rate)
    return specs

"""Infer a data contract's columns from a reference frame.

What `DataContract.from_reference` learns, column by column: the type, whether
nulls occur, a range widened by a margin, the categories of a string column
(when the reference has seen all of them), and the outlier fences that
validation would otherwise have to guess from each batch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

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


def widened_range(values: np.ndarray, margin: float, fences: tuple[float | None, float | None], integral: bool) -> tuple[float, float]:
    """The reference's range widened by `margin` of its span, and never inside the outlier fences.

    A column that never goes below zero keeps zero as its floor: a negative
    count or amount is wrong, not rare.
    """
    low, high = float(values.min()), float(values.max())
    span = high - low or abs(high) or 1.0
    min_value, max_value = low - margin * span, high + margin * span
    if fences[0] is not None:
        min_value = min(min_value, fences[0])
    if fences[1] is not None:
        max_value = max(max_value, fences[1])
    if low >= 0:
        min_value = max(min_value, 0.0)
    if integral:
        min_value, max_value = float(math.floor(min_value)), float(math.ceil(max_value))
    return min_value, max_value


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


def infer_column(
    name: str,
    series: pd.Series,
    *,
    margin: float,
    fence_rate: float,
    max_categories: int,
    identifier: bool,
) -> dict:
    """The ColumnSpec fields of one reference column (a plain dict, validated by the block)."""
    dtype = infer_dtype(series)
    spec: dict = {"name": name, "dtype": dtype, "nullable": bool(series.isna().any())}
    if identifier:
        # Identifiers are unique by design: their values say nothing about drift or outliers.
        spec.update(check_drift=False, check_outliers=False)
        return spec
    if dtype in ("int", "float"):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        if len(values):
            fences = reference_fences(values, fence_rate)
            bounds = (fences.low, fences.high) if fences else (None, None)
            spec["min_value"], spec["max_value"] = widened_range(values, margin, bounds, integral=dtype == "int")
            spec["outlier_low"], spec["outlier_high"] = bounds
    elif dtype == "string":
        spec["allowed_values"] = known_categories(series, max_categories)
    if dtype in ("bool", "datetime"):
        spec["check_outliers"] = False
    return spec


def infer_columns(
    frame: pd.DataFrame,
    *,
    key_column: str | None,
    label_column: str | None,
    margin: float,
    outlier_rate: float,
    max_categories: int,
) -> list[dict]:
    """ColumnSpec fields for every column of the reference."""
    numeric_checked = [
        name
        for name in frame.columns
        if name not in (key_column, label_column) and infer_dtype(frame[name]) in ("int", "float")
    ]
    fence_rate = rate_per_side(outlier_rate, len(numeric_checked))
    specs = []
    for name in frame.columns:
        spec = infer_column(
            str(name),
            frame[name],
            margin=margin,
            fence_rate=fence_rate,
            max_categories=max_categories,
            identifier=name == key_column,
        )
        if name == label_column:
            # Labels arrive late and are classes, not measurements.
            spec.update(check_outliers=False, check_drift=False, outlier_low=None, outlier_high=None)
        specs.append(spec)
    return specs

"""Helpers `DataContract.from_reference` learns a column with: its logical type and, for a string column, its
categories (when the reference has seen all of them)."""

from __future__ import annotations


import pandas as pd
from pandas.api import types as ptypes


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



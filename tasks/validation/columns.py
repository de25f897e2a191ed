"""Bring one column to the type its contract declares, saying what was done.

Safe coercions (int to float, numeric text to numbers, integral floats to
int, numbers to strings) are applied and reported; values that cannot be
converted are flagged per row (`wrong_type`): one "N/A" in a numeric column
quarantines its row, and validation rejects the batch only when a column's
wrong values are more than the quarantine ratio allows (a broken feed).
Values that cannot even be compared (lists, dicts) raise a `DataInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from prefect_crisis.core.contract_spec import ColumnSpec
from prefect_crisis.core.errors import DataInputError, InputErrorReason

# What a bool column's values mean. Numbers equal to 1 and 0 (1.0, numpy's integers)
# find the bool keys, since 1 == True and hash(1) == hash(True): a key 1 beside True
# would be the same key written twice. Text is stripped and lowercased first.
TRUTH_VALUES = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True, eq=False)
class CoercedColumn:
    """A column in its declared type.

    Attributes:
        series: the column in its declared type (same length and order).
        values: float64 array for numeric columns (NaN for missing), else None.
        null: mask of missing values.
        wrong_type: mask of values that could not take the declared type, or None.
        coercion: what was converted, e.g. "int64 -> float", or None.
    """

    series: pd.Series
    values: np.ndarray | None
    null: np.ndarray
    wrong_type: np.ndarray | None = None
    coercion: str | None = None

    @property
    def numbers(self) -> np.ndarray:
        """`values` of a numeric column (the checks that read numbers ask for them here).

        Raises:
            DataInputError: the column was not coerced to numbers.
        """
        if self.values is None:
            raise DataInputError(
                InputErrorReason.TEXT_IN_NUMERIC_COLUMN, f"column {self.series.name!r} holds no numbers to check", column=str(self.series.name)
            )
        return self.values


def _all_null_error(spec: ColumnSpec) -> DataInputError:
    return DataInputError(
        InputErrorReason.ALL_NULL_COLUMN,
        f"column {spec.name!r} has no values at all: check the feed that fills it, or drop it from the contract",
        column=spec.name,
    )


def _numeric(series: pd.Series, spec: ColumnSpec) -> CoercedColumn:
    dtype = series.dtype
    coercion = None
    unparsed = np.zeros(len(series), dtype=bool)
    if ptypes.is_bool_dtype(dtype) or not ptypes.is_numeric_dtype(dtype):
        original_null = series.isna().to_numpy()
        try:
            parsed = pd.to_numeric(series.astype(object) if ptypes.is_bool_dtype(dtype) else series, errors="coerce")
        except (TypeError, ValueError) as error:
            raise DataInputError(
                InputErrorReason.TEXT_IN_NUMERIC_COLUMN,
                f"column {spec.name!r} is declared {spec.dtype} but holds values that are not numbers ({error})",
                column=spec.name,
            ) from error
        # Text that is not a number ("N/A", "twelve") makes its row wrong_type;
        # validation rejects the batch when that is more than the quarantine allows.
        unparsed = parsed.isna().to_numpy() & ~original_null
        series = parsed
        coercion = f"{dtype} -> {spec.dtype}"
    try:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, OverflowError) as error:
        raise DataInputError(
            InputErrorReason.TEXT_IN_NUMERIC_COLUMN,
            f"column {spec.name!r} is declared {spec.dtype} but its values do not fit a float64 ({error})",
            column=spec.name,
        ) from error
    null = np.isnan(values) & ~unparsed
    if null.all():
        raise _all_null_error(spec)
    wrong_type = unparsed if unparsed.any() else None
    if spec.dtype == "int":
        if ptypes.is_float_dtype(series.dtype):
            with np.errstate(invalid="ignore"):
                non_integral = np.isfinite(values) & (values != np.floor(values))
            wrong_type = non_integral if wrong_type is None else wrong_type | non_integral
            coercion = coercion or f"{dtype} -> int (integral values)"
        elif coercion is None and not ptypes.is_integer_dtype(series.dtype):
            coercion = f"{dtype} -> int"
    elif coercion is None and not ptypes.is_float_dtype(series.dtype):
        coercion = f"{dtype} -> float"
    if spec.dtype == "float" and coercion is None:
        pass_through = series
    else:
        pass_through = pd.Series(values, index=series.index, name=series.name)
    return CoercedColumn(pass_through, values, null, wrong_type, coercion)


def _string(series: pd.Series, spec: ColumnSpec) -> CoercedColumn:
    null = series.isna().to_numpy()
    if null.all():
        raise _all_null_error(spec)
    if ptypes.is_string_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
        return CoercedColumn(series, None, null)
    # Numbers or mixed objects: compare by their text, keep missing values missing.
    as_text = series.astype(str).where(~null)
    return CoercedColumn(as_text, None, null, coercion=f"{series.dtype} -> string")


def _boolean(series: pd.Series, spec: ColumnSpec) -> CoercedColumn:
    null = series.isna().to_numpy()
    if null.all():
        raise _all_null_error(spec)
    if ptypes.is_bool_dtype(series.dtype):
        return CoercedColumn(series, None, null)
    lowered = series.map(lambda value: value.strip().lower() if isinstance(value, str) else value)
    mapped = lowered.map(lambda value: TRUTH_VALUES.get(value) if _hashable(value) else None)
    wrong_type = mapped.isna().to_numpy() & ~null
    return CoercedColumn(mapped.astype(object), None, null, wrong_type, coercion=f"{series.dtype} -> bool")


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _datetime(series: pd.Series, spec: ColumnSpec) -> CoercedColumn:
    null = series.isna().to_numpy()
    if null.all():
        raise _all_null_error(spec)
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return CoercedColumn(series, None, null)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    wrong_type = parsed.isna().to_numpy() & ~null
    return CoercedColumn(parsed, None, null, wrong_type, coercion=f"{series.dtype} -> datetime")


def coerce_column(series: pd.Series, spec: ColumnSpec) -> CoercedColumn:
    """Return `series` in the type `spec` declares, with null and wrong-type masks."""
    if spec.is_numeric:
        return _numeric(series, spec)
    if spec.dtype == "string":
        return _string(series, spec)
    if spec.dtype == "bool":
        return _boolean(series, spec)
    return _datetime(series, spec)

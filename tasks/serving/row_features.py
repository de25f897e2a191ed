"""A request's rows as the served models read them: the needed columns as floats, which cells are valid,
and why a cell is not (plain numpy and pandas).

A cell is valid when it is a finite number within float32's range (scikit-learn's trees read float32: a larger
value is infinite to them, and one such row would fail the whole batch). Text and booleans are invalid, never
coerced; numbers sent as text are numbers; a column absent from the input is invalid on every row.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prefect_crisis.core.errors import ServingError, ServingInputError
from prefect_crisis.core.vocabulary import Responder

PRIMARY, FALLBACK, NONE = 0, 1, 2  # codes of the answered_by column
RESPONDERS = [Responder.PRIMARY.value, Responder.FALLBACK.value, Responder.NONE.value]
# Categorical columns with dtypes built once: 10,000 strings per answer would cost more than the prediction.
RESPONDER_DTYPE = pd.CategoricalDtype(RESPONDERS)
# scikit-learn's trees read float32: a larger value is infinite to them, and one such row would fail the whole batch.
FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING, NOT_FINITE, NOT_A_NUMBER, BOOLEAN, ABSENT = range(5)  # why a cell is invalid
INVALID = {
    MISSING: "is missing",
    NOT_FINITE: "is infinite or beyond float32's range",
    NOT_A_NUMBER: "is not a number",
    BOOLEAN: "is a boolean, not a number",
    ABSENT: "is not in the input",
}


@functools.lru_cache(maxsize=64)
def version_dtype(versions: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(versions))


@dataclass(frozen=True, eq=False)
class Features:
    """A request's needed columns as floats, and which cells are valid (None: all are); `flags` marks cells that
    are invalid for a reason the float value does not show: (column index, row mask, cause: text, boolean, absent)."""

    frame: pd.DataFrame
    values: np.ndarray
    valid: np.ndarray | None
    flags: tuple[tuple[int, np.ndarray, int], ...] = ()


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A column that is not plainly numeric as floats, with masks of its booleans and of its text (None: none)."""
    if column.dtype.kind == "b":
        return np.full(len(column), np.nan), np.ones(len(column), dtype=bool), None
    if column.dtype.kind in "mMcV":  # times, durations, complex numbers, raw bytes: not a feature value
        return np.full(len(column), np.nan), None, np.ones(len(column), dtype=bool)
    objects = column.to_numpy(dtype=object)
    booleans = np.fromiter((isinstance(value, (bool, np.bool_)) for value in objects), dtype=bool, count=len(objects))
    present = pd.notna(objects) & ~booleans
    try:
        values = pd.to_numeric(pd.Series(np.where(booleans, None, objects), dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    except (OverflowError, TypeError, ValueError):  # an integer too large for a float: parse value by value
        values = np.array([_number(value) for value in objects], dtype=np.float64)
        values[booleans] = np.nan
    text = present & np.isnan(values)
    return values, booleans if booleans.any() else None, text if text.any() else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf
    except (TypeError, ValueError):
        return math.nan


def read_features(frame: Any, needed: tuple[str, ...], answerable: tuple[tuple[str, ...], ...]) -> Features:
    """The needed columns of a request as floats, with the valid cells marked.

    A cell is valid when it is a finite number within float32's range; text and booleans are invalid, never coerced
    (numbers sent as text are numbers). Columns absent from the input are invalid on every row.

    Raises:
        ServingInputError: not a table, or no model in `answerable` (their column lists) finds all its columns.

    Example:
        >>> read = read_features(pd.DataFrame({"a": [1.0, np.nan], "b": ["2", "x"]}), ("a", "b"), (("a", "b"),))
        >>> read.values.tolist(), read.valid.tolist()
        ([[1.0, 2.0], [nan, nan]], [[True, True], [False, False]])
    """
    if not isinstance(frame, pd.DataFrame):
        try:
            frame = pd.DataFrame(frame)
        except (ValueError, TypeError) as error:
            raise ServingInputError(f"the input is not a table of rows ({error}): send a dataframe_split or dataframe_records body") from None
    present = set(frame.columns)
    absent = [name for name in needed if name not in present]
    if absent and not any(all(name in present for name in columns) for columns in answerable):
        shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
        raise ServingInputError(
            f"the input lacks column(s) {shown}: the served models read {len(needed)} columns ({', '.join(needed[:8])}{', ...' if len(needed) > 8 else ''})"
        )
    dtypes, rows = frame.dtypes, len(frame)
    flags: list[tuple[int, np.ndarray, int]] = []
    if not absent and all(dtypes[name].kind in "iuf" for name in needed):
        # The usual request: plain numbers, and no column lookup when the frame is exactly the needed columns.
        same = len(frame.columns) == len(needed) and tuple(frame.columns) == needed
        values = (frame if same else frame[list(needed)]).to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        columns = []
        for index, name in enumerate(needed):
            if name not in present:
                columns.append(np.full(rows, np.nan))
                flags.append((index, np.ones(rows, dtype=bool), ABSENT))
            elif dtypes[name].kind in "iuf":
                columns.append(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                values, booleans, text = _numbers(frame[name])
                columns.append(values)
                flags += [(index, mask, cause) for mask, cause in ((text, NOT_A_NUMBER), (booleans, BOOLEAN)) if mask is not None]
        values = np.column_stack(columns) if columns else np.empty((rows, 0))
    # Two reductions decide the usual request (all valid) without a mask; NaN fails both comparisons.
    if not flags and (not values.size or (values.min() >= -FLOAT32_MAX and values.max() <= FLOAT32_MAX)):
        return Features(frame, values, None)
    with np.errstate(invalid="ignore"):
        valid = np.abs(values) <= FLOAT32_MAX  # False for NaN and +-inf too
    return Features(frame, values, valid, tuple(flags))


def invalid_reasons(features: Features, rows: np.ndarray, columns: list[int], needed: tuple[str, ...]) -> np.ndarray:
    """Per row of `rows` (each with an invalid cell among `columns`), its first invalid column and why, as text.

    Built per distinct (column, cause), not per row: a feed that drops a column sends thousands of such rows.
    """
    if features.valid is None:
        raise ServingError("invalid_reasons called for features whose every cell is valid: there is no invalid cell to explain")
    columns_array = np.asarray(columns)
    column = columns_array[np.argmin(features.valid[np.ix_(rows, columns_array)], axis=1)]
    cause = np.where(np.isnan(features.values[rows, column]), MISSING, NOT_FINITE)
    for index, mask, flagged in features.flags:
        cause[(column == index) & mask[rows]] = flagged
    keys, inverse = np.unique(column * 8 + cause, return_inverse=True)
    texts = np.array([f"{needed[key // 8]!r} {INVALID[key % 8]}" for key in keys.tolist()], dtype=object)
    return texts[inverse.reshape(-1)]


def row_count(frame: Any) -> int:
    try:
        return len(frame)
    except TypeError:  # a scalar, or a 0-d array: no rows
        return 0


def placed(answers: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """`answers` of `rows` placed in a column of `count` rows (zeros elsewhere)."""
    column = np.zeros(count, dtype=answers.dtype)
    column[rows] = answers
    return column

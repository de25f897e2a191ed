"""The row checks of one column, vectorised: its type, nulls, range, codes and
categories, and outliers beyond its fences; each check gives a boolean mask over
the batch's rows. Also which columns are checked for outliers and drift, and the
finding for a column that was constant in the reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefect_crisis.core.contract_spec import ColumnSpec, ContractSpec
from prefect_crisis.core.fences import Fences, batch_fences, rate_per_side, reference_fences
from prefect_crisis.core.vocabulary import RowReason
from prefect_crisis.tasks.validation.columns import CoercedColumn, coerce_column
from prefect_crisis.tasks.validation.drift import deterministic_sample
from prefect_crisis.tasks.validation.report import EXAMPLES_PER_FAILURE, Finding, FindingReason


def column_fences(spec: ColumnSpec, contract: ContractSpec, reference: pd.DataFrame | None) -> Fences | None:
    """The outlier fences of one numeric column: stored in the contract, else
    learned from the reference; None means the batch sets its own."""
    if spec.outlier_low is not None or spec.outlier_high is not None:
        return Fences(spec.outlier_low, spec.outlier_high)
    if reference is None or spec.name not in reference.columns:
        return None
    # The same deterministic sample drift uses: 100,000 rows place the tail's
    # order statistics well, and a million would cost ten times as much.
    values = pd.to_numeric(reference[spec.name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return reference_fences(deterministic_sample(values, contract.drift_sample_size, seed=3), outlier_rate(contract))


def checks_outliers(spec: ColumnSpec, contract: ContractSpec) -> bool:
    """True for a numeric column checked for outliers; never the key column,
    an identifier whose new values lie outside the reference by design."""
    return spec.is_numeric and spec.check_outliers and spec.name != contract.key_column


def checks_drift(spec: ColumnSpec, contract: ContractSpec) -> bool:
    """True for a column compared with the reference; never the key column."""
    return spec.check_drift and spec.dtype != "datetime" and spec.name != contract.key_column


def outlier_rate(contract: ContractSpec) -> float:
    """The false-flag budget of one side of one checked column."""
    checked = sum(1 for spec in contract.columns if checks_outliers(spec, contract))
    return rate_per_side(contract.outlier_rate, checked)


RowFinding = tuple[RowReason, str | None, np.ndarray]


def check_column(spec: ColumnSpec, column: CoercedColumn, contract: ContractSpec, fences: Fences | None) -> list[RowFinding]:
    findings: list[RowFinding] = []
    wrong_type = column.wrong_type if column.wrong_type is not None else np.zeros(len(column.null), dtype=bool)
    findings.append((RowReason.WRONG_TYPE, spec.name, wrong_type))
    if not spec.nullable:
        findings.append((RowReason.NULL, spec.name, column.null))
    if spec.is_numeric:
        values = column.numbers
        finite = np.isfinite(values)
        findings.append((RowReason.NOT_FINITE, spec.name, ~finite & ~column.null & ~wrong_type))
        out_of_range = np.zeros(len(values), dtype=bool)
        if spec.min_value is not None or spec.max_value is not None:
            with np.errstate(invalid="ignore"):
                low = values < spec.min_value if spec.min_value is not None else False
                high = values > spec.max_value if spec.max_value is not None else False
            out_of_range = finite & (low | high)
            findings.append((RowReason.OUT_OF_RANGE, spec.name, out_of_range))
        if spec.allowed_values is not None:
            # Codes and classes: a value the reference never held is unknown, however near.
            unknown = finite & ~np.isin(values, np.asarray(spec.allowed_values, dtype=float)) & ~out_of_range & ~wrong_type
            findings.append((RowReason.UNKNOWN_CATEGORY, spec.name, unknown))
            out_of_range = out_of_range | unknown
        if checks_outliers(spec, contract):
            # An outlier is a value the contract allows but the column's
            # population makes implausible; a value already out of range needs
            # no second reason.
            fences = fences or batch_fences(values, outlier_rate(contract), contract.outlier_min_rows)
            if fences is not None:
                findings.append((RowReason.OUTLIER, spec.name, fences.outside(values) & ~out_of_range))
    elif spec.allowed_values is not None:
        known = column.series.isin(spec.allowed_values).to_numpy()
        findings.append((RowReason.UNKNOWN_CATEGORY, spec.name, ~known & ~column.null))
    return findings


def coerce_and_check(
    spec: ColumnSpec, series: pd.Series, contract: ContractSpec, reference: pd.DataFrame | None
) -> tuple[CoercedColumn, list[RowFinding]]:
    column = coerce_column(series, spec)
    fences = column_fences(spec, contract, reference) if checks_outliers(spec, contract) else None
    return column, check_column(spec, column, contract, fences)


def constant_changed(spec: ColumnSpec, column: CoercedColumn, flagged: np.ndarray, index: pd.Index) -> list[Finding]:
    """A finding when a column constant in the reference holds other values."""
    values = column.numbers
    with np.errstate(invalid="ignore"):
        other = np.isfinite(values) & (values != spec.constant_value)
    if not other.any():
        return []
    positions = np.flatnonzero(other)
    seen = ", ".join(f"{value:g}" for value in np.unique(values[positions])[:EXAMPLES_PER_FAILURE])
    kept = int((other & ~flagged).sum())
    return [
        Finding(
            FindingReason.CONSTANT_CHANGED,
            spec.name,
            f"column {spec.name!r} was constant {spec.constant_value:g} in the reference; {len(positions)} rows hold "
            f"other values ({seen}), {kept} of them kept: a model trained on the reference never learnt from it",
            len(positions),
            tuple(index[positions[:EXAMPLES_PER_FAILURE]].tolist()),
        )
    ]

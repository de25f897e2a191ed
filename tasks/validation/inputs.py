"""Whether a batch and a contract can be validated at all: the input is a frame with
distinct column names, the contract names only columns it declares, and the batch's
columns fit the contract's (the reasons it does not become rejection reasons).
"""

from __future__ import annotations

import pandas as pd

from prefect_crisis.core.contract_spec import ContractSpec, did_you_mean
from prefect_crisis.core.errors import ContractError, ContractErrorReason, DataInputError, InputErrorReason


def check_input(frame: object) -> None:
    """Raise `DataInputError` for input that cannot be validated row by row."""
    if not isinstance(frame, pd.DataFrame):
        raise DataInputError(
            InputErrorReason.NOT_A_DATAFRAME,
            f"expected a pandas DataFrame, got {type(frame).__name__}: load the batch with pandas first",
        )
    if frame.empty:
        raise DataInputError(
            InputErrorReason.EMPTY_FRAME,
            f"the batch is empty ({len(frame)} rows x {frame.shape[1]} columns): nothing to validate",
        )
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if repeated:
        raise DataInputError(
            InputErrorReason.DUPLICATE_COLUMN_NAMES,
            f"the batch has duplicate column names {repeated}: rename or drop them before validating",
        )


def check_contract(contract: ContractSpec, reference: pd.DataFrame | None = None) -> None:
    """Raise `ContractError` when the contract names columns it does not declare."""
    declared = set(contract.column_names)
    if contract.key_column is not None and contract.key_column not in declared:
        raise ContractError(
            ContractErrorReason.UNKNOWN_COLUMN,
            f"key_column {contract.key_column!r} is not a declared column; declared: {sorted(declared)}",
            [contract.key_column],
        )
    if reference is not None:
        drift_columns = [c.name for c in contract.columns if c.check_drift and c.required]
        missing = [name for name in drift_columns if name not in reference.columns]
        if missing:
            raise ContractError(
                ContractErrorReason.INCOMPATIBLE_REFERENCE,
                f"the reference frame lacks contract columns {missing}: rebuild the reference from a batch that has them",
                missing,
            )


def column_mismatches(frame: pd.DataFrame, contract: ContractSpec) -> list[str]:
    """Why the batch's columns do not fit the contract, one line each (empty: they fit).

    A required column that is missing is named with the batch's unknown
    columns, each with the contract column it most resembles (a typo in a
    CSV header shows as both).

    Example:
        >>> from prefect_crisis.core.contract_spec import ColumnSpec, ContractSpec
        >>> contract = ContractSpec(columns=[ColumnSpec(name="mean_radius"), ColumnSpec(name="label", dtype="int")])
        >>> column_mismatches(pd.DataFrame({"mean_radus": [1.0], "label": [0]}), contract)
        ["missing required columns ['mean_radius']; the batch has columns the contract does not name: 'mean_radus' (did you mean 'mean_radius'?)"]
    """
    declared = contract.column_names
    missing = [c.name for c in contract.columns if c.required and c.name not in frame.columns]
    unknown = [str(name) for name in frame.columns if name not in set(declared)]
    absent = [name for name in declared if name not in frame.columns]

    def named(names: list[str]) -> str:
        return ", ".join(f"{name!r}{did_you_mean(name, absent or declared)}" for name in names)

    if missing:
        line = f"missing required columns {missing}"
        if unknown:
            line += f"; the batch has columns the contract does not name: {named(unknown)}"
        return [line]
    if unknown and not contract.allow_extra_columns:
        return [f"columns not in the contract {unknown}: {named(unknown)}"]
    return []

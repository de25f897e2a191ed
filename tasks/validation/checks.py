"""Data validation with quarantine (seed slide 4), as plain functions.

`validate_data(frame, contract, reference)` runs every check lazily, in the
manner of pandera's `lazy=True`: each check yields a boolean row mask, all
masks are collected, and only then are rows split into kept and quarantined.
A quarantined row carries every reason that applies, and the original index is
preserved on both sides, so `kept + quarantined == rows` always holds.

The checks are vectorised per column (numpy on the column's array); the per-row
reason strings are built only for the failing rows, which is what keeps this
fast on millions of rows.

Besides row reasons, a report carries findings: facts about the batch as a
whole that quarantine no row (a column constant in the reference now varies).
`training_input_findings` (in `labels`) gives the same kind of findings for a
labelled batch that cannot train a sane classifier.

The checks themselves live beside this module: `inputs` (can the batch be
validated), `column_checks` (one column's masks), `duplicates`, `drift`; the
report's values in `report`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prefect_crisis.core.contract_spec import ColumnSpec, ContractSpec
from prefect_crisis.core.errors import DataInputError
from prefect_crisis.core.parallel import parallel_map
from prefect_crisis.core.vocabulary import RowReason
from prefect_crisis.tasks.validation.column_checks import checks_drift, coerce_and_check, constant_changed
from prefect_crisis.tasks.validation.columns import CoercedColumn
from prefect_crisis.tasks.validation.drift import DriftKind, DriftSettings, FeatureDrift, frame_drift
from prefect_crisis.tasks.validation.duplicates import batch_fingerprint, duplicate_row_mask, row_hashes
from prefect_crisis.tasks.validation.inputs import check_contract, check_input, column_mismatches
from prefect_crisis.tasks.validation.references import load_reference
from prefect_crisis.tasks.validation.report import (
    EXAMPLES_PER_FAILURE,
    REASONS_COLUMN,
    CheckFailure,
    ValidationReport,
    ValidationResult,
    Verdict,
)


@dataclass
class _Findings:
    """Masks collected lazily: (reason, column, boolean mask over positions)."""

    rows: int
    masks: list[tuple[RowReason, str | None, np.ndarray]] = field(default_factory=list)

    def add(self, reason: RowReason, column: str | None, mask: np.ndarray) -> None:
        if mask.any():
            self.masks.append((reason, column, mask))

    def flagged(self) -> np.ndarray:
        flagged = np.zeros(self.rows, dtype=bool)
        for _, _, mask in self.masks:
            flagged |= mask
        return flagged


def _reasons_per_row(findings: _Findings, positions: np.ndarray) -> list[str]:
    slot = np.full(findings.rows, -1, dtype=np.int64)
    slot[positions] = np.arange(len(positions))
    reasons: list[list[str]] = [[] for _ in positions]
    for reason, column, mask in findings.masks:
        label = reason.value if column is None else f"{reason.value}:{column}"
        for position in slot[mask]:
            if position >= 0:
                reasons[position].append(label)
    return [";".join(row) for row in reasons]


def _failures(findings: _Findings, index: pd.Index) -> tuple[CheckFailure, ...]:
    failures = []
    for reason, column, mask in findings.masks:
        positions = np.flatnonzero(mask)
        examples = tuple(index[positions[:EXAMPLES_PER_FAILURE]].tolist())
        failures.append(CheckFailure(reason, column, len(positions), examples))
    return tuple(failures)


def _drift_values(column: CoercedColumn, numeric: bool) -> np.ndarray | pd.Series:
    """What drift reads of a column: its numbers, or its values as they are."""
    return column.numbers if numeric else column.series


def _drift(contract: ContractSpec, columns: dict[str, CoercedColumn], reference: pd.DataFrame) -> dict[str, FeatureDrift]:
    """Drift of every checked column, on every row's value in it: a shift that puts values beyond the
    fences or outside the codes is what drift is, and must not hide by being quarantined (rank-based
    tests barely move for a few corrupt values; missing and unparsed ones are left out)."""
    specs = [spec for spec in contract.columns if checks_drift(spec, contract) and spec.name in columns and spec.name in reference.columns]
    live: dict[str, Callable[[], np.ndarray | pd.Series]] = {
        spec.name: functools.partial(_drift_values, columns[spec.name], spec.is_numeric) for spec in specs
    }
    kinds: dict[str, DriftKind] = {spec.name: "numeric" if spec.is_numeric else "categorical" for spec in specs}
    return frame_drift(reference, live, kinds, DriftSettings.from_contract(contract))


def _kept_values(spec: ColumnSpec, column: CoercedColumn, kept: np.ndarray) -> np.ndarray | pd.api.extensions.ExtensionArray:
    values = column.series.to_numpy()[kept]
    if spec.dtype == "int" and column.values is not None:
        # Quarantine has removed non-integral and non-finite values; nulls stay <NA>.
        present = values[~np.isnan(values)]
        if np.all(np.abs(present) < 2**53):
            return pd.array(values, dtype="Int64")
    return values


def validate_data(frame: pd.DataFrame, contract: ContractSpec, reference: pd.DataFrame | None = None) -> ValidationResult:
    """Validate a batch against a contract; quarantine failing rows, never drop them.

    Args:
        frame: the batch.
        contract: what the batch must look like.
        reference: data the batch is compared with for drift; when None, the
            contract's `reference_uri` is read (no drift without either).

    Returns:
        A `ValidationResult`: the report, the kept rows (with safe coercions
        applied) and the quarantined rows (original values plus a
        `quarantine_reasons` column), both with the batch's original index.

    Raises:
        DataInputError: the input cannot be validated row by row.
        ContractError: the contract names columns it does not declare.

    Example:
        >>> import pandas as pd
        >>> from prefect_crisis.blocks import ColumnSpec, DataContract
        >>> contract = DataContract(columns=[ColumnSpec(name="age", dtype="int", min_value=0, max_value=120)])
        >>> result = validate_data(pd.DataFrame({"age": [34, 51, -3, 47, 29]}), contract)
        >>> result.report.verdict.value, result.report.kept, result.report.quarantined
        ('accept_with_quarantine', 4, 1)
        >>> result.quarantined[REASONS_COLUMN].tolist()
        ['out_of_range:age']
    """
    check_input(frame)
    if reference is None and contract.reference_uri:
        reference = load_reference(contract.reference_uri)
    check_contract(contract, reference)
    rows = len(frame)
    findings = _Findings(rows)
    rejection_reasons: list[str] = []

    rejection_reasons.extend(column_mismatches(frame, contract))

    present = [spec for spec in contract.columns if spec.name in frame.columns]
    checked = parallel_map(lambda spec: coerce_and_check(spec, frame[spec.name], contract, reference), present, parallel=rows >= 20_000)
    columns: dict[str, CoercedColumn] = {}
    for spec, (column, column_findings) in zip(present, checked, strict=True):
        columns[spec.name] = column
        for reason, name, mask in column_findings:
            findings.add(reason, name, mask)
            if reason is RowReason.WRONG_TYPE and mask.mean() > contract.max_quarantine_ratio:
                rejection_reasons.append(
                    f"column {spec.name!r} is declared {spec.dtype} but {mask.mean():.0%} of its values are not: "
                    "fix the feed, or declare the column string"
                )

    duplicate_rows = np.zeros(rows, dtype=bool)
    fingerprint = ""
    if contract.check_duplicate_rows:
        hashes = row_hashes(frame)
        fingerprint = batch_fingerprint(frame, hashes)
        duplicate_rows = duplicate_row_mask(frame, hashes)
        findings.add(RowReason.DUPLICATE_ROW, None, duplicate_rows)
    else:
        try:
            fingerprint = batch_fingerprint(frame, row_hashes(frame))
        except DataInputError:  # unhashable cells: the batch keeps no fingerprint, as before
            fingerprint = ""
    if contract.key_column is not None and contract.key_column in columns:
        # Copies of a whole row are already quarantined once as duplicate_row;
        # among the rest, every row sharing a key is ambiguous, so all of them go.
        key = columns[contract.key_column].series
        distinct = ~duplicate_rows & ~key.isna().to_numpy()
        repeated_key = np.zeros(rows, dtype=bool)
        repeated_key[distinct] = key[distinct].duplicated(keep=False).to_numpy()
        findings.add(RowReason.DUPLICATE_KEY, contract.key_column, repeated_key)

    flagged = findings.flagged()
    quarantine_ratio = flagged.sum() / rows
    if quarantine_ratio > contract.max_quarantine_ratio:
        rejection_reasons.append(f"quarantine ratio {quarantine_ratio:.2%} is above the contract's limit {contract.max_quarantine_ratio:.2%}")

    drift = _drift(contract, columns, reference) if reference is not None else {}
    drifted = [name for name, figures in drift.items() if figures.drifted]
    if contract.max_drifted_features is not None and len(drifted) > contract.max_drifted_features:
        rejection_reasons.append(f"{len(drifted)} drifted features {drifted} exceed the contract's limit of {contract.max_drifted_features}")

    if rejection_reasons:
        verdict = Verdict.REJECT
        findings.masks.append((RowReason.BATCH_REJECTED, None, np.ones(rows, dtype=bool)))
        flagged = np.ones(rows, dtype=bool)
    elif flagged.any():
        verdict = Verdict.ACCEPT_WITH_QUARANTINE
    else:
        verdict = Verdict.ACCEPT

    quarantined_positions = np.flatnonzero(flagged)
    quarantined = frame.iloc[quarantined_positions].copy()
    quarantined[REASONS_COLUMN] = pd.Series(_reasons_per_row(findings, quarantined_positions), index=quarantined.index, dtype=str)
    kept = frame.iloc[np.flatnonzero(~flagged)]
    coerced = {name: column for name, column in columns.items() if column.coercion is not None}
    if coerced:
        kept = kept.assign(**{name: _kept_values(contract.column(name), column, ~flagged) for name, column in coerced.items()})

    report = ValidationReport(
        verdict=verdict,
        rows=rows,
        kept=len(kept),
        quarantined=len(quarantined),
        failures=_failures(findings, frame.index),
        coercions={name: column.coercion for name, column in columns.items() if column.coercion is not None},
        drift=drift,
        rejection_reasons=tuple(rejection_reasons),
        fingerprint=fingerprint,
        findings=tuple(
            finding
            for spec in contract.columns
            if spec.constant_value is not None and spec.name in columns
            for finding in constant_changed(spec, columns[spec.name], flagged, frame.index)
        ),
    )
    return ValidationResult(report=report, kept=kept, quarantined=quarantined)

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
`training_input_findings` gives the same kind of findings for a labelled
batch that cannot train a sane classifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pandas as pd

from prefect_crisis.blocks.contract import ColumnSpec, DataContract, did_you_mean
from prefect_crisis.core.errors import ContractError, ContractErrorReason, DataInputError, InputErrorReason
from prefect_crisis.core.fences import Fences, batch_fences, rate_per_side, reference_fences
from prefect_crisis.core.parallel import parallel_map
from prefect_crisis.core.vocabulary import RowReason
from prefect_crisis.tasks.validation.columns import CoercedColumn, coerce_column
from prefect_crisis.tasks.validation.drift import DriftSettings, FeatureDrift, deterministic_sample, frame_drift
from prefect_crisis.tasks.validation.references import load_reference

REASONS_COLUMN = "quarantine_reasons"
_EXAMPLES_PER_FAILURE = 5


class Verdict(str, Enum):
    """What happens to the batch as a whole."""

    ACCEPT = "accept"
    ACCEPT_WITH_QUARANTINE = "accept_with_quarantine"
    REJECT = "reject"


@dataclass(frozen=True)
class CheckFailure:
    """One check failing on one column: how many rows, and a few of their index labels."""

    reason: RowReason
    column: str | None
    rows: int
    examples: tuple = ()


class FindingReason(str, Enum):
    """Why a batch as a whole deserves a look (no row is quarantined for it)."""

    CONSTANT_CHANGED = "constant_changed"
    MISSING_LABEL_COLUMN = "missing_label_column"
    NULL_LABEL = "null_label"
    SINGLE_CLASS = "single_class"
    RARE_CLASS = "rare_class"
    UNKNOWN_CLASS = "unknown_class"


@dataclass(frozen=True)
class Finding:
    """One fact about a batch, with its reason, the rows it concerns and a one-line message."""

    reason: FindingReason
    column: str | None
    message: str
    rows: int = 0
    examples: tuple = ()

    def to_dict(self) -> dict:
        return {
            "reason": self.reason.value,
            "column": self.column,
            "message": self.message,
            "rows": self.rows,
            "examples": [str(example) for example in self.examples],
        }


@dataclass(frozen=True)
class ValidationReport:
    """The verdict on one batch and everything behind it; safe to log and put in events."""

    verdict: Verdict
    rows: int
    kept: int
    quarantined: int
    failures: tuple[CheckFailure, ...] = ()
    coercions: dict[str, str] = field(default_factory=dict)
    drift: dict[str, FeatureDrift] = field(default_factory=dict)
    rejection_reasons: tuple[str, ...] = ()
    fingerprint: str = ""
    findings: tuple[Finding, ...] = ()

    @property
    def quarantine_ratio(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, figures in self.drift.items() if figures.drifted]

    @property
    def check_counts(self) -> dict[str, int]:
        """Failing rows per reason, summed over columns."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.reason.value] = counts.get(failure.reason.value, 0) + failure.rows
        return counts

    def to_dict(self) -> dict:
        """A JSON-ready summary (event payloads, MLflow tags)."""
        return {
            "verdict": self.verdict.value,
            "rows": self.rows,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "quarantine_ratio": round(self.quarantine_ratio, 6),
            "reasons": self.check_counts,
            "failures": [
                {"reason": f.reason.value, "column": f.column, "rows": f.rows, "examples": [str(e) for e in f.examples]}
                for f in self.failures
            ],
            "coercions": dict(self.coercions),
            "drifted_features": self.drifted_features,
            "drift": {name: figures.to_dict() for name, figures in self.drift.items()},
            "rejection_reasons": list(self.rejection_reasons),
            "fingerprint": self.fingerprint,
            "findings": [finding.to_dict() for finding in self.findings],
        }


@dataclass(frozen=True, eq=False)
class ValidationResult:
    """The report with the two parts of the batch it describes."""

    report: ValidationReport
    kept: pd.DataFrame
    quarantined: pd.DataFrame


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


def check_contract(contract: DataContract, reference: pd.DataFrame | None = None) -> None:
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


def column_fences(spec: ColumnSpec, contract: DataContract, reference: pd.DataFrame | None) -> Fences | None:
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


def checks_outliers(spec: ColumnSpec, contract: DataContract) -> bool:
    """True for a numeric column checked for outliers; never the key column,
    an identifier whose new values lie outside the reference by design."""
    return spec.is_numeric and spec.check_outliers and spec.name != contract.key_column


def checks_drift(spec: ColumnSpec, contract: DataContract) -> bool:
    """True for a column compared with the reference; never the key column."""
    return spec.check_drift and spec.dtype != "datetime" and spec.name != contract.key_column


def outlier_rate(contract: DataContract) -> float:
    """The false-flag budget of one side of one checked column."""
    checked = sum(1 for spec in contract.columns if checks_outliers(spec, contract))
    return rate_per_side(contract.outlier_rate, checked)


RowFinding = tuple[RowReason, str | None, np.ndarray]


def _check_column(spec: ColumnSpec, column: CoercedColumn, contract: DataContract, fences: Fences | None) -> list[RowFinding]:
    findings: list[RowFinding] = []
    wrong_type = column.wrong_type if column.wrong_type is not None else np.zeros(len(column.null), dtype=bool)
    findings.append((RowReason.WRONG_TYPE, spec.name, wrong_type))
    if not spec.nullable:
        findings.append((RowReason.NULL, spec.name, column.null))
    if spec.is_numeric:
        values = column.values
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


def _coerce_and_check(
    spec: ColumnSpec, series: pd.Series, contract: DataContract, reference: pd.DataFrame | None
) -> tuple[CoercedColumn, list[RowFinding]]:
    column = coerce_column(series, spec)
    fences = column_fences(spec, contract, reference) if checks_outliers(spec, contract) else None
    return column, _check_column(spec, column, contract, fences)


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError as error:
        raise DataInputError(
            InputErrorReason.UNHASHABLE_VALUES,
            f"the batch holds unhashable values (lists, dicts?): {error}; flatten them before validating",
        ) from error


def _fingerprint(frame: pd.DataFrame, hashes: np.ndarray) -> str:
    """The batch's identity: its column names and every row's values, so a renamed header is another batch."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


def column_mismatches(frame: pd.DataFrame, contract: DataContract) -> list[str]:
    """Why the batch's columns do not fit the contract, one line each (empty: they fit).

    A required column that is missing is named with the batch's unknown
    columns, each with the contract column it most resembles (a typo in a
    CSV header shows as both).

    Example:
        >>> contract = DataContract(columns=[ColumnSpec(name="mean_radius"), ColumnSpec(name="label", dtype="int")])
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


def _constant_changed(spec: ColumnSpec, column: CoercedColumn, flagged: np.ndarray, index: pd.Index) -> list[Finding]:
    """A finding when a column constant in the reference holds other values."""
    values = column.values
    with np.errstate(invalid="ignore"):
        other = np.isfinite(values) & (values != spec.constant_value)
    if not other.any():
        return []
    positions = np.flatnonzero(other)
    seen = ", ".join(f"{value:g}" for value in np.unique(values[positions])[:_EXAMPLES_PER_FAILURE])
    kept = int((other & ~flagged).sum())
    return [
        Finding(
            FindingReason.CONSTANT_CHANGED,
            spec.name,
            f"column {spec.name!r} was constant {spec.constant_value:g} in the reference; {len(positions)} rows hold "
            f"other values ({seen}), {kept} of them kept: a model trained on the reference never learnt from it",
            int(len(positions)),
            tuple(index[positions[:_EXAMPLES_PER_FAILURE]].tolist()),
        )
    ]


def _duplicate_rows(frame: pd.DataFrame, hashes: np.ndarray) -> np.ndarray:
    """Exact duplicate rows after their first occurrence.

    Row hashes find candidates in one pass; candidates are then compared value
    by value, so a hash collision can never quarantine a distinct row.
    """
    candidates = pd.Series(hashes).duplicated(keep=False).to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        positions = np.flatnonzero(candidates)
        mask[positions] = frame.iloc[positions].duplicated(keep="first").to_numpy()
    return mask


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
        examples = tuple(index[positions[:_EXAMPLES_PER_FAILURE]].tolist())
        failures.append(CheckFailure(reason, column, int(len(positions)), examples))
    return tuple(failures)


def _drift(contract: DataContract, columns: dict[str, CoercedColumn], reference: pd.DataFrame) -> dict[str, FeatureDrift]:
    """Drift of every checked column, on every row's value in it: a shift that puts values beyond the
    fences or outside the codes is what drift is, and must not hide by being quarantined (rank-based
    tests barely move for a few corrupt values; missing and unparsed ones are left out)."""
    specs = [
        spec
        for spec in contract.columns
        if checks_drift(spec, contract) and spec.name in columns and spec.name in reference.columns
    ]
    live = {
        spec.name: (lambda spec=spec: columns[spec.name].values if spec.is_numeric else columns[spec.name].series)
        for spec in specs
    }
    kinds = {spec.name: "numeric" if spec.is_numeric else "categorical" for spec in specs}
    return frame_drift(reference, live, kinds, DriftSettings.from_contract(contract))


def _kept_values(spec: ColumnSpec, column: CoercedColumn, kept: np.ndarray) -> np.ndarray | pd.api.extensions.ExtensionArray:
    values = column.series.to_numpy()[kept]
    if spec.dtype == "int" and column.values is not None:
        # Quarantine has removed non-integral and non-finite values; nulls stay <NA>.
        present = values[~np.isnan(values)]
        if np.all(np.abs(present) < 2**53):
            return pd.array(values, dtype="Int64")
    return values


def validate_data(
    frame: pd.DataFrame, contract: DataContract, reference: pd.DataFrame | None = None
) -> ValidationResult:
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
    checked = parallel_map(
        lambda spec: _coerce_and_check(spec, frame[spec.name], contract, reference), present, parallel=rows >= 20_000
    )
    columns: dict[str, CoercedColumn] = {}
    for spec, (column, column_findings) in zip(present, checked):
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
        hashes = _row_hashes(frame)
        fingerprint = _fingerprint(frame, hashes)
        duplicate_rows = _duplicate_rows(frame, hashes)
        findings.add(RowReason.DUPLICATE_ROW, None, duplicate_rows)
    else:
        try:
            fingerprint = _fingerprint(frame, _row_hashes(frame))
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
        rejection_reasons.append(
            f"quarantine ratio {quarantine_ratio:.2%} is above the contract's limit {contract.max_quarantine_ratio:.2%}"
        )

    drift = _drift(contract, columns, reference) if reference is not None else {}
    drifted = [name for name, figures in drift.items() if figures.drifted]
    if contract.max_drifted_features is not None and len(drifted) > contract.max_drifted_features:
        rejection_reasons.append(
            f"{len(drifted)} drifted features {drifted} exceed the contract's limit of {contract.max_drifted_features}"
        )

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
    quarantined[REASONS_COLUMN] = pd.Series(
        _reasons_per_row(findings, quarantined_positions), index=quarantined.index, dtype=str
    )
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
            for finding in _constant_changed(spec, columns[spec.name], flagged, frame.index)
        ),
    )
    return ValidationResult(report=report, kept=kept, quarantined=quarantined)


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read `3`, not `np.int64(3)`."""
    return value.item() if isinstance(value, np.generic) else value


def training_input_findings(
    frame: pd.DataFrame, label_column: str, *, min_rows_per_class: int = 2, classes: list | None = None
) -> tuple[Finding, ...]:
    """Why a labelled batch cannot train a sane classifier; empty when nothing stands in the way.

    Finds a missing label column, labels that are missing, a label that is
    constant (one class only, or none), classes with fewer than
    `min_rows_per_class` rows (a stratified split and most classifiers need
    two of each), and, when the expected `classes` are given, classes among
    them the batch lacks and classes the batch holds beyond them.

    Args:
        frame: the labelled batch (e.g. the kept rows of a validation).
        label_column: the column holding the class of each row.
        min_rows_per_class: fewest rows of each class the batch must hold.
        classes: the classes the model must know (e.g. the label's
            `allowed_values` in the contract); None: those the batch holds.

    Raises:
        DataInputError: the input is not a DataFrame, or is empty.

    Example:
        >>> batch = pd.DataFrame({"x": range(6), "label": [1, 1, 1, 1, 1, None]})
        >>> [(finding.reason.value, finding.rows) for finding in training_input_findings(batch, "label")]
        [('null_label', 1), ('single_class', 5)]
        >>> training_input_findings(batch, "label")[1].message
        "label 'label' is constant: every labelled row is class 1.0; a classifier needs at least two classes"
        >>> batch = pd.DataFrame({"x": range(5), "label": [0, 0, 1, 1, 2]})
        >>> [finding.message for finding in training_input_findings(batch, "label", classes=[0, 1, 2, 3])]
        ["class 2 of label 'label' has 1 row, fewer than 2: a stratified split and the classifier need at least 2 of each class", "class 3 of label 'label' has 0 rows, fewer than 2: a stratified split and the classifier need at least 2 of each class"]
    """
    check_input(frame)
    if label_column not in frame.columns:
        names = [str(name) for name in frame.columns]
        return (
            Finding(
                FindingReason.MISSING_LABEL_COLUMN,
                label_column,
                f"the batch has no label column {label_column!r}{did_you_mean(label_column, names)}; it has {names}",
                len(frame),
            ),
        )
    labels = frame[label_column]
    findings: list[Finding] = []
    null = labels.isna().to_numpy()
    if null.any():
        positions = np.flatnonzero(null)
        findings.append(
            Finding(
                FindingReason.NULL_LABEL,
                label_column,
                f"label {label_column!r} is missing in {len(positions)} of {len(frame)} rows: fill or drop them before training",
                int(len(positions)),
                tuple(frame.index[positions[:_EXAMPLES_PER_FAILURE]].tolist()),
            )
        )
    counts = {_plain(value): int(rows) for value, rows in labels[~null].value_counts(sort=False).items()}
    if len(counts) < 2:
        only = next(iter(counts), None)
        findings.append(
            Finding(
                FindingReason.SINGLE_CLASS,
                label_column,
                f"label {label_column!r} is constant: every labelled row is class {only!r}; a classifier needs at least two classes"
                if counts
                else f"label {label_column!r} holds no class at all: every row's label is missing",
                counts.get(only, 0),
            )
        )
    if classes is not None:
        expected = [_plain(value) for value in classes]
        unknown = [value for value in counts if value not in set(expected)]
        if unknown:
            rows = sum(counts[value] for value in unknown)
            findings.append(
                Finding(
                    FindingReason.UNKNOWN_CLASS,
                    label_column,
                    f"label {label_column!r} holds classes {sorted(unknown, key=str)} beyond the expected {expected} in {rows} rows: "
                    "a model cannot learn a class it is not meant to know; check the labelling",
                    rows,
                )
            )
        counts = {value: counts.get(value, 0) for value in expected} | {value: counts[value] for value in unknown}
    if len(counts) >= 2 or classes is not None:
        for value, rows in counts.items():
            if rows < min_rows_per_class:
                findings.append(
                    Finding(
                        FindingReason.RARE_CLASS,
                        label_column,
                        f"class {value!r} of label {label_column!r} has {rows} row{'' if rows == 1 else 's'}, fewer than "
                        f"{min_rows_per_class}: a stratified split and the classifier need at least {min_rows_per_class} of each class",
                        rows,
                    )
                )
    return tuple(findings)

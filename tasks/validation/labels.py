"""Whether a labelled batch can train a sane classifier: findings for a missing
label column, missing labels, one class only, rare, missing or unknown classes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefect_crisis.core.contract_spec import did_you_mean
from prefect_crisis.tasks.validation.inputs import check_input
from prefect_crisis.tasks.validation.report import EXAMPLES_PER_FAILURE, Finding, FindingReason


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
                len(positions),
                tuple(frame.index[positions[:EXAMPLES_PER_FAILURE]].tolist()),
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

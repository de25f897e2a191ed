"""The DataContract block: what a batch must look like, stored on the server.

A contract is configuration, so it lives where Prefect keeps configuration:
a Block that the UI can show and edit, and that a deployment loads by name.
`DataContract.from_reference` learns one from a batch the model was trained on.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, model_validator

from prefect_crisis.blocks.inference import MIN_REFERENCE_ROWS, infer_dtype, known_categories
from prefect_crisis.core.errors import ContractError, ContractErrorReason
from prefect_crisis.core.fences import rate_per_side, reference_fences

ColumnType = Literal["float", "int", "bool", "string", "datetime"]
# An integral column with at most this many distinct values, each in at least
# `MIN_LEVEL_SHARE` of the rows and `MIN_LEVEL_ROWS` rows, is a set of codes: a value
# outside it is an unknown category. A rare value is the sign of a measurement's
# tail, where unseen values are to be expected (a pixel's 14 between 13 and 15).
MAX_LEVELS = 20
MIN_LEVEL_ROWS = 5
MIN_LEVEL_SHARE = 0.01


class ColumnSpec(BaseModel):
    """What one column must hold."""

    name: str = Field(description="Column name as it appears in the batch.")
    dtype: ColumnType = Field(
        default="float",
        description="Logical type: float, int, bool, string or datetime. "
        "Safe coercions (int to float, numeric text to numbers) are made and reported.",
    )
    required: bool = Field(
        default=True, description="A batch without this column is rejected."
    )
    nullable: bool = Field(
        default=False, description="Missing values are allowed in this column."
    )
    min_value: float | None = Field(
        default=None, description="Smallest allowed value (inclusive), numeric columns only."
    )
    max_value: float | None = Field(
        default=None, description="Largest allowed value (inclusive), numeric columns only."
    )
    allowed_values: list[int] | list[float] | list[str] | None = Field(
        default=None,
        description="The only values allowed: categories of a string column, or the codes or classes "
        "of a numeric column (numbers); any other value is quarantined as unknown_category.",
    )
    constant_value: float | None = Field(
        default=None,
        description="The one value this numeric column held in the reference (learned): a batch holding "
        "other values gets a finding; only values beyond the outlier fences are quarantined.",
    )
    check_outliers: bool = Field(
        default=True,
        description="Quarantine outliers in this numeric column: values inside the range that lie beyond "
        "the column's fences (from the reference when there is one, else from the batch's quartiles).",
    )
    outlier_low: float | None = Field(
        default=None,
        description="Lower tolerance band learned from the reference (DataContract.from_reference): a smaller "
        "value is an outlier. None: taken from the reference or the batch at validation time.",
    )
    outlier_high: float | None = Field(
        default=None,
        description="Upper tolerance band learned from the reference (DataContract.from_reference): a larger "
        "value is an outlier. None: taken from the reference or the batch at validation time.",
    )
    check_drift: bool = Field(
        default=True, description="Compare this column with the reference for drift."
    )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> "ColumnSpec":
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(
                f"column {self.name!r}: min_value {self.min_value} is above max_value {self.max_value}"
            )
        if self.allowed_values is not None:
            if self.dtype not in ("string", "int", "float"):
                raise ValueError(
                    f"column {self.name!r}: allowed_values applies to string and numeric columns, not {self.dtype}"
                )
            self.allowed_values = _allowed_as(self.name, self.dtype, self.allowed_values)
        if self.constant_value is not None and not self.is_numeric:
            raise ValueError(f"column {self.name!r}: constant_value applies to numeric columns, not {self.dtype}")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.dtype in ("float", "int")


def _allowed_as(name: str, dtype: str, values: list) -> list:
    """Allowed values in the column's own kind: text for a string column, numbers for a numeric one."""
    if dtype == "string":
        return [str(value) for value in values]
    numbers = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {name!r} is {dtype}: its allowed_values must be numbers, not {value!r}") from None
        numbers.append(int(number) if dtype == "int" and number.is_integer() else number)
    return numbers


class DataContract(Block):
    """A data contract for one model's input batches.

    Validation applies it row by row: contract checks, integrity, robust
    outliers and drift against a reference. Rows that fail are quarantined with
    every reason that applies; the batch is rejected when too many do.

    Example:
        ```python
        from prefect_crisis.blocks import ColumnSpec, DataContract

        contract = DataContract(
            columns=[
                ColumnSpec(name="age", dtype="int", min_value=0, max_value=120),
                ColumnSpec(name="plan", dtype="string", allowed_values=["free", "pro"]),
            ],
            key_column=None,
            max_quarantine_ratio=0.05,
        )
        contract.save("churn-input", overwrite=True)
        ```
    """

    _block_type_name = "Crisis Data Contract"
    _block_type_slug = "crisis-data-contract"
    _description = "What a model's input batch must look like, and when to quarantine or reject it."
    _documentation_url = "https://pypi.org/project/prefect-crisis/"

    columns: list[ColumnSpec] = Field(description="The columns a batch must hold.")
    key_column: str | None = Field(
        default=None, description="A column whose values must be unique within a batch."
    )
    allow_extra_columns: bool = Field(
        default=True,
        description="Columns not named in the contract are passed through; when false, the batch is rejected.",
    )
    max_quarantine_ratio: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Hard limit: a batch whose quarantined share of rows is above it is rejected.",
    )
    outlier_rate: float = Field(
        default=0.01,
        gt=0.0,
        lt=0.5,
        description="Share of clean rows the outlier check may flag in total, split evenly over the "
        "checked columns and both sides of each (30 columns: 1/6000 per side).",
    )
    outlier_min_rows: int = Field(
        default=20,
        ge=3,
        description="Without fences or a reference, columns with fewer finite values in the batch are not checked for outliers.",
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0.0,
        description="Population stability index above which a significant difference counts as drift "
        "(on small batches the significance test decides, PSI alone is noise there).",
    )
    psi_bins: int = Field(
        default=10, ge=2, le=100, description="Quantile bins of the reference used for PSI."
    )
    drift_significance: float = Field(
        default=0.01,
        gt=0.0,
        lt=0.5,
        description="Chance that a batch from the reference's population is called drifted (any feature flagged), "
        "whatever the batch size and however many features: Holm's correction over the features; within a numeric "
        "feature the chi-square test on the PSI bins and the KS test share it.",
    )
    ks_statistic_threshold: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="KS distance a significant shift must also exceed to count as drift "
        "(with large batches every tiny shift is significant).",
    )
    drift_sample_size: int | None = Field(
        default=100_000,
        ge=1_000,
        description="Rows sampled (deterministically) from the reference, and from the batch for the KS test; "
        "None uses all rows. The batch's PSI always uses all its rows.",
    )
    max_drifted_features: int | None = Field(
        default=None,
        ge=0,
        description="Reject a batch when more features than this have drifted; None only reports drift.",
    )
    check_duplicate_rows: bool = Field(
        default=True, description="Quarantine exact copies of an earlier row of the batch."
    )
    reference_uri: str | None = Field(
        default=None,
        description="Parquet file (path or fsspec URL) of reference data that drift is measured against.",
    )

    @model_validator(mode="after")
    def _column_names_are_unique(self) -> "DataContract":
        names = [column.name for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"contract declares columns more than once: {repeated}")
        return self

    def column(self, name: str) -> ColumnSpec:
        """Return the spec of column `name`."""
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @classmethod
    def from_reference(
        cls,
        frame: pd.DataFrame,
        *,
        key_column: str | None = None,
        label_column: str | None = None,
        margin: float | None = None,
        max_categories: int = 50,
        max_levels: int = MAX_LEVELS,
        reference_uri: str | None = None,
        **settings: Any,
    ) -> "DataContract":
        """A contract learned from reference data, for a person to review and save.

        Learns each column's type and nullability and what its values may be:

        - a numeric column gets tolerance bands (`outlier_low` / `outlier_high`,
          see `prefect_crisis.core.fences`): a value beyond them is quarantined
          as an `outlier`. Its only hard limit is a floor of zero when the
          reference never goes below zero (a negative count or amount is wrong,
          not rare); `margin` adds the old hard range, the reference's range
          widened by that share of its span.
        - an integral column of at most `max_levels` values, each in at least
          1% of the rows (and five), is a set of codes (`allowed_values`), and so is the label
          column of a classifier (the classes seen): another value is an
          `unknown_category`.
        - a column constant in the reference records its value
          (`constant_value`): other values are reported as a finding, and
          quarantined only when far off.
        - a string column gets its categories when the reference has seen them all.

        The key column is an identifier: no drift, no outliers. The label is
        not compared for drift.

        Args:
            frame: the reference, e.g. a batch the model was trained on.
            key_column: a column whose values must be unique (an identifier).
            label_column: the training label.
            margin: when given, also a hard range: the reference's range widened by
                this share of its span (None: no invented upper or lower limits).
            max_categories: string columns with more distinct values are free text;
                a label with more distinct values is a measurement, not classes.
            max_levels: integral columns with more distinct values are measurements, not codes.
            reference_uri: where the reference is stored for drift; recorded
                in the contract (write the frame there, e.g. with `to_parquet`).
            **settings: any other DataContract field (max_quarantine_ratio, ...).

        Raises:
            ContractError: the reference is too small, or names a key or label column it lacks.

        Example:
            >>> frame = pd.DataFrame({"customer_id": range(200), "tenure": [i % 48 for i in range(200)],
            ...                       "plan": ["free", "pro"] * 100, "churned": [0, 0, 0, 1] * 50})
            >>> contract = DataContract.from_reference(frame, key_column="customer_id", label_column="churned")
            >>> [(c.name, c.dtype, c.min_value, c.max_value, c.allowed_values) for c in contract.columns]
            [('customer_id', 'int', None, None, None), ('tenure', 'int', 0.0, None, None), ('plan', 'string', None, None, ['free', 'pro']), ('churned', 'int', None, None, [0, 1])]
            >>> tenure = contract.column("tenure")
            >>> tenure.outlier_low is None and tenure.outlier_high > 47
            True
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
        outlier_rate = settings.get("outlier_rate", cls.model_fields["outlier_rate"].default)
        specs = [
            _learn_kind(str(name), frame[name], key_column=key_column, label_column=label_column,
                        max_categories=max_categories, max_levels=max_levels)
            for name in frame.columns
        ]
        fenced = [spec for spec in specs if spec["dtype"] in ("int", "float") and spec.get("check_outliers", True)]
        fence_rate = rate_per_side(outlier_rate, len(fenced))
        for spec in fenced:
            _learn_bounds(spec, frame[spec["name"]], margin=margin, fence_rate=fence_rate)
        return cls(
            columns=[ColumnSpec(**spec) for spec in specs],
            key_column=key_column,
            reference_uri=reference_uri,
            **settings,
        )


def did_you_mean(name: str, choices: list[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `choices`, or "" when none is close.

    Example:
        >>> did_you_mean("mean_radus", ["mean_radius", "mean_area"])
        " (did you mean 'mean_radius'?)"
        >>> did_you_mean("zzz", ["mean_radius"])
        ''
    """
    close = difflib.get_close_matches(str(name), [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def _learn_kind(
    name: str, series: pd.Series, *, key_column: str | None, label_column: str | None, max_categories: int, max_levels: int
) -> dict:
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
            classes = _codes(_finite(series), dtype, max_categories, min_rows=1)
            if classes is not None:
                spec.update(allowed_values=classes, check_outliers=False)
        return spec
    if dtype == "string":
        spec["allowed_values"] = known_categories(series, max_categories)
    elif dtype in ("int", "float"):
        codes = _codes(_finite(series), dtype, max_levels, min_rows=MIN_LEVEL_ROWS, min_share=MIN_LEVEL_SHARE)
        if codes is not None and len(codes) > 1:
            spec.update(allowed_values=codes, check_outliers=False)
    return spec


def _learn_bounds(spec: dict, series: pd.Series, *, margin: float | None, fence_rate: float) -> None:
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

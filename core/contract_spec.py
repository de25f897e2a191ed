"""A data contract's plain spec: what each column must hold and when a batch is
quarantined or rejected, as pydantic values.

The `DataContract` Block (`prefect_crisis.blocks.contract`) is this spec stored on
the Prefect server; validation reads only the spec, so it runs without Prefect.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, Field, model_validator

ColumnType = Literal["float", "int", "bool", "string", "datetime"]


class ColumnSpec(BaseModel):
    """What one column must hold."""

    name: str = Field(description="Column name as it appears in the batch.")
    dtype: ColumnType = Field(
        default="float",
        description="Logical type: float, int, bool, string or datetime. "
        "Safe coercions (int to float, numeric text to numbers) are made and reported.",
    )
    required: bool = Field(default=True, description="A batch without this column is rejected.")
    nullable: bool = Field(default=False, description="Missing values are allowed in this column.")
    min_value: float | None = Field(default=None, description="Smallest allowed value (inclusive), numeric columns only.")
    max_value: float | None = Field(default=None, description="Largest allowed value (inclusive), numeric columns only.")
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
    check_drift: bool = Field(default=True, description="Compare this column with the reference for drift.")

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> ColumnSpec:
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"column {self.name!r}: min_value {self.min_value} is above max_value {self.max_value}")
        if self.allowed_values is not None:
            if self.dtype not in ("string", "int", "float"):
                raise ValueError(f"column {self.name!r}: allowed_values applies to string and numeric columns, not {self.dtype}")
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


class ContractSpec(BaseModel):
    """What a model's input batch must look like, and when to quarantine or reject it.

    The fields of the `DataContract` Block, as a plain value.

    Example:
        >>> spec = ContractSpec(columns=[ColumnSpec(name="age", dtype="int", min_value=0)], key_column="age")
        >>> spec.column_names, spec.column("age").is_numeric
        (['age'], True)
    """

    columns: list[ColumnSpec] = Field(description="The columns a batch must hold.")
    key_column: str | None = Field(default=None, description="A column whose values must be unique within a batch.")
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
    psi_bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference used for PSI.")
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
        description="KS distance a significant shift must also exceed to count as drift (with large batches every tiny shift is significant).",
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
    check_duplicate_rows: bool = Field(default=True, description="Quarantine exact copies of an earlier row of the batch.")
    reference_uri: str | None = Field(
        default=None,
        description="Parquet file (path or fsspec URL) of reference data that drift is measured against.",
    )

    @model_validator(mode="after")
    def _column_names_are_unique(self) -> ContractSpec:
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


def did_you_mean(name: str, choices: list[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices`, or "" when none is close.

    Example:
        >>> did_you_mean("mean_radus", ["mean_radius", "mean_area"])
        " (did you mean 'mean_radius'?)"
        >>> did_you_mean("zzz", ["mean_radius"])
        ''
    """
    close = difflib.get_close_matches(str(name), [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

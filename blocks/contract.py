"""The DataContract block: what a batch must look like, stored on the server.

A contract is configuration, so it lives where Prefect keeps configuration:
a Block that the UI can show and edit, and that a deployment loads by name.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
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
    allowed_values: list[str] | None = Field(
        default=None, description="The only values allowed, for string columns."
    )
    check_outliers: bool = Field(
        default=True,
        description="Quarantine robust outliers (modified z-score) in this numeric column: "
        "values inside the range that the batch's median and MAD make implausible.",
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
        if self.allowed_values is not None and self.dtype != "string":
            raise ValueError(
                f"column {self.name!r}: allowed_values applies to string columns, not {self.dtype}"
            )
        return self

    @property
    def is_numeric(self) -> bool:
        return self.dtype in ("float", "int")


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
    outlier_threshold: float = Field(
        default=3.5,
        gt=0.0,
        description="Modified z-score (median/MAD) above which a value is an outlier (Iglewicz and Hoaglin use 3.5).",
    )
    outlier_min_rows: int = Field(
        default=20, ge=3, description="Columns with fewer finite values are not checked for outliers."
    )
    psi_threshold: float = Field(
        default=0.2, gt=0.0, description="Population stability index above which a feature has drifted."
    )
    psi_bins: int = Field(
        default=10, ge=2, le=100, description="Quantile bins of the reference used for PSI."
    )
    ks_pvalue_threshold: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="KS test p-value below which drift is significant."
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

"""The DataContract block: what a batch must look like, stored on the server.

A contract is configuration, so it lives where Prefect keeps configuration:
a Block that the UI can show and edit, and that a deployment loads by name.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, model_validator

from prefect_crisis.blocks.inference import MIN_REFERENCE_ROWS, infer_columns
from prefect_crisis.core.errors import ContractError, ContractErrorReason

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
        description="Quarantine outliers in this numeric column: values inside the range that lie beyond "
        "the column's fences (from the reference when there is one, else from the batch's quartiles).",
    )
    outlier_low: float | None = Field(
        default=None,
        description="Lower outlier fence learned from the reference (DataContract.from_reference); "
        "None: taken from the reference or the batch at validation time.",
    )
    outlier_high: float | None = Field(
        default=None,
        description="Upper outlier fence learned from the reference (DataContract.from_reference); "
        "None: taken from the reference or the batch at validation time.",
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
        description="Share of same-population features that may be flagged as drifted, whatever the batch size: "
        "the chi-square test on the PSI bins and the KS test each run at half of it.",
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
        margin: float = 0.1,
        max_categories: int = 50,
        reference_uri: str | None = None,
        **settings: Any,
    ) -> "DataContract":
        """A contract learned from reference data, for a person to review and save.

        Learns each column's type and nullability, its range widened by
        `margin` of the span, the categories of string columns (when the
        reference has seen them all), and the outlier fences of numeric
        columns. The key column is an identifier: no drift, no outliers. The
        label column is checked for type and range only.

        Args:
            frame: the reference, e.g. a batch the model was trained on.
            key_column: a column whose values must be unique (an identifier).
            label_column: the training label.
            margin: widening of each numeric range, as a share of its span.
            max_categories: string columns with more distinct values are free text.
            reference_uri: where the reference is stored for drift; recorded
                in the contract (write the frame there, e.g. with `to_parquet`).
            **settings: any other DataContract field (max_quarantine_ratio, ...).

        Raises:
            ContractError: the reference is too small, or names a key or label column it lacks.

        Example:
            >>> frame = pd.DataFrame({"customer_id": range(200), "tenure": [i % 48 for i in range(200)],
            ...                       "plan": ["free", "pro"] * 100})
            >>> contract = DataContract.from_reference(frame, key_column="customer_id")
            >>> [(c.name, c.dtype, c.min_value, c.max_value) for c in contract.columns]
            [('customer_id', 'int', None, None), ('tenure', 'int', 0.0, 52.0), ('plan', 'string', None, None)]
            >>> contract.column("plan").allowed_values
            ['free', 'pro']
        """
        if not isinstance(frame, pd.DataFrame) or len(frame) < MIN_REFERENCE_ROWS:
            rows = len(frame) if isinstance(frame, pd.DataFrame) else 0
            raise ContractError(
                ContractErrorReason.REFERENCE_TOO_SMALL,
                f"the reference has {rows} rows; at least {MIN_REFERENCE_ROWS} are needed to learn ranges, fences and drift baselines",
            )
        for role, name in (("key_column", key_column), ("label_column", label_column)):
            if name is not None and name not in frame.columns:
                raise ContractError(
                    ContractErrorReason.UNKNOWN_COLUMN,
                    f"{role} {name!r} is not a column of the reference; it has {[str(c) for c in frame.columns]}",
                    [name],
                )
        outlier_rate = settings.get("outlier_rate", cls.model_fields["outlier_rate"].default)
        columns = infer_columns(
            frame,
            key_column=key_column,
            label_column=label_column,
            margin=margin,
            outlier_rate=outlier_rate,
            max_categories=max_categories,
        )
        return cls(
            columns=[ColumnSpec(**column) for column in columns],
            key_column=key_column,
            reference_uri=reference_uri,
            **settings,
        )

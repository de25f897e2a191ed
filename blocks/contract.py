"""The DataContract block: what a batch must look like, stored on the server.

A contract is configuration, so it lives where Prefect keeps configuration:
a Block that the UI can show and edit, and that a deployment loads by name.
Its fields are the plain `ContractSpec` (`prefect_crisis.core.contract_spec`),
which validation reads without Prefect; `DataContract.from_reference` learns one
from a batch the model was trained on (`prefect_crisis.core.contract_inference`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect.blocks.core import Block

from prefect_crisis.core.contract_inference import MAX_LEVELS, learn_columns
from prefect_crisis.core.contract_spec import ColumnSpec, ColumnType, ContractSpec, did_you_mean

__all__ = ["ColumnSpec", "ColumnType", "ContractSpec", "DataContract", "did_you_mean"]


class DataContract(Block, ContractSpec):
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
    _documentation_url = "https://pypi.org/project/prefect-crisis/"  # type: ignore[assignment]  # Prefect's stub: HttpUrl; a str is what its blocks set

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
    ) -> DataContract:
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
        specs = learn_columns(
            frame,
            key_column=key_column,
            label_column=label_column,
            margin=margin,
            max_categories=max_categories,
            max_levels=max_levels,
            outlier_rate=settings.get("outlier_rate", cls.model_fields["outlier_rate"].default),
        )
        return cls(
            columns=[ColumnSpec(**spec) for spec in specs],
            key_column=key_column,
            reference_uri=reference_uri,
            **settings,
        )

"""validate_data reads the contract's reference itself; key columns are identifiers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import ColumnSpec, DataContract
from prefect_crisis.core.errors import DataInputError
from prefect_crisis.tasks.validation.checks import validate_data


def customers(rows: int, seed: int, shift: float = 0.0, first_id: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": first_id + np.arange(rows),
            "monthly_spend": rng.lognormal(3, 0.5, rows).round(2) + shift,
        }
    )


def churn_contract(reference_uri: str | None, **key_spec) -> DataContract:
    return DataContract(
        columns=[
            ColumnSpec(name="customer_id", dtype="int", **key_spec),
            ColumnSpec(name="monthly_spend", dtype="float", min_value=0, check_outliers=False),
        ],
        key_column="customer_id",
        reference_uri=reference_uri,
    )


def test_reference_uri_of_the_contract_is_used_when_no_reference_is_passed(tmp_path):
    reference_path = tmp_path / "reference.parquet"
    customers(500, seed=1).to_parquet(reference_path)
    drifted = customers(500, seed=2, shift=40.0, first_id=10_000)
    result = validate_data(drifted, churn_contract(str(reference_path)))
    assert "monthly_spend" in result.report.drift
    assert result.report.drift["monthly_spend"].drifted


def test_a_changed_reference_file_is_read_again(tmp_path):
    reference_path = tmp_path / "reference.parquet"
    batch = customers(500, seed=2, shift=40.0, first_id=10_000)
    customers(500, seed=1).to_parquet(reference_path)
    assert validate_data(batch, churn_contract(str(reference_path))).report.drift["monthly_spend"].drifted
    customers(500, seed=3, shift=40.0).to_parquet(reference_path)
    assert not validate_data(batch, churn_contract(str(reference_path))).report.drift["monthly_spend"].drifted


def test_a_missing_contract_reference_is_one_clear_error(tmp_path):
    with pytest.raises(DataInputError, match="does not exist"):
        validate_data(customers(100, seed=1), churn_contract(str(tmp_path / "absent.parquet")))


def test_key_column_is_neither_drift_checked_nor_outlier_checked(tmp_path):
    reference = customers(500, seed=1)
    # new customers have new ids: far outside the reference's ids, by design
    batch = customers(500, seed=2, first_id=10**9)
    result = validate_data(batch, churn_contract(None), reference)
    assert "customer_id" not in result.report.drift
    assert result.report.quarantined == 0

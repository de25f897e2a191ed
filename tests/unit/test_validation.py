"""Unit tests of validate_data: every check, the verdicts, and the row accounting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import ColumnSpec, DataContract
from prefect_crisis.core.vocabulary import RowReason
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.validation import REASONS_COLUMN, Verdict, validate_data


def contract(**overrides) -> DataContract:
    columns = [
        ColumnSpec(name="id", dtype="int", check_outliers=False),
        ColumnSpec(name="amount", dtype="float", min_value=0, max_value=1_000, check_outliers=False),
        ColumnSpec(name="plan", dtype="string", allowed_values=["free", "pro"]),
        ColumnSpec(name="note", dtype="string", required=False, nullable=True),
    ]
    return DataContract(columns=columns, key_column="id", **{"max_quarantine_ratio": 0.9, **overrides})


def frame(**columns) -> pd.DataFrame:
    base = {
        "id": [1, 2, 3, 4, 5, 6],
        "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
        "plan": ["free", "pro", "free", "pro", "free", "pro"],
    }
    base.update(columns)
    return pd.DataFrame(base, index=[100, 101, 102, 103, 104, 105])


def reasons_of(result, label) -> set[str]:
    return set(result.quarantined.loc[label, REASONS_COLUMN].split(";"))


def assert_accounting(result, original: pd.DataFrame) -> None:
    report = result.report
    assert report.kept + report.quarantined == report.rows == len(original)
    assert len(result.kept) == report.kept and len(result.quarantined) == report.quarantined
    together = result.kept.index.append(result.quarantined.index)
    assert sorted(together.tolist()) == sorted(original.index.tolist())


def test_clean_batch_is_accepted_whole():
    batch = frame()
    result = validate_data(batch, contract())
    assert result.report.verdict is Verdict.ACCEPT
    assert result.report.quarantined == 0
    pd.testing.assert_frame_equal(result.kept, batch)


@pytest.mark.parametrize(
    ("column", "values", "label", "reason"),
    [
        ("amount", [10.0, np.nan, 30.0, 40.0, 50.0, 60.0], 101, "null:amount"),
        ("amount", [10.0, 20.0, 3_000.0, 40.0, 50.0, 60.0], 102, "out_of_range:amount"),
        ("amount", [10.0, 20.0, 30.0, np.inf, 50.0, 60.0], 103, "not_finite:amount"),
        ("plan", ["free", "pro", "free", "pro", "gold", "pro"], 104, "unknown_category:plan"),
        ("id", [1.0, 2.0, 3.0, 4.0, 5.0, 6.5], 105, "wrong_type:id"),
    ],
)
def test_each_contract_check_quarantines_its_row_with_its_reason(column, values, label, reason):
    batch = frame(**{column: values})
    result = validate_data(batch, contract())
    assert result.report.verdict is Verdict.ACCEPT_WITH_QUARANTINE
    assert result.quarantined.index.tolist() == [label]
    assert reasons_of(result, label) == {reason}
    assert_accounting(result, batch)


def test_a_row_carries_every_reason_that_applies():
    batch = frame(amount=[10.0, -5.0, 30.0, 40.0, 50.0, 60.0], plan=["free", "gold", "free", "pro", "free", "pro"])
    result = validate_data(batch, contract())
    assert reasons_of(result, 101) == {"out_of_range:amount", "unknown_category:plan"}


def test_exact_duplicates_keep_the_first_and_repeated_keys_quarantine_all():
    batch = frame(id=[1, 2, 2, 4, 4, 6], amount=[10.0, 20.0, 20.0, 40.0, 41.0, 60.0], plan=["free", "pro", "pro", "pro", "pro", "pro"])
    result = validate_data(batch, contract())
    assert reasons_of(result, 102) == {"duplicate_row"}
    assert reasons_of(result, 103) == {"duplicate_key:id"}
    assert reasons_of(result, 104) == {"duplicate_key:id"}
    assert 101 in result.kept.index
    assert_accounting(result, batch)


def test_safe_coercions_are_applied_and_reported():
    batch = frame(id=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], amount=["10", "20.5", "30", "40", "50", "60"])
    result = validate_data(batch, contract())
    assert result.report.verdict is Verdict.ACCEPT
    assert set(result.report.coercions) == {"id", "amount"}
    assert str(result.kept["id"].dtype) == "Int64"
    assert result.kept["amount"].tolist() == [10.0, 20.5, 30.0, 40.0, 50.0, 60.0]


def test_quarantine_keeps_original_values_and_index():
    batch = frame(amount=["10", "20", "-30", "40", "50", "60"])
    result = validate_data(batch, contract())
    assert result.quarantined.loc[102, "amount"] == "-30"
    assert result.quarantined.index.tolist() == [102]


def test_missing_optional_column_is_fine_but_missing_required_column_rejects_everything():
    assert validate_data(frame(), contract()).report.verdict is Verdict.ACCEPT
    batch = frame().drop(columns=["plan"])
    result = validate_data(batch, contract())
    assert result.report.verdict is Verdict.REJECT
    assert "missing required columns ['plan']" in result.report.rejection_reasons[0]
    assert result.report.kept == 0 and result.report.quarantined == len(batch)
    assert all(RowReason.BATCH_REJECTED.value in reasons for reasons in result.quarantined[REASONS_COLUMN])


def test_quarantine_ratio_above_the_hard_limit_rejects_the_batch():
    batch = frame(amount=[-1.0, -2.0, 30.0, 40.0, 50.0, 60.0])
    result = validate_data(batch, contract(max_quarantine_ratio=0.2))
    assert result.report.verdict is Verdict.REJECT
    assert "quarantine ratio 33.33%" in result.report.rejection_reasons[0]
    assert reasons_of(result, 100) == {"out_of_range:amount", "batch_rejected"}
    assert reasons_of(result, 102) == {"batch_rejected"}
    assert_accounting(result, batch)


def test_extra_columns_reject_only_when_the_contract_forbids_them():
    batch = frame(extra=[1, 2, 3, 4, 5, 6])
    assert validate_data(batch, contract()).report.verdict is Verdict.ACCEPT
    strict = validate_data(batch, contract(allow_extra_columns=False))
    assert strict.report.verdict is Verdict.REJECT
    assert "extra" in strict.report.rejection_reasons[0]


def test_failures_count_rows_and_name_examples_by_index():
    batch = frame(amount=[np.nan, np.nan, 30.0, 40.0, 50.0, 60.0])
    report = validate_data(batch, contract()).report
    (failure,) = report.failures
    assert (failure.reason, failure.column, failure.rows, failure.examples) == (RowReason.NULL, "amount", 2, (100, 101))
    assert report.check_counts == {"null": 2}


def test_outliers_are_quarantined_through_the_contract():
    batch = make_batch(2_000, seed=3, with_label=False)
    batch.loc[17, "f04"] = 30.0  # inside the range, far outside the distribution
    result = validate_data(batch, synthetic_contract(with_label=False))
    assert "outlier:f04" in reasons_of(result, 17)


def test_drift_against_a_reference_names_the_drifted_features_only():
    reference = make_batch(20_000, seed=1)
    drifted = make_batch(20_000, seed=2, drift_features=("f01", "f03"))
    report = validate_data(drifted, synthetic_contract(), reference).report
    assert report.drifted_features == ["f01", "f03"]
    assert report.drift["f01"].psi > 0.2 and report.drift["f01"].ks_statistic > 0.3
    assert report.drift["segment"].kind == "categorical" and not report.drift["segment"].drifted
    clean = validate_data(make_batch(20_000, seed=3), synthetic_contract(), reference).report
    assert clean.drifted_features == []


def test_categorical_drift_is_found_by_psi():
    reference = make_batch(10_000, seed=1)
    shifted = make_batch(10_000, seed=2)
    shifted["segment"] = pd.array(np.where(np.arange(10_000) % 10 < 8, "consumer", "smb"), dtype="str")
    report = validate_data(shifted, synthetic_contract(), reference).report
    assert "segment" in report.drifted_features


def test_too_many_drifted_features_reject_when_the_contract_says_so():
    reference = make_batch(10_000, seed=1)
    drifted = make_batch(10_000, seed=2, drift_features=("f01", "f03"))
    report = validate_data(drifted, synthetic_contract(max_drifted_features=1), reference).report
    assert report.verdict is Verdict.REJECT
    assert "2 drifted features" in report.rejection_reasons[0]


def test_report_is_json_ready():
    reference = make_batch(5_000, seed=1)
    batch = make_batch(5_000, seed=2, corrupt_fraction=0.02)
    payload = validate_data(batch, synthetic_contract(), reference).report.to_dict()
    decoded = json.loads(json.dumps(payload))
    assert decoded["rows"] == 5_000
    assert decoded["quarantined"] == decoded["rows"] - decoded["kept"] > 0
    assert set(decoded["reasons"]) >= {"null", "out_of_range", "unknown_category"}


def test_fingerprint_identifies_the_batch_content():
    first = validate_data(frame(), contract()).report.fingerprint
    assert first == validate_data(frame(), contract()).report.fingerprint
    assert first != validate_data(frame(amount=[11.0, 20.0, 30.0, 40.0, 50.0, 60.0]), contract()).report.fingerprint


def test_a_value_out_of_range_is_not_also_called_an_outlier():
    batch = make_batch(2_000, seed=4, with_label=False)
    batch.loc[5, "f02"] = 500.0  # out of the contract's range and far from the median
    batch.loc[6, "f02"] = 40.0  # inside the range, far from the median
    result = validate_data(batch, synthetic_contract(with_label=False))
    assert reasons_of(result, 5) == {"out_of_range:f02"}
    assert reasons_of(result, 6) == {"outlier:f02"}


def test_codes_of_a_numeric_column_quarantine_an_unseen_value_however_near():
    codes = DataContract(columns=[ColumnSpec(name="rooms", dtype="int", allowed_values=[1, 2, 3, 5])], check_duplicate_rows=False)
    result = validate_data(pd.DataFrame({"rooms": [1, 2, 4, 5, 3]}, index=[10, 11, 12, 13, 14]), codes)
    assert result.quarantined.index.tolist() == [12]
    assert reasons_of(result, 12) == {"unknown_category:rooms"}


def test_allowed_values_take_the_kind_of_their_column():
    assert ColumnSpec(name="rooms", dtype="int", allowed_values=["1", "2"]).allowed_values == [1, 2]
    assert ColumnSpec(name="plan", dtype="string", allowed_values=[1, 2]).allowed_values == ["1", "2"]
    with pytest.raises(ValueError, match="its allowed_values must be numbers, not 'free'"):
        ColumnSpec(name="rooms", dtype="int", allowed_values=["free"])
    with pytest.raises(ValueError, match="allowed_values applies to string and numeric columns, not bool"):
        ColumnSpec(name="flag", dtype="bool", allowed_values=["true"])


def test_the_fingerprint_covers_the_header_and_holds_without_the_duplicate_check():
    renamed = frame().rename(columns={"plan": "tier"})
    loose = contract(check_duplicate_rows=False, allow_extra_columns=True)
    assert validate_data(frame(), loose).report.fingerprint == validate_data(frame(), contract()).report.fingerprint
    assert validate_data(renamed, loose).report.fingerprint != validate_data(frame(), loose).report.fingerprint

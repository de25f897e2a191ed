"""Bad input gets a clear error from the project's own types, with a reason enum;
random frames never crash validation and always keep the row accounting exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_crisis.blocks import ColumnSpec, DataContract
from prefect_crisis.core.errors import (
    ContractError,
    ContractErrorReason,
    CrisisError,
    DataInputError,
    InputErrorReason,
)
from prefect_crisis.tasks.drills.datasets import LABEL, load_dataset
from prefect_crisis.tasks.validation import REASONS_COLUMN, Verdict, validate_data
from prefect_crisis.tasks.validation.batches import load_frame

CONTRACT = DataContract(
    columns=[
        ColumnSpec(name="x", dtype="float", min_value=-100, max_value=100),
        ColumnSpec(name="n", dtype="int", nullable=True),
        ColumnSpec(name="c", dtype="string", allowed_values=["a", "b"]),
        ColumnSpec(name="flag", dtype="bool", required=False),
    ],
    key_column="n",
    max_quarantine_ratio=0.5,
)


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        ([[1, 2]], InputErrorReason.NOT_A_DATAFRAME),
        (pd.DataFrame(), InputErrorReason.EMPTY_FRAME),
        (pd.DataFrame({"x": [], "n": [], "c": []}), InputErrorReason.EMPTY_FRAME),
        (pd.DataFrame([[1.0, 2, "a"]], columns=["x", "x", "c"]), InputErrorReason.DUPLICATE_COLUMN_NAMES),
        (pd.DataFrame({"x": [np.nan, np.nan], "n": [1, 2], "c": ["a", "b"]}), InputErrorReason.ALL_NULL_COLUMN),
        (pd.DataFrame({"x": [1.0, 2.0], "n": [[1], [2]], "c": ["a", "b"]}), InputErrorReason.UNHASHABLE_VALUES),
    ],
    ids=["list", "empty", "no-rows", "duplicate-columns", "all-nan", "lists-in-numeric"],
)
def test_bad_input_raises_data_input_error_with_its_reason(batch, reason):
    with pytest.raises(DataInputError) as caught:
        validate_data(batch, CONTRACT)
    assert caught.value.reason is reason
    assert "\n" not in str(caught.value)


def test_a_column_that_is_mostly_text_rejects_the_batch_and_names_the_column():
    batch = pd.DataFrame({"x": ["1.5", "abc", "x", "y"], "n": [1, 2, 3, 4], "c": ["a"] * 4}, index=[10, 11, 12, 13])
    report = validate_data(batch, CONTRACT).report
    assert report.verdict.value == "reject"
    assert any("column 'x' is declared float but 75% of its values are not" in reason for reason in report.rejection_reasons)


def test_a_typo_in_a_csv_header_names_the_missing_and_the_unknown_column_and_is_another_batch(tmp_path):
    reference, stream = load_dataset("breast-cancer").split(seed=0)
    contract = DataContract.from_reference(reference, label_column=LABEL)
    batch = stream.iloc[:100]
    batch.to_csv(tmp_path / "clean.csv", index=False)
    batch.rename(columns={"mean_radius": "mean_radus"}).to_csv(tmp_path / "typo.csv", index=False)
    clean = validate_data(load_frame(str(tmp_path / "clean.csv")), contract, reference).report
    typo = validate_data(load_frame(str(tmp_path / "typo.csv")), contract, reference).report
    assert clean.verdict is Verdict.ACCEPT and typo.verdict is Verdict.REJECT and typo.quarantined == 100
    assert typo.rejection_reasons == (
        "missing required columns ['mean_radius']; the batch has columns the contract does not name: 'mean_radus' (did you mean 'mean_radius'?)",
    )
    # Same values under another header: another batch, so its parts never replace the clean file's.
    assert typo.fingerprint and clean.fingerprint and typo.fingerprint != clean.fingerprint


def test_a_mistyped_label_for_a_learned_contract_is_one_line_with_the_closest_column():
    reference = load_dataset("wine").frame
    with pytest.raises(ContractError) as caught:
        DataContract.from_reference(reference, label_column="lable")
    assert caught.value.reason is ContractErrorReason.UNKNOWN_COLUMN and caught.value.columns == ["lable"]
    assert str(caught.value).startswith("label_column 'lable' is not a column of the reference (did you mean 'label'?); it has [")
    assert "\n" not in str(caught.value)


def test_contract_naming_an_undeclared_key_column_is_a_contract_error():
    broken = DataContract(columns=[ColumnSpec(name="x")], key_column="customer_id")
    with pytest.raises(ContractError) as caught:
        validate_data(pd.DataFrame({"x": [1.0]}), broken)
    assert caught.value.reason is ContractErrorReason.UNKNOWN_COLUMN
    assert caught.value.columns == ["customer_id"]


def test_reference_without_the_contract_columns_is_a_contract_error():
    batch = pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "c": ["a", "b"]})
    with pytest.raises(ContractError) as caught:
        validate_data(batch, CONTRACT, reference=pd.DataFrame({"x": [1.0]}))
    assert caught.value.reason is ContractErrorReason.INCOMPATIBLE_REFERENCE
    assert caught.value.columns == ["n", "c"]


def test_contract_shape_errors_are_caught_when_the_block_is_built():
    with pytest.raises(ValueError, match=r"min_value 5\.0 is above max_value 1\.0"):
        ColumnSpec(name="x", min_value=5, max_value=1)
    with pytest.raises(ValueError, match="declares columns more than once"):
        DataContract(columns=[ColumnSpec(name="x"), ColumnSpec(name="x")])


def test_an_unreadable_source_raises_data_input_error(tmp_path):
    path = tmp_path / "batch.txt"
    path.write_text("x\n1\n")
    with pytest.raises(DataInputError) as caught:
        load_frame(str(path))
    assert caught.value.reason is InputErrorReason.UNREADABLE_SOURCE


def test_a_missing_source_says_it_does_not_exist(tmp_path):
    with pytest.raises(DataInputError, match=r"batch '.*missing.parquet' does not exist") as caught:
        load_frame(str(tmp_path / "missing.parquet"))
    assert caught.value.reason is InputErrorReason.MISSING_SOURCE


def test_all_errors_share_the_project_base_class():
    assert issubclass(DataInputError, CrisisError) and issubclass(ContractError, CrisisError)


cells = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e308, max_value=1e308),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["a", "b", "c", "", "1.5", "nan", "inf", "-0"]),
    st.text(max_size=5),
    st.booleans(),
)


mostly_in_range = st.one_of(st.floats(-100, 100), st.floats(-100, 100), st.floats(-100, 100), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def random_frames(draw):
    rows = draw(st.integers(min_value=0, max_value=25))
    # Mostly the contract's columns in their own kinds, so that accepted and
    # partly quarantined batches are as common as rejected and refused ones.
    usual = {"x": "float", "n": "int", "c": "text", "flag": "bool", "extra": "mixed"}
    complete = draw(st.booleans())
    names = [name for name in usual if (complete and name in "xnc") or draw(st.booleans())]
    data = {}
    for name in names:
        kind = usual[name] if complete else draw(st.sampled_from([usual[name], "float", "int", "text", "mixed"]))
        if kind == "float":
            column = draw(st.lists(mostly_in_range, min_size=rows, max_size=rows))
        elif kind == "bool":
            column = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        elif kind == "int":
            column = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows))
        elif kind == "text":
            column = draw(st.lists(st.sampled_from(["a", "b", "a", "b", "zzz", None]), min_size=rows, max_size=rows))
        else:
            column = draw(st.lists(cells, min_size=rows, max_size=rows))
        data[name] = pd.Series(column, dtype=object if kind == "mixed" else None)
    index = draw(st.sampled_from([None, "shuffled", "strings"]))
    frame = pd.DataFrame(data)
    if index == "shuffled" and rows:
        frame.index = np.random.default_rng(rows).permutation(rows) * 7
    elif index == "strings":
        frame.index = [f"r{i}" for i in range(len(frame))]
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_frames())
def test_random_frames_never_crash_and_keep_exact_row_accounting(frame):
    try:
        result = validate_data(frame, CONTRACT)
    except CrisisError:
        return  # a clear, typed error is the contract for unusable input
    report = result.report
    assert report.kept + report.quarantined == report.rows == len(frame)
    assert sorted(map(str, result.kept.index.append(result.quarantined.index))) == sorted(map(str, frame.index))
    assert result.quarantined[REASONS_COLUMN].str.len().gt(0).all()
    assert set(result.kept.columns) == set(frame.columns)

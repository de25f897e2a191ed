"""Validation on data shaped like real data: small batches, skewed, heavy-tailed
and discrete columns, text in numeric columns, contracts learned from a reference.

Each test states a false-alarm rate or a detection that the statistics must
hold over many seeded draws, so a verdict can neither be lucky nor flaky.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import ColumnSpec, DataContract
from prefect_crisis.core.errors import ContractError, ContractErrorReason
from prefect_crisis.tasks.drills.synthetic import CATEGORIES, CATEGORY_SHARES, COLUMN_SHAPES, customer_table
from prefect_crisis.tasks.validation import REASONS_COLUMN, Verdict, validate_data
from prefect_crisis.tasks.validation.drift import DriftSettings, categorical_drift, numeric_drift

SIGNIFICANCE = DriftSettings().significance
SHAPES = COLUMN_SHAPES


def same_population_flag_rate(rows: int, shape: str, draws: int) -> float:
    rng = np.random.default_rng(rows * 31 + len(shape))
    settings = DriftSettings()
    if shape == "categorical":
        flagged = [
            categorical_drift(
                "c",
                pd.Series(rng.choice(CATEGORIES, rows, p=CATEGORY_SHARES)),
                pd.Series(rng.choice(CATEGORIES, rows, p=CATEGORY_SHARES)),
                settings,
            ).drifted
            for _ in range(draws)
        ]
    else:
        draw = SHAPES[shape]
        flagged = [numeric_drift("x", draw(rng, rows), draw(rng, rows), settings).drifted for _ in range(draws)]
    return float(np.mean(flagged))


@pytest.mark.parametrize("rows", [30, 89, 200, 1_000])
def test_a_population_against_itself_is_flagged_at_most_at_the_significance_level(rows):
    # Before sample sizes counted, PSI > 0.2 flagged 49% of 89-row pairs.
    shapes = [*SHAPES, "categorical"]
    rates = {shape: same_population_flag_rate(rows, shape, draws=300) for shape in shapes}
    pooled = float(np.mean(list(rates.values())))
    assert pooled <= SIGNIFICANCE, rates
    # One shape alone over 300 draws: allow its sampling error, not a systematic excess.
    assert max(rates.values()) <= SIGNIFICANCE + 3 * np.sqrt(SIGNIFICANCE / 300), rates


def test_a_half_standard_deviation_shift_is_flagged_at_500_rows_per_side():
    rng = np.random.default_rng(11)
    settings = DriftSettings()
    for shape in ("normal", "log-normal"):
        draw = SHAPES[shape]
        flagged = []
        for _ in range(100):
            reference, current = draw(rng, 500), draw(rng, 500)
            shift = 0.5 * np.std(reference)
            flagged.append(numeric_drift("x", reference, current + shift, settings).drifted)
        assert np.mean(flagged) >= 0.95, shape


def test_a_clean_90_row_batch_passes_a_contract_that_allows_one_drifted_feature():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({f"f{i}": rng.normal(size=5_000) for i in range(10)})
    contract = DataContract(columns=[ColumnSpec(name=f"f{i}") for i in range(10)], max_drifted_features=1, max_quarantine_ratio=0.2)
    verdicts = [validate_data(pd.DataFrame({f"f{i}": rng.normal(size=90) for i in range(10)}), contract, reference).report.verdict for _ in range(30)]
    assert Verdict.REJECT not in verdicts


@pytest.fixture(scope="module")
def learned_contract():
    reference = customer_table(np.random.default_rng(0), 5_000)
    return DataContract.from_reference(reference, key_column="customer_id"), reference


@pytest.mark.parametrize("rows", [30, 200, 1_000])
def test_clean_real_shaped_batches_lose_at_most_one_percent_of_rows_to_outliers(learned_contract, rows):
    # Before: the modified z-score at 3.5 on each batch flagged about a quarter of such rows.
    contract, _ = learned_contract
    rng = np.random.default_rng(rows)
    flagged = total = 0
    for _ in range(max(3, 3_000 // rows)):
        report = validate_data(customer_table(rng, rows), contract).report
        assert report.verdict is not Verdict.REJECT
        flagged += report.quarantined
        total += report.rows
    assert flagged / total <= 0.01


def test_without_stored_fences_the_reference_sets_them(learned_contract):
    contract, reference = learned_contract
    bare = contract.model_copy(
        update={"columns": [column.model_copy(update={"outlier_low": None, "outlier_high": None}) for column in contract.columns]}
    )
    rng = np.random.default_rng(3)
    batches = [validate_data(customer_table(rng, 200), bare, reference).report for _ in range(20)]
    assert sum(report.quarantined for report in batches) / sum(report.rows for report in batches) <= 0.01


def test_without_any_reference_skewed_and_discrete_batches_are_not_flagged_wholesale(learned_contract):
    contract, _ = learned_contract
    unbounded = contract.model_copy(
        update={
            "columns": [
                column.model_copy(update={"outlier_low": None, "outlier_high": None, "min_value": None, "max_value": None})
                for column in contract.columns
            ]
        }
    )
    rng = np.random.default_rng(4)
    batches = [validate_data(customer_table(rng, 200), unbounded).report for _ in range(20)]
    assert sum(report.quarantined for report in batches) / sum(report.rows for report in batches) <= 0.01


@pytest.mark.parametrize("fenced_by", ["reference", "batch"])
def test_a_share_of_extreme_values_cannot_hide_itself(fenced_by):
    # Fifteen values at 50 among a hundred near 0 inflate the mean and std so
    # much that none scores above 3 by the seed's z-score; fences do not move.
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 1, 100), np.full(15, 50.0)])
    z_scores = np.abs((values - values.mean()) / values.std())
    assert not (z_scores[100:] > 3).any()
    contract = DataContract(columns=[ColumnSpec(name="x")], max_quarantine_ratio=0.5, check_duplicate_rows=False)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 2_000)}) if fenced_by == "reference" else None
    result = validate_data(pd.DataFrame({"x": values}), contract, reference)
    flagged = result.quarantined.index
    assert set(range(100, 115)) <= set(flagged)
    assert len(set(flagged) - set(range(100, 115))) <= 1


def test_one_stray_text_value_quarantines_its_row_and_keeps_the_rest():
    batch = pd.DataFrame({"amount": [12.5, "N/A", 7.0, 3.25] * 25, "id": range(100)})
    contract = DataContract(columns=[ColumnSpec(name="amount"), ColumnSpec(name="id", dtype="int")], max_quarantine_ratio=0.3)
    result = validate_data(batch, contract)
    assert result.report.verdict is Verdict.ACCEPT_WITH_QUARANTINE
    assert result.report.kept == 75 and result.report.quarantined == 25
    assert set(result.quarantined[REASONS_COLUMN]) == {"wrong_type:amount"}
    assert result.kept["amount"].dtype == np.float64


def test_a_column_that_is_mostly_text_rejects_the_batch():
    batch = pd.DataFrame({"amount": ["N/A", "unknown", "1.5"] * 20, "id": range(60)})
    result = validate_data(batch, DataContract(columns=[ColumnSpec(name="amount")], check_duplicate_rows=False))
    assert result.report.verdict is Verdict.REJECT
    assert "column 'amount' is declared float but 67% of its values are not" in result.report.rejection_reasons[0]


def test_from_reference_learns_types_nulls_ranges_categories_and_identifiers(learned_contract):
    contract, reference = learned_contract
    key = contract.column("customer_id")
    assert (key.dtype, key.check_drift, key.check_outliers) == ("int", False, False)
    visits = contract.column("visits_0")
    # A count's only hard limit is its floor; its top is a tolerance band, never inside the reference's own values.
    assert visits.dtype == "int" and visits.min_value == 0 and visits.max_value is None
    assert visits.allowed_values is None and visits.outlier_high >= reference["visits_0"].max()
    amount = contract.column("amount_0")
    assert amount.dtype == "float" and amount.min_value == 0
    assert amount.outlier_high is not None and amount.outlier_high > reference["amount_0"].quantile(0.999)
    assert contract.column("plan").allowed_values == ["free", "pro", "team"]
    assert not any(column.nullable for column in contract.columns)
    assert contract.key_column == "customer_id"


def test_from_reference_marks_nullable_columns_and_leaves_free_text_open():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"income": np.where(rng.random(500) < 0.1, np.nan, rng.lognormal(10, 1, 500)), "note": [f"n{i}" for i in range(500)]})
    contract = DataContract.from_reference(reference, reference_uri="/data/reference.parquet")
    assert contract.column("income").nullable and contract.column("income").dtype == "float"
    assert contract.column("note").allowed_values is None
    assert contract.reference_uri == "/data/reference.parquet"
    report = validate_data(reference, contract, reference).report
    assert report.verdict is not Verdict.REJECT and report.quarantined <= 0.01 * report.rows
    assert report.drifted_features == []


@pytest.mark.parametrize("rows", [0, 29])
def test_from_reference_refuses_a_reference_too_small_to_stand_for_a_population(rows):
    with pytest.raises(ContractError) as caught:
        DataContract.from_reference(pd.DataFrame({"x": np.arange(rows, dtype=float)}))
    assert caught.value.reason is ContractErrorReason.REFERENCE_TOO_SMALL


def test_from_reference_names_a_missing_key_column():
    with pytest.raises(ContractError, match="key_column 'id' is not a column of the reference"):
        DataContract.from_reference(pd.DataFrame({"x": np.arange(50.0)}), key_column="id")

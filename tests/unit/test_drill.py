"""The drill's parts that need no stack: the corrupted batch it sends (through the real validation),
the fault switch it puts in front of a served primary (through the real router), the report's
statistics and picture, and the catalogue's errors. The drills themselves run on a real stack in
tests/e2e/test_closed_loop.py."""

from __future__ import annotations

import pandas as pd
import pytest

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.vocabulary import is_drill_model
from prefect_crisis.flows.drill import SCENARIOS, DrillResult, _keyed, corrupt, percentile, plot_times, summarize
from prefect_crisis.tasks.drills import scenario_names
from prefect_crisis.tasks.drills import FaultyEstimator, concept_drifted, drill_model_name
from prefect_crisis.tasks.quarantine import write_parquet
from prefect_crisis.tasks.synthetic import make_batch
from prefect_crisis.tasks.validation import validate_data


def result(scenario: str, iteration: int, passed: bool = True, detect=None, mitigate=None, recover=None) -> DrillResult:
    return DrillResult(scenario, iteration, iteration, f"drill-{scenario}-{iteration}", passed, detect, mitigate, recover, None,
                       () if passed else ("no rollback within 90 s",), {}, 1.0)


def test_every_scenario_of_the_issue_is_in_the_catalogue_with_a_time_limit():
    assert scenario_names(None) == list(SCENARIOS)
    assert {"corrupted-batch", "poisoned-retrain", "concept-drift", "primary-raising", "latency-spike", "registry-unavailable",
            "duplicate-event", "monitor-silent"} <= set(SCENARIOS)
    assert all(scenario.limit > 0 and scenario.summary for scenario in SCENARIOS.values())
    assert scenario_names(["latency-spike", "corrupted-batch"]) == ["corrupted-batch", "latency-spike"]  # catalogue order


def test_a_mistyped_scenario_is_one_line_naming_the_scenarios():
    with pytest.raises(CrisisError, match="no drill scenario 'latency-spik'; the scenarios are corrupted-batch"):
        scenario_names(["latency-spik"])


def test_drill_models_are_named_so_the_ladder_knows_them():
    name = drill_model_name("latency-spike")
    assert is_drill_model(name) and name.startswith("drill-latency-spike-") and not is_drill_model("latency-spike")


def test_the_corrupted_batch_holds_every_defect_and_survives_parquet_for_the_real_validation(tmp_path):
    """NaN, inf, out of range, text in a numeric column, duplicate keys: each quarantined with its reason, after the
    batch went through a parquet file (text columns as they were), and kept + quarantined is every row sent."""
    reference = _keyed(make_batch(2_000, seed=10_000))
    contract = DataContract.from_reference(reference, key_column="event_id", label_column="label", max_quarantine_ratio=0.1)
    path = tmp_path / "light.parquet"
    write_parquet(corrupt(_keyed(make_batch(200, seed=3), start=5_000), 10, seed=3), str(path))
    light = pd.read_parquet(path)
    assert light["segment"].isin(["consumer", "smb", "enterprise", "public", "education"]).all()  # not quoted by the write
    report = validate_data(light, contract, reference).report
    assert report.kept + report.quarantined == 200 and report.verdict.value != "reject"
    assert {"null", "not_finite", "out_of_range", "wrong_type", "duplicate_key"} <= set(report.check_counts)
    heavy = validate_data(corrupt(_keyed(make_batch(200, seed=4), start=6_000), 70, seed=4), contract, reference).report
    assert heavy.verdict.value == "reject" and heavy.kept == 0 and heavy.quarantined == 200


def test_concept_drift_keeps_the_inputs_and_changes_what_the_label_follows():
    batch = make_batch(2_000, seed=5)
    drifted = concept_drifted(batch, 5)
    pd.testing.assert_frame_equal(batch.drop(columns=["label"]), drifted.drop(columns=["label"]))
    agreement = (batch["label"] == drifted["label"]).mean()
    assert 0.35 < agreement < 0.65  # the old concept predicts the new labels no better than a coin


def test_the_fault_switch_raises_sleeps_or_answers_as_the_estimator():
    from sklearn.linear_model import LogisticRegression

    batch = make_batch(300, seed=6)
    X = batch[[f"f0{i}" for i in range(3)]].to_numpy()
    faulty = FaultyEstimator(LogisticRegression().fit(X, batch["label"]))
    assert faulty.predict_proba(X).shape == (300, 2) and list(faulty.classes_) == [0, 1]
    faulty.fault = "raise"
    with pytest.raises(RuntimeError, match="drill"):
        faulty.predict_proba(X)
    faulty.fault = 0.05
    assert faulty.predict(X).shape == (300,)
    assert (faulty.calls, faulty.faulted_calls) == (3, 2)


def test_summary_gives_success_rate_and_percentiles_per_scenario_and_says_why_a_run_failed():
    results = [result("latency-spike", i, detect=0.5 + i / 10, mitigate=0.5 + i / 10, recover=1.0 + i) for i in range(5)]
    results.append(result("poisoned-retrain", 0, passed=False, detect=1.2))
    rows = {row["scenario"]: row for row in summarize(results)}
    spike = rows["latency-spike"]
    assert (spike["runs"], spike["passed"], spike["success_rate"]) == (5, 5, 1.0)
    assert (spike["detect_p50_s"], spike["recover_max_s"]) == (0.7, 5.0) and spike["recover_p95_s"] == pytest.approx(4.8)
    poisoned = rows["poisoned-retrain"]
    assert poisoned["success_rate"] == 0.0 and poisoned["recover_p50_s"] is None
    assert poisoned["failures"] == "#0: no rollback within 90 s"
    assert percentile([3.0], 95) == 3.0


def test_the_times_picture_is_a_png_and_no_times_is_no_picture():
    png = plot_times([result("latency-spike", i, detect=0.8, mitigate=0.8, recover=0.7) for i in range(3)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert plot_times([result("monitor-silent", 0, passed=False)]) is None

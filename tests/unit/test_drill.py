"""The drill's parts that need no stack: the corrupted batches it sends (synthetic and real, through the
real validation), the fault switch it puts in front of a served primary (through the real router), the
end state every scenario states, the report's statistics and picture, and the catalogue's errors. The
drills themselves run on a real stack in tests/e2e/test_closed_loop.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.vocabulary import is_drill_model
from prefect_crisis.flows.drill import (
    BENIGN_RECORDED_MALIGNANT, FAR_OUT, OVER_THE_LIMIT, SCENARIOS, DrillResult, _keyed, corrupt, describe, percentile, plot_times, summarize,
)
from prefect_crisis.tasks.drills.datasets import LABEL, load_dataset
from prefect_crisis.tasks.drills.injections import END_STATE_TOLERANCE, FaultyEstimator, concept_drifted, corrupt_real, drill_model_name, scenario_names
from prefect_crisis.tasks.drills.real_models import WEAK_FALLBACK_FEATURES, accuracy, mislabelled, scaled_logistic, top_features
from prefect_crisis.tasks.validation.quarantine import write_parquet
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.validation.checks import validate_data


def result(scenario: str, iteration: int, passed: bool = True, detect=None, mitigate=None, recover=None, facts=None) -> DrillResult:
    return DrillResult(scenario, iteration, iteration, f"drill-{scenario}-{iteration}", passed, detect, mitigate, recover, None,
                       () if passed else ("no rollback within 90 s",), facts or {}, 1.0)


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
    assert {"null", "not_finite", "wrong_type", "duplicate_key"} <= set(report.check_counts)
    assert set(report.check_counts) & FAR_OUT  # 1e6: past the learnt tolerance bands (or a hard limit)
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


def test_the_summary_and_the_line_carry_the_end_state_accuracy_and_incidents_per_episode():
    results = [result("real-bad-release", i, facts={"pre_accuracy": 0.96, "end_accuracy": end, "incidents": 1}) for i, end in enumerate((0.96, 0.94))]
    results += [result("latency-spike", 0, facts={"pre_accuracy": None, "end_accuracy": None, "incidents": 0, "accuracy": "not measured: ..."})]
    rows = {row["scenario"]: row for row in summarize(results)}
    real = rows["real-bad-release"]
    assert (real["pre_accuracy"], real["end_accuracy"], real["accuracy_drop_max"], real["incidents_min"], real["incidents_max"]) == (0.96, 0.95, 0.02, 1, 1)
    spike = rows["latency-spike"]
    assert (spike["pre_accuracy"], spike["end_accuracy"], spike["incidents_min"], spike["incidents_max"]) == (None, None, 0, 0)
    assert "accuracy 0.960 -> 0.940, 1 incident [" in describe(results[1]) and "; 0 incidents [" in describe(results[2])


def test_the_drill_table_shows_the_end_state_within_80_columns(monkeypatch):
    from rich.console import Console

    from prefect_crisis.deployments import drill_cli

    slowest = {"passed": 20, "runs": 20, "pre_accuracy": 0.9582, "end_accuracy": 0.9577, "incidents_min": 0, "incidents_max": 1, "failures": "",
               **{f"{measure}_{stat}_s": 17.97 for measure in ("detect", "mitigate", "recover") for stat in ("p50", "p95", "max")}}
    rows = [{"scenario": name, **slowest} for name in SCENARIOS]
    rows[0].update(pre_accuracy=None, end_accuracy=None, incidents_min=1, incidents_max=1)
    console = Console(width=80, record=True, highlight=False)
    monkeypatch.setattr(drill_cli, "console", console)
    drill_cli._print_summary(rows)
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80 and "…" not in text
    assert "real-poisoned-retrain  20/20" in text and "0.958>0.958  0-1" in text
    assert drill_cli.shown_accuracy(rows[0]) == "-" and drill_cli.shown_incidents(rows[0]) == "1"


def test_every_scenario_states_its_end_state_and_why_an_episode_is_not_one_incident():
    for name, scenario in SCENARIOS.items():
        end = scenario.end
        assert (end.fresh is None) == bool(end.unmeasured), name  # accuracy measured, or a reason why it cannot be
        fewest, most = end.incidents
        assert 0 <= fewest <= most and (end.incidents == (1, 1) or end.why), name
    assert {name for name, scenario in SCENARIOS.items() if scenario.end.fresh is None} == {"primary-raising", "latency-spike", "training-killed"}
    assert SCENARIOS["training-killed"].end.incidents == (0, 0)
    for name in ("corrupted-batch", "real-rejected-batch"):  # a rejected batch warns at most, and never reaches the emergency step
        assert SCENARIOS[name].end.incidents == (0, 1) and SCENARIOS[name].end.warnings_only, name
    assert {"real-bad-release", "real-poisoned-retrain", "real-rejected-batch"} <= set(SCENARIOS)


def test_a_real_batch_broken_past_the_contracts_limit_is_rejected_whole_with_each_reason(tmp_path):
    data = load_dataset("digits")
    train, _, _, batch = data.split(seed=0, parts=(0.4, 0.2, 0.2, 0.2))
    contract = DataContract.from_reference(train, label_column=LABEL)
    assert validate_data(batch, contract, train).report.verdict.value == "accept"  # the same rows, unbroken
    broken = math.ceil(len(batch) * (contract.max_quarantine_ratio + OVER_THE_LIMIT))
    path = tmp_path / "batch.parquet"
    write_parquet(corrupt_real(batch, broken, seed=0, classes=data.classes), str(path))
    report = validate_data(pd.read_parquet(path), contract, train).report
    assert report.verdict.value == "reject" and report.kept == 0 and report.quarantined == len(batch)
    assert {"null", "wrong_type", "unknown_category"} <= set(report.check_counts) and set(report.check_counts) & FAR_OUT


def test_on_real_data_a_wrong_end_state_costs_more_than_the_tolerance_and_the_poisoned_retrain_is_critical_not_an_emergency():
    data = load_dataset("digits")
    train, _, _, fresh = data.split(seed=0, parts=(0.4, 0.2, 0.2, 0.2))
    features = list(data.features)
    few = top_features(train, features, WEAK_FALLBACK_FEATURES)
    good, weak = accuracy(scaled_logistic(train, features), fresh, features), accuracy(scaled_logistic(train, few), fresh, few)
    assert good - weak > 5 * END_STATE_TOLERANCE  # ending on the weak fallback fails the drill
    cancer = load_dataset("breast-cancer")
    for seed in range(5):
        _, retrain, window, _ = cancer.split(seed=seed, parts=(0.4, 0.2, 0.2, 0.2))
        recorded = mislabelled(retrain[LABEL].to_numpy(), cancer.classes, BENIGN_RECORDED_MALIGNANT, np.random.default_rng(seed))
        half = len(retrain) // 2
        poisoned = scaled_logistic(retrain.iloc[:half], list(cancer.features), recorded[:half])
        live = accuracy(poisoned, window, cancer.features)
        assert 0.5 < live < 0.8, (seed, live)  # error 0.2-0.5: past the critical line (baseline + 0.10), short of the emergency's 0.5


def test_the_times_picture_is_a_png_and_no_times_is_no_picture():
    png = plot_times([result("latency-spike", i, detect=0.8, mitigate=0.8, recover=0.7) for i in range(3)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert plot_times([result("monitor-silent", 0, passed=False)]) is None

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
from prefect_crisis.tasks.drills.catalogue import END_STATE_TOLERANCE, SCENARIO_MODULES, drill_model_name, load_scenarios, scenario_names
from prefect_crisis.tasks.drills.datasets import LABEL, load_dataset
from prefect_crisis.tasks.drills.end_state import EndState, FreshRows, MeasuredAccuracy, judge_accuracy, judge_incidents, judge_rows_lost
from prefect_crisis.tasks.drills.faults import FAR_OUT, FaultyEstimator, concept_drifted, corrupt, corrupt_real, keyed
from prefect_crisis.tasks.drills.real_models import WEAK_FALLBACK_FEATURES, accuracy, mislabelled, scaled_logistic, top_features
from prefect_crisis.tasks.drills.report import describe, percentile, plot_times, summarize
from prefect_crisis.tasks.drills.scenario import Drill, DrillResult
from prefect_crisis.tasks.drills.scenarios.batches import OVER_THE_LIMIT
from prefect_crisis.tasks.drills.scenarios.rollbacks import BENIGN_RECORDED_MALIGNANT
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.validation.checks import validate_data
from prefect_crisis.tasks.validation.quarantine import write_parquet

SCENARIOS = load_scenarios()


def result(scenario: str, iteration: int, passed: bool = True, detect=None, mitigate=None, recover=None, facts=None) -> DrillResult:
    return DrillResult(
        scenario,
        iteration,
        iteration,
        f"drill-{scenario}-{iteration}",
        passed,
        detect,
        mitigate,
        recover,
        None,
        () if passed else ("no rollback within 90 s",),
        facts or {},
        1.0,
    )


def test_every_scenario_of_the_issue_is_in_the_catalogue_with_a_time_limit():
    assert scenario_names(None) == list(SCENARIOS)
    assert {
        "corrupted-batch",
        "poisoned-retrain",
        "concept-drift",
        "primary-raising",
        "latency-spike",
        "registry-unavailable",
        "duplicate-event",
        "monitor-silent",
    } <= set(SCENARIOS)
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
    reference = keyed(make_batch(2_000, seed=10_000))
    contract = DataContract.from_reference(reference, key_column="event_id", label_column="label", max_quarantine_ratio=0.1)
    path = tmp_path / "light.parquet"
    write_parquet(corrupt(keyed(make_batch(200, seed=3), start=5_000), 10, seed=3), str(path))
    light = pd.read_parquet(path)
    assert light["segment"].isin(["consumer", "smb", "enterprise", "public", "education"]).all()  # not quoted by the write
    report = validate_data(light, contract, reference).report
    assert report.kept + report.quarantined == 200 and report.verdict.value != "reject"
    assert {"null", "not_finite", "wrong_type", "duplicate_key"} <= set(report.check_counts)
    assert set(report.check_counts) & FAR_OUT  # 1e6: past the learnt tolerance bands (or a hard limit)
    heavy = validate_data(corrupt(keyed(make_batch(200, seed=4), start=6_000), 70, seed=4), contract, reference).report
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
    assert (real["pre_accuracy"], real["end_accuracy"], real["accuracy_drop_max"], real["incidents_min"], real["incidents_max"]) == (
        0.96,
        0.95,
        0.02,
        1,
        1,
    )
    spike = rows["latency-spike"]
    assert (spike["pre_accuracy"], spike["end_accuracy"], spike["incidents_min"], spike["incidents_max"]) == (None, None, 0, 0)
    assert "accuracy 0.960 -> 0.940, 1 incident [" in describe(results[1]) and "; 0 incidents [" in describe(results[2])


def test_the_drill_table_shows_the_end_state_within_80_columns(monkeypatch):
    from rich.console import Console

    from prefect_crisis.deployments import drill_cli

    slowest = {
        "passed": 20,
        "runs": 20,
        "pre_accuracy": 0.9582,
        "end_accuracy": 0.9577,
        "incidents_min": 0,
        "incidents_max": 1,
        "failures": "",
        **{f"{measure}_{stat}_s": 17.97 for measure in ("detect", "mitigate", "recover") for stat in ("p50", "p95", "max")},
    }
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


# -- the scenarios as values, and their end states judged without a stack ---------------------


def test_each_scenario_is_one_value_in_the_module_the_catalogue_names():
    import importlib

    from prefect_crisis.tasks.drills.scenario import Scenario

    for module in sorted(set(SCENARIO_MODULES.values())):
        values = importlib.import_module(f"prefect_crisis.tasks.drills.scenarios.{module}").SCENARIOS
        assert sorted(value.name for value in values) == sorted(name for name, where in SCENARIO_MODULES.items() if where == module), module
    for name, scenario in SCENARIOS.items():
        assert isinstance(scenario, Scenario) and scenario.name == name, name
        with pytest.raises(AttributeError):  # a value: frozen
            scenario.limit = 1.0
        state = scenario.new_state()
        assert state is not None and state is not scenario.new_state(), name  # a fresh state per iteration
        assert all(callable(getattr(scenario, step)) for step in ("setup", "inject", "expect", "clean_up")), name


def test_the_catalogue_names_scenarios_without_importing_prefect_or_mlflow():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from prefect_crisis.tasks.drills.catalogue import scenario_names\n"
        "from prefect_crisis.tasks.drills.end_state import judge_incidents\n"
        "from prefect_crisis.tasks.drills.report import summarize\n"
        "from prefect_crisis.tasks.drills.faults import corrupt\n"
        "assert scenario_names(['monitor-silent']) == ['monitor-silent']\n"
        "print(sorted(name for name in ('prefect', 'mlflow') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def drill_of(facts=None) -> Drill:
    drill = Drill("poisoned-retrain", 0, 7, "drill-poisoned-retrain-1", 240.0, state=None)
    drill.facts.update(facts or {})
    return drill


def test_the_end_state_counts_incidents_against_what_the_scenario_states():
    one = EndState(FreshRows.SYNTHETIC)
    drill = drill_of()
    judge_incidents(drill, one, ["critical"])
    assert drill.failures == [] and drill.facts["incidents"] == 1 and "incidents_expected" not in drill.facts
    none = drill_of()
    judge_incidents(none, one, [])
    assert none.failures == ["0 incidents opened for the episode, expected 1"]
    warns = EndState(FreshRows.SYNTHETIC, incidents=(0, 1), warnings_only=True, why="a warning at most")
    critical = drill_of()
    judge_incidents(critical, warns, ["critical"])
    assert critical.failures == ["a critical incident opened: this fault warns at most"]
    assert critical.facts["warns_at_most"] is True and critical.facts["incidents_expected"] == "0 to 1: a warning at most"
    two = drill_of()
    judge_incidents(two, warns, ["warning", "warning"])
    assert two.failures == ["2 incidents opened for the episode, expected 0 to 1 (a warning at most)"]


def test_the_end_state_accuracy_may_fall_at_most_the_tolerance_below_the_pre_crisis_version():
    end = EndState(FreshRows.REAL)
    within = drill_of()
    judge_accuracy(within, end, MeasuredAccuracy("1", 0.95, "3", 0.95 - END_STATE_TOLERANCE + 1e-9, 500))
    assert within.failures == [] and within.facts["end_version"] == "3" and within.facts["fresh_rows"] == 500
    below = drill_of()
    judge_accuracy(below, end, MeasuredAccuracy("1", 0.95, "3", 0.95 - END_STATE_TOLERANCE - 0.001, 500))
    assert below.failures == ["the end state serves v3 at 0.919 accuracy on 500 fresh rows, below the pre-crisis v1's 0.950 by more than 0.03"]
    unmeasured = drill_of()
    judge_accuracy(unmeasured, EndState(unmeasured="a serving fault"), None)
    assert unmeasured.failures == [] and unmeasured.facts == {"accuracy": "not measured: a serving fault"}


def test_the_end_state_loses_no_row_where_the_scenario_sends_rows():
    for facts, failures in (({}, []), ({"rows_lost": 0}, []), ({"rows_lost": 3}, ["3 rows lost: not kept, quarantined or answered"])):
        drill = drill_of(facts)
        judge_rows_lost(drill)
        assert drill.failures == failures


def test_an_iteration_that_breaks_reports_why_and_still_cleans_up():
    from dataclasses import dataclass

    from prefect_crisis.flows.drill import run_iteration
    from prefect_crisis.tasks.drills.scenario import Scenario

    cleaned = []

    @dataclass(frozen=True)
    class Broken(Scenario[dict]):
        def new_state(self) -> dict:
            return {}

        def inject(self, drill) -> None:
            raise RuntimeError("the store is gone\nsecond line")

        def clean_up(self, drill) -> None:
            cleaned.append(drill.model)
            raise OSError("still locked")

    lines = []
    done = run_iteration(Broken("broken", "breaks on inject"), 0, 5, progress=lines.append)
    assert not done.passed and done.failures == ("RuntimeError: the store is gone", "cleanup: OSError: still locked")
    assert cleaned == [done.model] and done.model.startswith("drill-broken-")
    assert lines[0].startswith("broken #0 (seed 5): breaks on inject [drill-broken-") and "FAILED: RuntimeError" in lines[1]
    assert (done.facts["pre_accuracy"], done.facts["end_accuracy"], done.facts["incidents"]) == (None, None, None)


def test_the_fault_switch_goes_in_front_of_the_served_primary_and_the_fallback_answers_meanwhile(mlflow_tracking_uri):
    from prefect_crisis.blocks import ModelRegistry
    from prefect_crisis.blocks.fallback_policy import FallbackPolicy
    from prefect_crisis.core.timeline import ListSink, Timeline
    from prefect_crisis.tasks.drills.faults import inject_into_primary, serve_rows
    from prefect_crisis.tasks.drills.injections import register_fallback, register_synthetic
    from prefect_crisis.tasks.serving.router import FallbackRouter

    registry = ModelRegistry(model_name="drill-switch").use(timeline=Timeline(sink=ListSink()))
    good = register_synthetic(registry, 1)
    register_fallback(registry, 8)
    registry.promote(good, "first model")
    policy = FallbackPolicy(failure_threshold=3, cooldown_seconds=60, refresh_seconds=3600)
    router = FallbackRouter(registry, policy, timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    try:
        faulty = inject_into_primary(router)
        assert router.primary.estimator is faulty and router.primary.version == good
        faulty.fault = "raise"
        served = serve_rows(router, make_batch(50, seed=3), request_rows=10)
        assert (served.failed_requests, served.rows_failed, served.rows_by_fallback, served.rows_lost) == (0, 0, 50, 0)
        assert faulty.faulted_calls >= 1
        faulty.fault = None
        router.refresh()  # the champion has not moved: what serves is still the switched primary
        assert router.primary.estimator is faulty
    finally:
        router.close()

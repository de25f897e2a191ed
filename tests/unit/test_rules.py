"""The rollback rules on a live window, as plain functions: what a window measures, the Wilson bound, the allowed value,
one rule's violation, and every rule of a policy judged with each undecided rule named."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from prefect_crisis.blocks import MetricRule, RollbackPolicy
from prefect_crisis.core.errors import PolicyError
from prefect_crisis.core.metrics import MetricSpec
from prefect_crisis.tasks.response.rules import (
    LiveWindow,
    Violation,
    accuracy_of,
    allowed_value,
    baseline_value,
    check_rule,
    judge_rules,
    wilson_interval,
)

ACCURACY = MetricRule(metric="accuracy", tolerance=0.02)
LATENCY = MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True)


# -- what a window measures --------------------------------------------------------------------


def test_a_rate_is_its_count_over_its_trials_or_its_complements():
    assert LiveWindow({"accuracy": 430}, {"accuracy": 1_000}).rate("accuracy") == (0.43, 1_000)
    assert LiveWindow({"accuracy": 430}, {"accuracy": 1_000}).rate("error_rate") == (0.57, 1_000)
    assert LiveWindow({"error_rate": 25}, {"error_rate": 100}).rate("accuracy") == (0.75, 100)
    assert LiveWindow({}, {"error_rate": 100}).rate("accuracy") == (1.0, 100)  # no error counted: all right
    assert LiveWindow({}, {"accuracy": 100}).rate("accuracy") == (0.0, 100)


def test_a_rate_of_no_trials_is_nan_and_an_unreported_one_is_none():
    value, trials = LiveWindow({}, {"accuracy": 0}).rate("accuracy")
    assert math.isnan(value) and trials == 0
    value, trials = LiveWindow({}, {"accuracy": 0}).rate("error_rate")
    assert math.isnan(value) and trials == 0
    assert LiveWindow({}, {}).rate("accuracy") is None
    assert LiveWindow({}, {"accuracy": 10}).rate("latency_p95_ms") is None  # a latency has no complement
    assert LiveWindow({}, {"accuracy": 10}).rate("f1") is None  # not a known metric


def test_a_latency_is_the_percentile_its_metric_names():
    window = LiveWindow({}, {}, tuple(float(ms) for ms in range(1, 101)))
    assert window.value(LATENCY) == (pytest.approx(95.05), 100)
    assert window.value(MetricRule(metric="latency_p50_ms")) == (pytest.approx(50.5), 100)
    assert LiveWindow({}, {}).value(LATENCY) is None
    assert window.value(ACCURACY) is None  # a rate the window does not report


def test_a_latency_without_a_percentile_is_refused():
    rule = SimpleNamespace(metric="latency_odd_ms", kind="latency", spec=MetricSpec("latency", False))
    with pytest.raises(PolicyError, match="latency_odd_ms is a latency without a percentile"):
        LiveWindow({}, {}, (1.0, 2.0)).value(rule)


def test_accuracy_of_a_window_with_nothing_labelled_is_none():
    assert accuracy_of(LiveWindow({"accuracy": 9}, {"accuracy": 10})) == 0.9
    assert accuracy_of(LiveWindow({"error_rate": 1}, {"error_rate": 10})) == 0.9
    assert accuracy_of(LiveWindow({}, {"accuracy": 0})) is None
    assert accuracy_of(LiveWindow({}, {})) is None
    assert accuracy_of(None) is None


def test_a_baseline_comes_from_the_metric_or_its_complement():
    assert baseline_value("error_rate", {"accuracy": 0.9}) == 0.1  # rounded: not 0.09999999999999998
    assert baseline_value("accuracy", {"error_rate": 0.25}) == 0.75
    assert baseline_value("error_rate", {"error_rate": 0.2, "accuracy": 0.9}) == 0.2  # its own figure first
    assert baseline_value("latency_p95_ms", {"accuracy": 0.9}) is None
    assert baseline_value("f1", {"accuracy": 0.9}) is None


# -- one rule ----------------------------------------------------------------------------------


def test_the_wilson_interval_of_80_in_100():
    low, high = wilson_interval(80, 100)
    assert (low, high) == (pytest.approx(0.7112, abs=1e-4), pytest.approx(0.8666, abs=1e-4))
    low99, high99 = wilson_interval(80, 100, 0.99)
    assert low99 == pytest.approx(0.6798, abs=1e-4) and high99 == pytest.approx(0.8828, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_allowed_value_moves_the_baseline_the_worse_way():
    def rule(tolerance: float, relative: bool, higher_is_better: bool) -> SimpleNamespace:
        return SimpleNamespace(tolerance=tolerance, relative=relative, higher_is_better=higher_is_better)

    assert allowed_value(rule(0.5, True, False), 200.0) == 300.0
    assert allowed_value(rule(0.5, True, True), 200.0) == 100.0
    assert allowed_value(rule(0.5, True, False), -200.0) == -100.0  # a fraction of the baseline's magnitude
    assert allowed_value(rule(0.02, False, True), 0.9) == pytest.approx(0.88)
    assert allowed_value(rule(0.02, False, False), 0.1) == pytest.approx(0.12)


def test_a_rate_violation_carries_the_optimistic_bound():
    """Accuracy 800 of 1000 against 0.90 - 0.02: the upper bound (0.824) is still below 0.88."""
    violation = check_rule(ACCURACY, LiveWindow({"accuracy": 800}, {"accuracy": 1_000}), 0.90, 0.95)
    assert violation == Violation("accuracy", 0.8, pytest.approx(wilson_interval(800, 1_000)[1]), 0.90, 1_000)
    assert str(violation) == "accuracy 0.8 (bound 0.8236) vs baseline 0.9, n=1000"
    errors = check_rule(MetricRule(metric="error_rate", tolerance=0.02), LiveWindow({"accuracy": 800}, {"accuracy": 1_000}), 0.10, 0.95)
    assert errors.bound == pytest.approx(wilson_interval(200, 1_000)[0]) and errors.live == pytest.approx(0.2)


def test_a_rate_is_judged_at_the_policys_confidence():
    """860 of 1000: the 95 % upper bound (0.8801) reaches 0.88, the 80 % one (0.8735) does not."""
    window = LiveWindow({"accuracy": 860}, {"accuracy": 1_000})
    assert check_rule(ACCURACY, window, 0.90, 0.95) is None
    assert check_rule(ACCURACY, window, 0.90, 0.80) is not None


def test_a_latency_is_judged_on_its_value_and_at_the_allowed_value_is_fine():
    at_limit = LiveWindow({}, {}, (300.0,) * 50)
    assert check_rule(LATENCY, at_limit, 200.0, 0.95) is None
    violation = check_rule(LATENCY, LiveWindow({}, {}, (301.0,) * 50), 200.0, 0.95)
    assert (violation.live, violation.bound, violation.baseline, violation.samples) == (301.0, 301.0, 200.0, 50)


def test_a_rate_with_no_trials_is_no_violation():
    assert check_rule(ACCURACY, LiveWindow({}, {"accuracy": 0}), 0.9, 0.95) is None
    assert check_rule(ACCURACY, LiveWindow({}, {}), 0.9, 0.95) is None


# -- every rule of a policy --------------------------------------------------------------------


def test_each_rule_that_cannot_be_judged_says_why():
    policy = RollbackPolicy(rules=[ACCURACY, MetricRule(metric="error_rate"), LATENCY])
    results = judge_rules(LiveWindow({}, {}), {"accuracy": 0.9}, policy)
    assert results.undecided == ("accuracy: the live window does not report it", "error_rate: the live window does not report it")
    assert results.not_measured == ("latency_p95_ms (no latency samples)",)
    no_baseline = judge_rules(LiveWindow({"accuracy": 90}, {"accuracy": 100}), {"f1": 0.8, "auc": 0.7}, RollbackPolicy(rules=[ACCURACY]))
    assert no_baseline.undecided == ("accuracy: no baseline (the champion records auc, f1)",)
    nothing = judge_rules(LiveWindow({"accuracy": 90}, {"accuracy": 100}), {}, RollbackPolicy(rules=[ACCURACY]))
    assert nothing.undecided == ("accuracy: no baseline (the champion records none)",)
    thin = judge_rules(LiveWindow({"accuracy": 9}, {"accuracy": 10}), {"accuracy": 0.9}, RollbackPolicy(rules=[ACCURACY]))
    assert (thin.undecided, thin.violations, thin.not_measured) == (("accuracy: 10 samples < 30",), (), ())


def test_every_rule_is_judged_and_each_violation_kept():
    policy = RollbackPolicy(rules=[ACCURACY, LATENCY])
    live = LiveWindow({"accuracy": 500}, {"accuracy": 1_000}, (500.0,) * 50)
    results = judge_rules(live, {"accuracy": 0.9, "latency_p95_ms": 200.0}, policy)
    assert [v.metric for v in results.violations] == ["accuracy", "latency_p95_ms"]
    assert (results.undecided, results.not_measured) == ((), ())


def test_a_cap_above_a_rules_minimum_does_not_raise_it():
    """Kills `min(rule.min_samples, cap)` read as `max`: a cap of 100 leaves a rule asking 30 judging 30 samples."""
    policy = RollbackPolicy(rules=[ACCURACY])
    capped = judge_rules(LiveWindow({"accuracy": 10}, {"accuracy": 30}), {"accuracy": 0.9}, policy, min_samples_cap=100)
    assert capped.undecided == () and len(capped.violations) == 1
    small = judge_rules(LiveWindow({"accuracy": 1}, {"accuracy": 10}), {"accuracy": 0.9}, policy, min_samples_cap=10)
    assert small.undecided == () and len(small.violations) == 1
    assert judge_rules(LiveWindow({"accuracy": 1}, {"accuracy": 9}), {"accuracy": 0.9}, policy, min_samples_cap=10).undecided == (
        "accuracy: 9 samples < 10",
    )

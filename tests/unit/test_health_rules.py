"""The health rules' judgement on each window, the breach it builds, and how checks compose, as plain values.

`check_rule_on_windows` and `judge_long` / `judge_short` are called directly on hand-made window measures; rates are
compared with the Wilson bound the rollback decision uses (`wilson_interval`), worked out here for 18 of 100.
"""

from __future__ import annotations

import math

import pytest

from prefect_crisis.blocks.monitoring_policy import HealthRule, MonitoringPolicy
from prefect_crisis.core.vocabulary import Severity
from prefect_crisis.tasks.monitoring.health_rules import (
    Breach,
    Measure,
    RateRule,
    WindowMetrics,
    check_any,
    check_rule_on_windows,
    judge_long,
    judge_short,
    policy_checks,
    worst,
)
from prefect_crisis.tasks.response.rules import wilson_interval

ERRORS = HealthRule(name="errors", metric="error_rate", severity=Severity.CRITICAL, threshold=0.1, min_samples=30)
LATENCY = HealthRule(name="slow", metric="latency_p95_ms", severity=Severity.WARNING, threshold=2.0, relative_to="times", min_samples=20)
LOW_CONFIDENCE = HealthRule(name="unsure", metric="confidence_p10", severity=Severity.WARNING, threshold=0.6, direction="below", min_samples=20)


def window(minutes: float, **measures: Measure) -> WindowMetrics:
    return WindowMetrics(minutes, dict(measures))


# -- the windows' measures ---------------------------------------------------------------------


def test_a_measure_that_is_nan_or_absent_is_not_measured():
    metrics = window(60, error_rate=Measure(math.nan, 0), latency_p95_ms=Measure(120.0, 40))
    assert metrics.get("error_rate") is None
    assert metrics.get("fallback_share") is None
    assert metrics.get("latency_p95_ms") == Measure(120.0, 40)


def test_a_window_flattens_to_values_and_sample_counts():
    metrics = window(60, error_rate=Measure(0.12345678, 200, 25), latency_p95_ms=Measure(math.nan, 0))
    assert metrics.to_dict() == {"error_rate": 0.123457, "error_rate_samples": 200, "latency_p95_ms": None, "latency_p95_ms_samples": 0}


def test_the_rate_rule_is_the_error_rate_judged_lower_is_better_with_no_tolerance():
    rule = RateRule(min_samples=30)
    assert (rule.metric, rule.tolerance, rule.relative, rule.min_samples) == ("error_rate", 0.0, False, 30)
    assert (rule.kind, rule.higher_is_better) == ("rate", False)


# -- the long window ---------------------------------------------------------------------------


def test_a_rate_breaches_the_long_window_when_its_wilson_bound_passes_the_limit():
    """18 errors in 100: the 95 % bound is 0.117, past 0.1; at 99.9 % it is 0.087, not past it."""
    long = window(60, error_rate=Measure(0.18, 100, 18))
    judged = judge_long(ERRORS, long, {}, 0.95)
    assert (judged.breached, judged.value, judged.limit, judged.samples, judged.undecided) == (True, 0.18, 0.1, 100, "")
    assert judged.bound == pytest.approx(wilson_interval(18, 100, 0.95)[0]) and judged.bound == pytest.approx(0.1170, abs=1e-4)
    cautious = judge_long(ERRORS, long, {}, 0.999)
    assert (cautious.breached, cautious.value, cautious.limit, cautious.samples, cautious.bound) == (False, 0.18, 0.1, 100, None)


def test_a_rate_is_judged_on_its_count_of_bad_events():
    """The bound is counted from `count`, the rate's numerator: without one, no bad event is counted."""
    assert judge_long(ERRORS, window(60, error_rate=Measure(0.18, 100, 18)), {}, 0.95).breached is True
    assert judge_long(ERRORS, window(60, error_rate=Measure(0.18, 100, None)), {}, 0.95).breached is False


def test_a_rate_rule_relative_to_the_baseline_adds_to_it():
    plus = HealthRule(name="q", metric="error_rate", severity=Severity.CRITICAL, threshold=0.05, relative_to="plus", min_samples=30)
    judged = judge_long(plus, window(60, error_rate=Measure(0.18, 100, 18)), {"error_rate": 0.05}, 0.95)
    assert (judged.breached, judged.limit) == (True, pytest.approx(0.10))
    assert judge_long(plus, window(60, error_rate=Measure(0.18, 100, 18)), {"error_rate": 0.08}, 0.95).breached is False  # limit 0.13


def test_the_long_window_says_why_it_cannot_judge():
    assert judge_long(ERRORS, window(60), {}, 0.95).undecided == "error_rate: not measured"
    no_baseline = judge_long(LATENCY, window(60, latency_p95_ms=Measure(500.0, 100)), {}, 0.95)
    assert (no_baseline.breached, no_baseline.value, no_baseline.samples, no_baseline.undecided) == (
        False,
        500.0,
        100,
        "latency_p95_ms: no baseline",
    )
    thin = judge_long(ERRORS, window(60, error_rate=Measure(0.9, 29, 26)), {}, 0.95)
    assert (thin.breached, thin.value, thin.limit, thin.samples, thin.undecided) == (False, 0.9, 0.1, 29, "error_rate: 29 samples < 30")


def test_the_long_window_judges_from_exactly_min_samples():
    assert judge_long(ERRORS, window(60, error_rate=Measure(0.9, 30, 27)), {}, 0.95).breached is True
    assert judge_long(LATENCY, window(60, latency_p95_ms=Measure(500.0, 20)), {"latency_p95_ms": 200.0}, 0.95).breached is True
    assert judge_long(LATENCY, window(60, latency_p95_ms=Measure(500.0, 19)), {"latency_p95_ms": 200.0}, 0.95).breached is False


@pytest.mark.parametrize(("value", "breached"), [(401.0, True), (400.0, False), (399.0, False)])
def test_a_plain_value_breaches_the_long_window_strictly_above_its_limit(value, breached):
    judged = judge_long(LATENCY, window(60, latency_p95_ms=Measure(value, 50)), {"latency_p95_ms": 200.0}, 0.95)
    assert (judged.breached, judged.value, judged.limit, judged.samples, judged.bound) == (breached, value, 400.0, 50, None)


@pytest.mark.parametrize(("value", "breached"), [(0.59, True), (0.6, False), (0.61, False)])
def test_a_below_rule_breaches_the_long_window_strictly_under_its_limit(value, breached):
    judged = judge_long(LOW_CONFIDENCE, window(60, confidence_p10=Measure(value, 50)), {}, 0.95)
    assert (judged.breached, judged.value, judged.limit) == (breached, value, 0.6)


# -- the short window --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "breached"), [(401.0, True), (400.0, False)])
def test_the_short_window_confirms_a_plain_value_strictly_above_the_limit(value, breached):
    judged = judge_short(LATENCY, window(5, latency_p95_ms=Measure(value, 12)), 400.0, 10)
    assert (judged.breached, judged.value, judged.limit, judged.samples, judged.undecided) == (breached, value, 400.0, 12, "")


@pytest.mark.parametrize(("value", "breached"), [(0.59, True), (0.6, False), (0.7, False)])
def test_the_short_window_confirms_a_below_rule_strictly_under_the_limit(value, breached):
    assert judge_short(LOW_CONFIDENCE, window(5, confidence_p10=Measure(value, 12)), 0.6, 10).breached is breached


def test_the_short_window_needs_the_fewer_of_its_own_and_the_rules_minimum():
    """At least `min_samples` (10), or the rule's own minimum when that is smaller (a memory reading: 1)."""
    assert judge_short(LATENCY, window(5, latency_p95_ms=Measure(500.0, 10)), 400.0, 10).breached is True
    thin = judge_short(LATENCY, window(5, latency_p95_ms=Measure(500.0, 9)), 400.0, 10)
    assert (thin.breached, thin.value, thin.limit, thin.samples) == (False, 500.0, 400.0, 9)
    assert thin.undecided == "latency_p95_ms: 9 samples in the short window"
    memory = HealthRule(name="memory", metric="memory_percent", severity=Severity.EMERGENCY, threshold=95.0, min_samples=1)
    assert judge_short(memory, window(5, memory_percent=Measure(97.0, 1)), 95.0, 10).breached is True
    assert judge_short(LATENCY, window(5), 400.0, 10).undecided == "latency_p95_ms: not measured in the short window"


# -- one rule on both windows ------------------------------------------------------------------


def test_a_breach_carries_both_windows_measures_and_the_baseline():
    check = check_rule_on_windows(LATENCY)
    long, short = window(60, latency_p95_ms=Measure(500.0, 100)), window(5, latency_p95_ms=Measure(450.0, 12))
    (breach,) = check(long, short, {"latency_p95_ms": 200.0})
    assert breach == Breach("slow", "latency_p95_ms", Severity.WARNING, 500.0, 400.0, 100, None, 450.0, 12, 60, 5, 200.0)
    assert breach.payload() == {
        "rule": "slow",
        "metric": "latency_p95_ms",
        "severity": "warning",
        "value": 500.0,
        "threshold": 400.0,
        "samples": 100,
        "bound": None,
        "short_value": 450.0,
        "short_samples": 12,
        "window_minutes": {"long": 60, "short": 5},
        "baseline": 200.0,
    }
    assert str(breach) == "warning slow: latency_p95_ms 500 > 400 (n=100; short window 450, n=12)"


def test_a_rate_breach_carries_its_wilson_bound():
    (breach,) = check_rule_on_windows(ERRORS)(window(60, error_rate=Measure(0.18, 100, 18)), window(5, error_rate=Measure(0.3, 10, 3)), {})
    assert breach.bound == pytest.approx(0.1170, abs=1e-4) and breach.baseline is None


def test_a_check_judges_at_its_confidence_and_its_short_windows_minimum():
    long, short = window(60, error_rate=Measure(0.18, 100, 18)), window(5, error_rate=Measure(0.3, 10, 3))
    assert len(check_rule_on_windows(ERRORS)(long, short, {})) == 1
    assert check_rule_on_windows(ERRORS, confidence=0.999)(long, short, {}) == ()
    assert check_rule_on_windows(ERRORS, short_min_samples=11)(long, short, {}) == ()
    assert len(check_rule_on_windows(ERRORS, short_min_samples=10)(long, short, {})) == 1


def test_the_short_window_is_judged_against_the_long_windows_limit():
    """The limit comes from the long window's judgement (the baseline times 2): 450 in the short window is past 400."""
    long, short = window(60, latency_p95_ms=Measure(500.0, 100)), window(5, latency_p95_ms=Measure(390.0, 12))
    assert check_rule_on_windows(LATENCY)(long, short, {"latency_p95_ms": 200.0}) == ()


# -- composition -------------------------------------------------------------------------------


def test_checks_compose_flat_and_keep_their_order():
    a, b, c = (check_rule_on_windows(rule) for rule in (ERRORS, LATENCY, LOW_CONFIDENCE))
    combined = (a | b) | c
    assert combined.checks == (a, b, c)
    assert check_any(a, check_any(b, c)).checks == (a, b, c)
    long = window(60, error_rate=Measure(0.18, 100, 18), latency_p95_ms=Measure(500.0, 100), confidence_p10=Measure(0.4, 100))
    short = window(5, error_rate=Measure(0.3, 10, 3), latency_p95_ms=Measure(450.0, 12), confidence_p10=Measure(0.5, 12))
    assert [breach.rule for breach in combined(long, short, {"latency_p95_ms": 200.0})] == ["errors", "slow", "unsure"]


def test_a_policys_checks_use_its_confidence_and_short_minimum():
    policy = MonitoringPolicy(rules=[ERRORS, LATENCY], confidence=0.99, short_min_samples=7)
    checks = policy_checks(policy)
    assert [(check.rule.name, check.confidence, check.short_min_samples) for check in checks.checks] == [("errors", 0.99, 7), ("slow", 0.99, 7)]


def test_the_worst_breach_is_the_highest_severity():
    def breach(severity: Severity) -> Breach:
        return Breach("r", "error_rate", severity, 0.2, 0.1, 100, None, 0.2, 10, 60, 5)

    assert worst(()) is None
    assert worst((breach(Severity.WARNING), breach(Severity.EMERGENCY), breach(Severity.CRITICAL))) is Severity.EMERGENCY
    assert worst((breach(Severity.CRITICAL), breach(Severity.WARNING))) is Severity.CRITICAL


def test_a_metric_neither_window_measures_is_judged_not_breached():
    from prefect_crisis.tasks.monitoring.health_rules import Judgement

    assert judge_long(ERRORS, window(60), {}, 0.95) == Judgement(False, undecided="error_rate: not measured")
    assert judge_short(ERRORS, window(5), 0.1, 10) == Judgement(False, undecided="error_rate: not measured in the short window")


def test_a_rate_without_a_count_counts_no_bad_event():
    """Against a limit of 0, one error in 30 is a breach and none is not: a missing count is none, not one."""
    zero = HealthRule(name="none-allowed", metric="failed_row_share", severity=Severity.CRITICAL, threshold=0.0, min_samples=30)
    assert judge_long(zero, window(60, failed_row_share=Measure(1 / 30, 30, 1)), {}, 0.95).breached is True
    assert judge_long(zero, window(60, failed_row_share=Measure(0.0, 30, None)), {}, 0.95).breached is False

"""The rollback decision rules, with an injected clock."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import prefect_crisis.blocks.rollback_policy
from prefect_crisis.blocks import MetricRule, RollbackPolicy
from prefect_crisis.core.errors import PolicyError
from prefect_crisis.core.vocabulary import DecisionKind, Severity
from prefect_crisis.tasks.response.candidates import Candidate
from prefect_crisis.tasks.response.incident import live_window
from prefect_crisis.tasks.response.rollback import decide_rollback
from prefect_crisis.tasks.response.rules import LiveWindow, check_rule, wilson_interval

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02, min_samples=200)], stability_window_minutes=60, cooldown_minutes=30)


def hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def window(correct: int, total: int, latencies=()) -> LiveWindow:
    return LiveWindow({"accuracy": correct}, {"accuracy": total}, tuple(latencies))


CHAMPION = Candidate("3", hours_ago(0.5), None, {"accuracy": 0.90})
HISTORY = [
    Candidate("1", hours_ago(48), hours_ago(24), {"accuracy": 0.93}),  # stable long ago, best ever
    Candidate("2", hours_ago(24), hours_ago(0.5), {"accuracy": 0.89}),  # stable, most recent
    CHAMPION,
]


def test_the_seeds_direction_bug_does_not_come_back():
    # The seed rolled back when (new - old) / old > -0.05, i.e. when accuracy did NOT drop.
    improved = decide_rollback(window(950, 1_000), CHAMPION, HISTORY, POLICY, now=NOW)
    assert improved.kind is DecisionKind.HOLD
    dropped = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, POLICY, now=NOW)
    assert dropped.kind is DecisionKind.ROLLBACK


def test_one_noisy_window_is_not_degradation_the_wilson_bound_must_agree():
    # 86.5% on 200 samples is below 90% - 2%, but its upper bound (about 0.90) is not.
    assert decide_rollback(window(173, 200), CHAMPION, HISTORY, POLICY, now=NOW).kind is DecisionKind.HOLD
    # The same rate on 5,000 samples is conclusive.
    assert decide_rollback(window(4_325, 5_000), CHAMPION, HISTORY, POLICY, now=NOW).kind is DecisionKind.ROLLBACK


def test_too_few_samples_is_inconclusive_not_hold():
    decision = decide_rollback(window(10, 100), CHAMPION, HISTORY, POLICY, now=NOW)
    assert decision.kind is DecisionKind.INCONCLUSIVE and "100 samples < 200" in decision.reason
    default = decide_rollback(window(5, 20), CHAMPION, HISTORY, RollbackPolicy(stability_window_minutes=60), now=NOW)
    assert default.kind is DecisionKind.INCONCLUSIVE and "20 samples < 30" in default.reason  # the default matches the monitor


def test_target_is_the_most_recent_stable_version_never_the_current_one():
    decision = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, POLICY, now=NOW)
    assert decision.target_version == "2"


def test_best_metric_preference_picks_the_best_stable_version():
    policy = POLICY.model_copy(update={"prefer": "best-metric"})
    assert decide_rollback(window(700, 1_000), CHAMPION, HISTORY, policy, now=NOW).target_version == "1"


def test_stability_window_excludes_versions_that_served_too_briefly():
    history = [Candidate("2", hours_ago(1.0), hours_ago(0.5), {"accuracy": 0.89}), CHAMPION]  # served 30 min
    decision = decide_rollback(window(700, 1_000), CHAMPION, history, POLICY, now=NOW)
    # nowhere to go and no fallback model: serving unchanged, a person is asked (ml.recovery.failed)
    assert decision.kind is DecisionKind.HOLD and decision.escalate and "no version to return to and no fallback" in decision.reason
    longer = POLICY.model_copy(update={"stability_window_minutes": 20})
    assert decide_rollback(window(700, 1_000), CHAMPION, history, longer, now=NOW).target_version == "2"


def test_versions_with_incidents_or_retired_are_not_targets():
    history = [
        Candidate("1", hours_ago(48), hours_ago(24), {"accuracy": 0.93}, retired=True),
        Candidate("2", hours_ago(24), hours_ago(0.5), {"accuracy": 0.89}, incident=True),
        CHAMPION,
    ]
    decision = decide_rollback(window(700, 1_000), CHAMPION, history, POLICY, now=NOW)
    assert decision.kind is DecisionKind.HOLD and decision.escalate and decision.target_version is None


def test_cool_down_holds_a_second_rollback_unless_emergency():
    recent = NOW - timedelta(minutes=10)
    held = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, POLICY, now=NOW, last_rollback_at=recent)
    assert held.kind is DecisionKind.HOLD and "cool-down" in held.reason and held.violations
    forced = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, POLICY, now=NOW, last_rollback_at=recent, severity=Severity.EMERGENCY)
    assert forced.kind is DecisionKind.ROLLBACK
    later = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, POLICY, now=NOW, last_rollback_at=NOW - timedelta(minutes=31))
    assert later.kind is DecisionKind.ROLLBACK


def test_latency_compares_the_95th_percentile_with_a_relative_tolerance():
    rule = MetricRule(metric="latency_p95_ms", kind="latency", higher_is_better=False, tolerance=0.5, relative=True, min_samples=50)
    fast = window(0, 0, latencies=np.full(100, 40.0))
    slow = window(0, 0, latencies=np.r_[np.full(90, 40.0), np.full(10, 400.0)])
    assert check_rule(rule, fast, baseline=50.0, confidence=0.95) is None
    violation = check_rule(rule, slow, baseline=50.0, confidence=0.95)
    assert violation is not None and violation.live == pytest.approx(400.0)


def test_lower_is_better_rates_use_the_lower_wilson_bound():
    rule = MetricRule(metric="error_rate", higher_is_better=False, tolerance=0.02)
    live = LiveWindow({"error_rate": 150}, {"error_rate": 1_000})
    violation = check_rule(rule, live, baseline=0.10, confidence=0.95)
    assert violation is not None and violation.bound == pytest.approx(wilson_interval(150, 1_000)[0])


# Registered champion metrics are accuracy, f1 and log loss; no error rate, no latency.
REGISTERED = {"accuracy": 0.90, "f1": 0.89, "log_loss": 0.31}


def test_an_error_rate_rule_is_judged_against_the_champions_accuracy():
    # Before: the rule was skipped (no error_rate in the baseline) and a 57% error rate decided HOLD.
    policy = RollbackPolicy(rules=[MetricRule(metric="error_rate", tolerance=0.02)])
    champion = Candidate("3", hours_ago(0.5), None, REGISTERED)
    labels = np.r_[np.ones(430, dtype=int), np.zeros(570, dtype=int)]
    live = live_window(np.ones(1_000, dtype=int), labels)  # 570 errors in 1,000
    decision = decide_rollback(live, champion, HISTORY, policy, now=NOW)
    assert decision.kind is DecisionKind.ROLLBACK, decision.reason
    (violation,) = decision.violations
    assert (violation.metric, violation.live, violation.baseline) == ("error_rate", pytest.approx(0.57), pytest.approx(0.10))


def test_accuracy_is_derived_from_a_window_that_reports_only_errors():
    errors_only = LiveWindow({"error_rate": 570}, {"error_rate": 1_000})
    decision = decide_rollback(errors_only, CHAMPION, HISTORY, POLICY, now=NOW)
    assert decision.kind is DecisionKind.ROLLBACK and decision.violations[0].live == pytest.approx(0.43)


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"metric": "acuracy"}, "unknown metric 'acuracy'"),
        ({"metric": "error_rate", "higher_is_better": True}, "for error_rate lower is better"),
        ({"metric": "accuracy", "kind": "latency"}, "accuracy is a rate, not a latency"),
    ],
)
def test_a_rule_that_could_never_fire_is_refused_when_the_policy_is_built(rule, message):
    with pytest.raises(PolicyError, match=message):
        MetricRule(**rule)
    with pytest.raises(PolicyError, match=message):
        RollbackPolicy(rules=[rule])  # as a saved block's document is loaded


def test_a_rule_without_a_baseline_is_inconclusive_and_named_never_a_silent_hold():
    champion = Candidate("3", hours_ago(0.5), None, {"f1": 0.89})
    decision = decide_rollback(window(430, 1_000), champion, HISTORY, POLICY, now=NOW)
    assert decision.kind is DecisionKind.INCONCLUSIVE
    assert decision.undecided == ("accuracy: no baseline (the champion records f1)",)


def test_a_rate_the_live_window_does_not_report_is_inconclusive():
    decision = decide_rollback(LiveWindow({}, {}), CHAMPION, HISTORY, POLICY, now=NOW)
    assert decision.kind is DecisionKind.INCONCLUSIVE and "accuracy: the live window does not report it" in decision.reason


def test_latency_not_measured_is_reported_and_does_not_block_a_clear_hold():
    policy = RollbackPolicy()  # accuracy, and latency_p95_ms with min_samples 50
    decision = decide_rollback(window(900, 1_000), CHAMPION, HISTORY, policy, now=NOW)
    assert decision.kind is DecisionKind.HOLD
    assert decision.not_measured == ("latency_p95_ms (no latency samples)",) and "not measured: latency_p95_ms" in decision.reason
    # Measured, but too few samples, still cannot decide.
    few = window(900, 1_000, latencies=np.full(10, 40.0))
    held_back = decide_rollback(few, CHAMPION, HISTORY, policy, now=NOW, baseline={**CHAMPION.metrics, "latency_p95_ms": 50.0})
    assert held_back.kind is DecisionKind.INCONCLUSIVE and "latency_p95_ms: 10 samples < 50" in held_back.reason


def test_a_latency_rule_uses_the_percentile_its_name_says():
    latencies = np.r_[np.full(97, 40.0), np.full(3, 400.0)]
    p95 = MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True, min_samples=50)
    p99 = MetricRule(metric="latency_p99_ms", tolerance=0.5, relative=True, min_samples=50)
    live = window(0, 0, latencies=latencies)
    assert check_rule(p95, live, baseline=50.0, confidence=0.95) is None
    assert check_rule(p99, live, baseline=50.0, confidence=0.95).live > 300


def test_best_metric_preference_works_for_an_error_rate_rule():
    policy = RollbackPolicy(rules=[MetricRule(metric="error_rate")], prefer="best-metric", stability_window_minutes=60)
    decision = decide_rollback(window(700, 1_000), CHAMPION, HISTORY, policy, now=NOW)
    assert decision.target_version == "1"  # lowest error rate = best accuracy, 0.93


def test_rollback_policy_docstring_examples_run():
    result = doctest.testmod(prefect_crisis.blocks.rollback_policy, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_promoted_champion_is_judged_against_the_better_of_its_figures_and_those_it_replaced():
    """A retrain on flipped labels reports 75% on its own holdout; it was promoted over v2 (89%). Live at 80% it is
    degraded against v2's figure, not healthy against its own."""
    from dataclasses import replace

    poisoned = Candidate("3", hours_ago(0.5), None, {"accuracy": 0.75})
    live = window(4_000, 5_000)
    assert decide_rollback(live, poisoned, [*HISTORY[:2], poisoned], POLICY, now=NOW).kind is DecisionKind.HOLD
    guarded = replace(poisoned, promoted_over="2")
    decision = decide_rollback(live, guarded, [*HISTORY[:2], guarded], POLICY, now=NOW)
    assert decision.kind is DecisionKind.ROLLBACK and decision.target_version == "2"
    better = replace(guarded, metrics={"accuracy": 0.95})  # its own figure is the stricter one: kept
    assert decide_rollback(window(4_600, 5_000), better, [*HISTORY[:2], better], POLICY, now=NOW).kind is DecisionKind.ROLLBACK

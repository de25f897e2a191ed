"""Tests that guard the decisions against the mutants that survived the unit tests.

Each test names the mutant it kills: a comparison flipped, a boundary moved by one, a relative
tolerance read as absolute, the wrong alias moved. They call the plain functions through the
packages' re-exports, with fixed clocks and fake clients, and never wait on the wall clock.
`benchmarks/mutation.py` runs mutmut over the decision modules and reports the kill rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import HealthRule, MetricRule, RollbackPolicy, TrainingPolicy
from prefect_crisis.core.vocabulary import AliasAction, BreakerState, DecisionKind, Severity
from prefect_crisis.tasks.monitoring import Measure, WindowMetrics, check_rule_on_windows
from prefect_crisis.tasks.response import (
    Candidate,
    LiveWindow,
    cancel_training_runs,
    check_rule,
    decide_rollback,
    judge_rules,
    of_model,
    pause_training,
    serve_fallback,
    verify_on_window,
)
from prefect_crisis.tasks.serving import CircuitBreaker
from prefect_crisis.tasks.training import decide_promotion

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HEALTHY = LiveWindow({"accuracy": 900}, {"accuracy": 1_000})  # at the champion's registered 0.90
DEGRADED = LiveWindow({"accuracy": 500}, {"accuracy": 1_000})  # far below it


def champion(**metrics: float) -> Candidate:
    return Candidate("3", NOW - timedelta(days=1), None, {"accuracy": 0.90, **metrics})


def served(version: str, minutes: float) -> Candidate:
    """A version that served `minutes` and stopped an hour ago, without an incident."""
    until = NOW - timedelta(hours=1)
    return Candidate(version, until - timedelta(minutes=minutes), until, {"accuracy": 0.90})


# -- rollback rules ----------------------------------------------------------------------------


def test_the_default_latency_rule_is_relative_so_a_healthy_champion_holds():
    """Kills: `slack = tolerance * |baseline| if relative else tolerance` read as always absolute. The default rule
    allows p95 up to 1.5 x the baseline; read as +0.5 ms, 250 ms against 200 ms would roll back a healthy champion."""
    policy = RollbackPolicy()
    live = LiveWindow(HEALTHY.successes, HEALTHY.samples, (250.0,) * 100)
    decision = decide_rollback(live, champion(latency_p95_ms=200.0), [champion(latency_p95_ms=200.0)], policy, now=NOW)
    assert (decision.kind, decision.violations, decision.degraded) == (DecisionKind.HOLD, (), False), decision.reason
    slow = LiveWindow(HEALTHY.successes, HEALTHY.samples, (350.0,) * 100)
    assert [v.metric for v in judge_rules(slow, {"accuracy": 0.9, "latency_p95_ms": 200.0}, policy).violations] == ["latency_p95_ms"]


def test_a_relative_tolerance_on_a_rate_scales_with_the_baseline():
    """Kills the same mutant on a rate, and `baseline - slack` / `baseline + slack` swapped: 10 % of 0.90 allows 0.81."""
    rule = MetricRule(metric="accuracy", tolerance=0.10, relative=True)
    assert check_rule(rule, LiveWindow({"accuracy": 8_500}, {"accuracy": 10_000}), 0.90, 0.95) is None
    assert check_rule(rule, LiveWindow({"accuracy": 7_500}, {"accuracy": 10_000}), 0.90, 0.95) is not None
    lower_is_better = MetricRule(metric="error_rate", tolerance=0.5, relative=True)  # 0.10 may grow to 0.15
    assert check_rule(lower_is_better, LiveWindow({"error_rate": 1_300}, {"error_rate": 10_000}), 0.10, 0.95) is None
    assert check_rule(lower_is_better, LiveWindow({"error_rate": 1_800}, {"error_rate": 10_000}), 0.10, 0.95) is not None


def test_a_rule_judges_from_exactly_min_samples():
    """Kills `samples < needed` moved to `<=`, and the emergency cap read the other way (`max` for `min`)."""
    policy = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02, min_samples=30)])
    assert judge_rules(LiveWindow({"accuracy": 30}, {"accuracy": 30}), {"accuracy": 0.9}, policy).undecided == ()
    assert len(judge_rules(LiveWindow({"accuracy": 29}, {"accuracy": 29}), {"accuracy": 0.9}, policy).undecided) == 1
    capped = judge_rules(LiveWindow({"accuracy": 10}, {"accuracy": 10}), {"accuracy": 0.9}, policy, min_samples_cap=10)
    assert capped.undecided == ()


def test_a_version_that_served_exactly_the_stability_window_is_stable():
    """Kills `served_for(c, now) >= window` moved to `>`: with nothing labelled to measure on, only a stable version is a
    target, so one that served exactly 60 minutes is rolled back to and one a second short of it is not."""
    policy = RollbackPolicy()
    exactly = served("2", policy.stability_window_minutes)
    decision = decide_rollback(DEGRADED, champion(), [exactly, champion()], policy, now=NOW)
    assert (decision.kind, decision.target_version) == (DecisionKind.ROLLBACK, "2"), decision.reason
    short = served("2", policy.stability_window_minutes - 1 / 60)
    assert decide_rollback(DEGRADED, champion(), [short, champion()], policy, now=NOW).kind is DecisionKind.HOLD


def test_the_cool_down_ends_at_exactly_cooldown_minutes():
    """Kills `now - last_rollback_at < cooldown` moved to `<=` (and the cool-down applied to an emergency)."""
    policy = RollbackPolicy()
    candidates = [served("2", 120), champion()]
    at_end = decide_rollback(DEGRADED, champion(), candidates, policy, now=NOW, last_rollback_at=NOW - timedelta(minutes=policy.cooldown_minutes))
    assert at_end.kind is DecisionKind.ROLLBACK, at_end.reason
    within = decide_rollback(DEGRADED, champion(), candidates, policy, now=NOW, last_rollback_at=NOW - timedelta(minutes=policy.cooldown_minutes - 1))
    assert (within.kind, within.degraded) == (DecisionKind.HOLD, True)
    emergency = decide_rollback(DEGRADED, champion(), candidates, policy, now=NOW, last_rollback_at=NOW, severity=Severity.EMERGENCY)
    assert emergency.kind is DecisionKind.ROLLBACK


# -- verification ------------------------------------------------------------------------------


def test_a_verification_on_a_window_too_thin_to_judge_does_not_pass():
    """Kills dropping `judged.undecided` from what fails a verification: 29 perfect rows cannot judge a rule asking 30."""
    good = Candidate("2", None, None, {"accuracy": 0.9})
    policy = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02, min_samples=30)])
    assert verify_on_window("2", LiveWindow({"accuracy": 29}, {"accuracy": 29}), [good], policy).passed is False
    assert verify_on_window("2", LiveWindow({"accuracy": 30}, {"accuracy": 30}), [good], policy).passed is True
    assert verify_on_window("2", LiveWindow({"accuracy": 10}, {"accuracy": 10}), [good], policy, min_samples_cap=10).passed is True
    assert verify_on_window("2", LiveWindow({"accuracy": 150}, {"accuracy": 300}), [good], policy).passed is False


# -- quarantine --------------------------------------------------------------------------------


def test_a_batch_with_exactly_one_bad_row_writes_its_quarantine(tmp_path):
    """Kills `if len(result.quarantined)` read as `> 1`: one rejected row is still a quarantine file."""
    from prefect_crisis.tasks.validation import ValidationResult, persist_parts

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0, 1, 0]})
    one_bad = ValidationResult(report=None, kept=frame.iloc[:2], quarantined=frame.iloc[2:].assign(reasons="out_of_range:x"))
    persisted = persist_parts(one_bad, str(tmp_path), "churn", "b1")
    assert persisted.quarantine_uri is not None
    assert len(pd.read_parquet(persisted.quarantine_uri)) == 1
    clean = ValidationResult(report=None, kept=frame, quarantined=frame.iloc[:0])
    assert persist_parts(clean, str(tmp_path), "churn", "b1").quarantine_uri is None


# -- promotion ---------------------------------------------------------------------------------


def test_a_tie_does_not_promote_under_the_default_policy():
    """Kills `gain <= 0` moved to `gain < 0` when the margin is 0 (the default)."""
    tie = decide_promotion({"accuracy": 0.90}, {"accuracy": 0.90}, TrainingPolicy(), holdout_rows=1_000)
    assert tie.promote is False
    assert decide_promotion({"accuracy": 0.901}, {"accuracy": 0.90}, TrainingPolicy(), holdout_rows=1_000).promote is True


def test_a_gain_of_exactly_the_margin_promotes():
    """Kills `gain < promotion_margin` moved to `<=` (0.75 - 0.5 is exactly 0.25 in binary)."""
    policy = TrainingPolicy(promotion_margin=0.25)
    assert decide_promotion({"accuracy": 0.75}, {"accuracy": 0.5}, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"accuracy": 0.74}, {"accuracy": 0.5}, policy, holdout_rows=1_000).promote is False


def test_min_primary_metric_refuses_a_first_model_below_it():
    """Kills the comparison with `min_primary_metric` flipped, or moved off its boundary."""
    policy = TrainingPolicy(min_primary_metric=0.8)
    assert decide_promotion({"accuracy": 0.75}, None, policy, holdout_rows=1_000).promote is False
    assert decide_promotion({"accuracy": 0.85}, None, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"accuracy": 0.8}, None, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"accuracy": 0.75}, None, TrainingPolicy(), holdout_rows=1_000).promote is True


def test_min_primary_metric_follows_a_lower_is_better_metric():
    """Kills the metric's direction ignored: a log loss of 0.3 meets a minimum of 0.5, one of 0.7 does not."""
    policy = TrainingPolicy(primary_metric="log_loss", min_primary_metric=0.5)
    assert decide_promotion({"log_loss": 0.3}, None, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"log_loss": 0.7}, None, policy, holdout_rows=1_000).promote is False


# -- emergency stop ----------------------------------------------------------------------------


class FakeRegistry:
    """The registry as `serve_fallback` sees it: two aliases, and the moves it asked for."""

    champion_alias, fallback_alias = "champion", "fallback"

    def __init__(self, champion: str | None, fallback: str | None):
        self._champion, self._fallback = champion, fallback
        self.moves: list[tuple] = []

    def version_by_alias(self, alias: str):
        version = {self.champion_alias: self._champion, self.fallback_alias: self._fallback}[alias]
        return SimpleNamespace(version=version) if version else None

    def champion(self):
        return self.version_by_alias(self.champion_alias)

    def move_alias(self, alias, version, reason, incident, *, action, current=None):
        self.moves.append((alias, version, action))


def test_the_emergency_stop_moves_the_champion_alias_to_the_fallback():
    """Kills the fallback step moving @fallback (or any alias but @champion), or moving it to the champion's version."""
    registry = FakeRegistry(champion="3", fallback="4")
    result = serve_fallback(registry, "emergency", "incident-1")
    assert registry.moves == [("champion", "4", AliasAction.FALLBACK)]
    assert result.changed == ["4"]
    already = FakeRegistry(champion="4", fallback="4")
    serve_fallback(already, "emergency", "incident-1")
    assert already.moves == []


def test_the_emergency_stop_matches_only_runs_naming_the_model():
    """Kills a run or deployment with no model name taken as the model's (a stop would cancel every model's training)."""
    assert of_model({"model_name": "churn"}, "churn") is True
    assert of_model({}, "churn") is False
    assert of_model(None, "churn") is False
    assert of_model({"model_name": "fraud"}, "churn") is False

    runs = [SimpleNamespace(id="r-churn", parameters={"model_name": "churn"}, state=None), SimpleNamespace(id="r-none", parameters={}, state=None)]
    cancelled: list[str] = []
    client = SimpleNamespace(read_flow_runs=lambda **_: runs, set_flow_run_state=lambda run_id, state, force: cancelled.append(run_id))
    assert cancel_training_runs(client, "churn").changed == ["r-churn"]
    assert cancelled == ["r-churn"]

    deployments = [
        SimpleNamespace(id="d-churn", parameters={"model_name": "churn"}, paused=False),
        SimpleNamespace(id="d-none", parameters={}, paused=False),
    ]
    paused: list[str] = []
    client = SimpleNamespace(read_deployments=lambda **_: deployments, pause_deployment=paused.append)
    assert pause_training(client, "churn").changed == ["d-churn"]


# -- health rules ------------------------------------------------------------------------------


def confidence_windows(long_value: float, short_value: float) -> tuple[WindowMetrics, WindowMetrics]:
    return WindowMetrics(60, {"confidence_p10": Measure(long_value, 200)}), WindowMetrics(5, {"confidence_p10": Measure(short_value, 20)})


def test_a_below_rule_breaches_under_its_limit_on_both_windows():
    """Kills `direction == "above"` read the other way in the long or the short window's judgement."""
    rule = HealthRule(name="low-confidence", metric="confidence_p10", severity="warning", threshold=0.6, direction="below", min_samples=10)
    check = check_rule_on_windows(rule)
    assert [b.rule for b in check(*confidence_windows(0.4, 0.45), {})] == ["low-confidence"]
    assert check(*confidence_windows(0.8, 0.9), {}) == ()
    assert check(*confidence_windows(0.4, 0.9), {}) == ()  # the short window no longer confirms it
    assert check(*confidence_windows(0.9, 0.4), {}) == ()
    assert check(*confidence_windows(0.6, 0.6), {}) == ()  # at the limit is not past it


def test_an_above_rule_breaches_strictly_past_its_limit():
    """Kills `>` moved to `>=` for a plain (non-rate) value on either window."""
    rule = HealthRule(name="slow", metric="latency_p95_ms", severity="warning", threshold=2.0, relative_to="times", min_samples=20)
    check = check_rule_on_windows(rule)
    long, short = WindowMetrics(60, {"latency_p95_ms": Measure(500.0, 100)}), WindowMetrics(5, {"latency_p95_ms": Measure(450.0, 20)})
    assert [b.threshold for b in check(long, short, {"latency_p95_ms": 200.0})] == [400.0]
    at_limit = WindowMetrics(5, {"latency_p95_ms": Measure(400.0, 20)})
    assert check(long, at_limit, {"latency_p95_ms": 200.0}) == ()


def test_the_latency_baseline_comes_from_exactly_min_history_sweeps():
    """Kills `len(past) >= MIN_HISTORY_SWEEPS` moved to `>`: the third sweep gives the median, two do not."""
    from prefect_crisis.tasks.monitoring import MIN_HISTORY_SWEEPS, baseline_of  # the sweep module reads the inference log

    assert MIN_HISTORY_SWEEPS == 3
    enough = pd.DataFrame({"latency_p95_ms": [100.0, 200.0, 900.0][:MIN_HISTORY_SWEEPS]})
    assert baseline_of({"accuracy": 0.9}, enough) == {"error_rate": 0.1, "latency_p95_ms": 200.0}
    assert "latency_p95_ms" not in baseline_of({"accuracy": 0.9}, enough.iloc[: MIN_HISTORY_SWEEPS - 1])
    registered = baseline_of({"accuracy": 0.9, "latency_p95_ms": 50.0}, enough)
    assert registered["latency_p95_ms"] == 50.0  # a registered figure is not replaced by the history


# -- circuit breaker ---------------------------------------------------------------------------


def test_the_breaker_opens_at_exactly_the_threshold_and_counts_the_window_inclusively():
    """Kills `len >= threshold` moved to `>`, and `now - first > window` moved to `>=` (a failure exactly
    window_seconds old still counts)."""
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, window_seconds=10, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure("a")
    now[0] = 5.0
    breaker.record_failure("b")
    assert breaker.state is BreakerState.CLOSED
    now[0] = 10.0
    breaker.record_failure("c")  # the first failure is exactly 10 s old: three within the window
    assert breaker.state is BreakerState.OPEN


def test_the_breaker_forgets_failures_older_than_the_window():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure("a")
    now[0] = 10.5
    breaker.record_failure("b")
    assert breaker.state is BreakerState.CLOSED


def test_the_breaker_measures_the_window_from_the_oldest_failure():
    """Kills `now - first > window` read as `now + first`: failures at 3 s and 8 s are 5 s apart, within 10 s."""
    now = [3.0]
    breaker = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure("a")
    now[0] = 8.0
    breaker.record_failure("b")
    assert breaker.state is BreakerState.OPEN


def test_listeners_hear_every_transition_with_its_reason():
    """Kills a listener added as None, and a transition reported without its reason."""
    now = [0.0]
    heard: list = []
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=lambda: now[0])
    breaker.add_listener(heard.append)
    breaker.record_failure("timeout")
    now[0] = 5.0
    breaker.allow()
    breaker.record_failure("refused")
    now[0] = 10.0
    breaker.allow()
    breaker.record_success()
    assert [(c.old, c.new, c.reason, c.at) for c in heard] == [
        (BreakerState.CLOSED, BreakerState.OPEN, "1 failures within 10 s (last: timeout)", 0.0),
        (BreakerState.OPEN, BreakerState.HALF_OPEN, "cool-down of 5 s over: one trial call", 5.0),
        (BreakerState.HALF_OPEN, BreakerState.OPEN, "the trial call failed: refused", 5.0),
        (BreakerState.OPEN, BreakerState.HALF_OPEN, "cool-down of 5 s over: one trial call", 10.0),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED, "the trial call answered", 10.0),
    ]


def test_the_breaker_half_opens_at_exactly_the_cool_down_with_one_trial():
    """Kills `elapsed >= cooldown` moved to `>`, and the half-open state letting a second call through."""
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure("a")
    now[0] = 4.999
    assert breaker.allow() is False
    now[0] = 5.0
    assert (breaker.allow(), breaker.state) == (True, BreakerState.HALF_OPEN)
    assert breaker.allow() is False  # one trial at a time
    breaker.record_failure("trial failed")
    assert (breaker.state, breaker.opened_count) == (BreakerState.OPEN, 2)
    now[0] = 10.0
    assert breaker.allow() is True
    breaker.record_success()
    assert (breaker.state, breaker.allow()) == (BreakerState.CLOSED, True)


def test_the_breaker_refuses_settings_it_cannot_honour():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(window_seconds=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_seconds=-1)
    CircuitBreaker(failure_threshold=1, window_seconds=0.5, cooldown_seconds=0)  # the boundaries themselves are allowed


# -- fences ------------------------------------------------------------------------------------


def test_a_value_on_a_fence_is_not_outside_it():
    """Kills `values < low` / `values > high` moved to `<=` / `>=`, and NaN counted as an outlier."""
    from prefect_crisis.core.fences import Fences

    mask = Fences(low=0.0, high=1.0).outside(np.array([0.0, 1.0, -1e-9, 1.0 + 1e-9, np.nan, np.inf]))
    assert mask.tolist() == [False, False, True, True, False, False]
    assert Fences(low=None, high=1.0).outside(np.array([-1e9, 2.0])).tolist() == [False, True]


def test_a_reference_band_needs_min_band_values():
    """Kills the boundary of MIN_BAND_VALUES moved by one (`<` to `<=`), in both fence builders."""
    from prefect_crisis.core.fences import MIN_BAND_VALUES, batch_fences, reference_fences

    values = np.random.default_rng(3).normal(size=MIN_BAND_VALUES)
    assert reference_fences(values, rate=0.001) is not None
    assert reference_fences(values[:-1], rate=0.001) is None
    assert batch_fences(values, rate=0.001, min_rows=MIN_BAND_VALUES) is not None
    assert batch_fences(values[:-1], rate=0.001, min_rows=MIN_BAND_VALUES) is None

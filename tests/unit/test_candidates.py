"""The registered versions as a response sees them: serving intervals read from the champion alias's audit, promotion
baselines, which versions a rollback may go to, and in which order. Plain values with fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from prefect_crisis.blocks import MetricRule, RollbackPolicy
from prefect_crisis.blocks.registry import VersionInfo
from prefect_crisis.blocks.registry_audit import AliasMove
from prefect_crisis.core.errors import IncidentError
from prefect_crisis.tasks.response.candidates import (
    Candidate,
    by_preference,
    eligible_versions,
    features_of,
    guarded_baseline,
    last_served,
    promotion_guarded,
    promotions_over,
    served_for,
    serving_history,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def move(action: str, before: str | None, after: str | None, hours: float, *, outcome: str = "applied", incident: str | None = None) -> AliasMove:
    return AliasMove(action, "champion", before, after, "why", incident, None, at(hours), outcome, f"audit-{hours}")


def version(number: str, *, aliases: tuple[str, ...] = (), tags: dict[str, str] | None = None, **metrics: float) -> VersionInfo:
    return VersionInfo(number, None, T0, dict(metrics), dict(tags or {}), aliases)


# -- baselines ---------------------------------------------------------------------------------


def test_a_promoted_versions_rates_are_none_looser_than_those_it_replaced():
    assert promotion_guarded({"accuracy": 0.70}, {"accuracy": 0.91}) == {"accuracy": 0.91, "error_rate": 0.09}
    assert promotion_guarded({"accuracy": 0.95}, {"accuracy": 0.91}) == {"accuracy": 0.95, "error_rate": 0.05}
    assert promotion_guarded({"error_rate": 0.2}, {"accuracy": 0.9}) == {"accuracy": 0.9, "error_rate": 0.1}
    # a latency is not a rate: it is left as the version's own, and a figure only one side has is not guarded
    assert promotion_guarded({"accuracy": 0.9, "latency_p95_ms": 300.0}, {"latency_p95_ms": 100.0}) == {"accuracy": 0.9, "latency_p95_ms": 300.0}
    assert promotion_guarded({"accuracy": 0.7}, None) == {"accuracy": 0.7}
    assert promotion_guarded({"accuracy": 0.7}, {}) == {"accuracy": 0.7}


def test_a_versions_baseline_is_guarded_by_the_version_it_was_promoted_over():
    old = Candidate("1", at(0), at(5), {"accuracy": 0.92})
    new = Candidate("2", at(5), None, {"accuracy": 0.60}, promoted_over="1")
    assert guarded_baseline(new, [old, new]) == {"accuracy": 0.92, "error_rate": 0.08}
    assert guarded_baseline(old, [old, new]) == {"accuracy": 0.92}
    rolled_back_to = Candidate("2", at(5), None, {"accuracy": 0.60})
    assert guarded_baseline(rolled_back_to, [old, rolled_back_to]) == {"accuracy": 0.60}


def test_only_an_applied_promotion_records_what_it_replaced():
    trail = [
        move("promote", "1", "2", 1),
        move("promote", "2", "3", 2, outcome="failed: refused"),
        move("rollback", "2", "1", 3),
        move("promote", "1", "2", 4),
        move("move", "2", None, 5),
    ]
    assert promotions_over(trail) == {"2": "1", "1": None}


# -- which versions, in which order ------------------------------------------------------------


def test_a_rollback_goes_only_to_a_version_that_served_cleanly_and_is_not_the_current_one():
    clean = Candidate("1", at(0), at(1), {})
    current = Candidate("5", at(1), None, {})
    others = [
        Candidate("2", at(0), at(1), {}, incident=True),
        Candidate("3", at(0), at(1), {}, retired=True),
        Candidate("4", at(0), at(1), {}, fallback=True),
        Candidate("6", None, None, {}),
    ]
    assert eligible_versions([clean, current, *others], "5") == [clean]
    assert eligible_versions([clean, current], None) == [clean, current]


def test_served_for_runs_to_now_for_the_serving_version():
    assert served_for(Candidate("1", at(0), at(2), {}), at(10)) == timedelta(hours=2)
    assert served_for(Candidate("1", at(3), None, {}), at(10)) == timedelta(hours=7)
    assert served_for(Candidate("1", None, None, {}), at(10)) == timedelta(0)


def test_a_version_last_served_when_it_stopped_else_when_it_started():
    assert last_served(Candidate("1", at(0), at(2), {})) == at(2)
    assert last_served(Candidate("1", at(3), None, {})) == at(3)
    with pytest.raises(IncidentError, match="v7 never served"):
        last_served(Candidate("7", None, None, {}))


def test_stable_versions_are_preferred_most_recent_first_by_default():
    older, newer, newest = Candidate("1", at(0), at(1), {}), Candidate("2", at(1), at(2), {}), Candidate("3", at(2), at(3), {})
    assert by_preference([older, newest, newer], RollbackPolicy()) == [newest, newer, older]


def test_best_metric_preference_ranks_by_the_first_rules_metric_in_its_direction():
    a = Candidate("1", at(0), at(1), {"accuracy": 0.80})
    b = Candidate("2", at(1), at(2), {"accuracy": 0.95})
    c = Candidate("3", at(2), at(3), {"accuracy": 0.90})
    unscored = Candidate("4", at(3), at(4), {"f1": 0.99})
    by_accuracy = RollbackPolicy(prefer="best-metric", rules=[MetricRule(metric="accuracy")])
    assert by_preference([a, b, c, unscored], by_accuracy) == [b, c, a, unscored]
    by_errors = RollbackPolicy(prefer="best-metric", rules=[MetricRule(metric="error_rate")])
    assert by_preference([a, b, c, unscored], by_errors) == [b, c, a, unscored]  # the lowest error rate is the best accuracy
    by_latency = RollbackPolicy(prefer="best-metric", rules=[MetricRule(metric="latency_p95_ms")])
    fast, slow = Candidate("5", at(0), at(1), {"latency_p95_ms": 50.0}), Candidate("6", at(1), at(2), {"latency_p95_ms": 90.0})
    assert by_preference([slow, fast], by_latency) == [fast, slow]
    no_rule = SimpleNamespace(prefer="best-metric", rules=[])  # a policy shaped value: the Block itself asks for a rule
    assert by_preference([a, b, c], no_rule) == [c, b, a]  # nothing to rank by: recency


def test_the_features_of_every_version_in_the_order_first_seen():
    versions = [version("1", tags={"crisis.features": "a,b"}), version("2", tags={"crisis.features": "b,,c"}), version("3")]
    assert features_of(versions) == ("a", "b", "c")


# -- the serving history from the audit --------------------------------------------------------


def test_the_serving_history_reads_intervals_incidents_roles_and_the_last_recovery():
    trail = [
        move("promote", None, "1", 0),
        move("promote", "1", "2", 10),
        move("promote", "2", "3", 20, outcome="failed: refused"),  # never applied: changes nothing
        move("rollback", "2", "1", 30, incident="inc-1"),
        move("move", "1", "2", 40),
    ]
    versions = [
        version("1", accuracy=0.9),
        version("2", aliases=("champion",), accuracy=0.85),
        version("3", tags={"crisis.retired": "yes"}),
        version("4", aliases=("fallback",), tags={"crisis.role": "fallback", "crisis.fallback.meets_bar": "false", "crisis.features": "x"}),
        version("5", tags={"crisis.fallback.meets_bar": "true"}),
    ]
    history = serving_history(trail, versions, "champion", "fallback")
    one, two, three, four, five = history.candidates
    assert (one.served_from, one.served_until, one.incident, one.promoted_over) == (at(30), at(40), False, None)
    assert (two.served_from, two.served_until, two.incident) == (at(40), None, True)
    assert two.promoted_over is None  # its latest arrival was a plain move, not the promotion over v1
    assert (three.served_from, three.retired, four.fallback, four.holds_fallback_alias) == (None, True, True, True)
    assert (one.fallback, one.holds_fallback_alias, two.retired) == (False, False, False)
    assert (four.meets_bar, five.meets_bar, one.meets_bar) == (False, True, None)
    assert one.metrics == {"accuracy": 0.9}
    assert history.champion == two
    assert history.last_rollback_at == at(30)
    assert history.features == ("x",)


def test_a_fallback_move_starts_the_cool_down_and_a_plain_move_does_not():
    trail = [move("promote", None, "1", 0), move("fallback", "1", "4", 5), move("move", "4", "1", 8)]
    history = serving_history(trail, [version("1", aliases=("champion",)), version("4")], "champion", "fallback")
    assert history.last_rollback_at == at(5)
    assert serving_history(trail[:1], [version("1")], "champion", "fallback").last_rollback_at is None
    assert serving_history(trail[:1], [version("1")], "champion", "fallback").champion is None

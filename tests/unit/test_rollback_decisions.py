"""Every branch of the rollback decision as a whole value: its kind, target, reason, measurements and flags.

A decision is what the response logs, emits and acts on, so each test compares the complete `RollbackDecision`
(the reason a person reads included) for one situation: a fixed clock, a champion that served an hour, versions
that served before, the fallback model, and versions scored on the incident's labelled window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prefect_crisis.blocks import MetricRule, RollbackPolicy
from prefect_crisis.core.vocabulary import DecisionKind, Severity
from prefect_crisis.tasks.response.candidates import Candidate
from prefect_crisis.tasks.response.rollback import RollbackDecision, _shown, clearly_better, decide_rollback
from prefect_crisis.tasks.response.rules import LiveWindow, Violation

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
POLICY = RollbackPolicy(
    rules=[MetricRule(metric="accuracy", tolerance=0.02), MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True)],
    stability_window_minutes=60,
    cooldown_minutes=30,
)
NO_LATENCY = ("latency_p95_ms (no latency samples)",)
# 500 of 1000 right against 0.90: the optimistic end of the Wilson interval is 0.5309
VIOLATION = Violation("accuracy", 0.5, pytest.approx(0.530930, abs=1e-6), 0.9, 1_000)
SUMMARY = "degraded (accuracy 0.5 (bound 0.5309) vs baseline 0.9, n=1000)"


def window(correct: int, total: int = 1_000) -> LiveWindow:
    return LiveWindow({"accuracy": correct}, {"accuracy": total})


def version(number: str, served_hours_ago: float, stopped_hours_ago: float | None, accuracy: float = 0.9, **flags) -> Candidate:
    until = None if stopped_hours_ago is None else NOW - timedelta(hours=stopped_hours_ago)
    return Candidate(number, NOW - timedelta(hours=served_hours_ago), until, {"accuracy": accuracy}, **flags)


CHAMPION = version("5", 1, None)
STABLE = version("2", 30, 20)  # served ten hours
RECENT = version("3", 20.5, 20)  # served thirty minutes: short of the stability window
FALLBACK = version("4", 50, 40, accuracy=0.7, fallback=True, holds_fallback_alias=True)
DEGRADED = window(500)


def degraded(reason: str, kind: DecisionKind = DecisionKind.ROLLBACK, **fields) -> RollbackDecision:
    """The decision on the degraded window (one violation, latency not measured)."""
    return RollbackDecision(kind, f"{SUMMARY}; {reason}", violations=(VIOLATION,), not_measured=NO_LATENCY, degraded=True, **fields)


# -- nothing to repair -------------------------------------------------------------------------


def test_a_healthy_champion_holds_and_says_what_was_not_measured():
    decision = decide_rollback(window(900), CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW)
    assert decision == RollbackDecision(
        DecisionKind.HOLD,
        "no metric is worse than its tolerance allows; not measured: latency_p95_ms (no latency samples)",
        not_measured=NO_LATENCY,
        measured=(("5", 0.9),),
    )
    assert decision.to_dict() == {
        "decision": "hold",
        "reason": "no metric is worse than its tolerance allows; not measured: latency_p95_ms (no latency samples)",
        "target_version": None,
        "violations": [],
        "undecided": [],
        "not_measured": ["latency_p95_ms (no latency samples)"],
        "degraded": False,
        "escalate": False,
        "fallback_version": None,
        "measured_accuracy": {"5": 0.9},
    }
    measured_all = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02)])
    assert decide_rollback(window(900), CHAMPION, [CHAMPION], measured_all, now=NOW).reason == "no metric is worse than its tolerance allows"


def test_a_window_too_thin_to_judge_is_inconclusive_and_escalates():
    decision = decide_rollback(window(9, 10), CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW)
    assert decision == RollbackDecision(
        DecisionKind.INCONCLUSIVE,
        "cannot tell: accuracy: 10 samples < 30; not measured: latency_p95_ms (no latency samples) (escalate to a person)",
        undecided=("accuracy: 10 samples < 30",),
        not_measured=NO_LATENCY,
        measured=(("5", 0.9),),
    )


def test_a_rollback_within_the_cool_down_holds_degraded():
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW, last_rollback_at=NOW - timedelta(minutes=10))
    assert decision == RollbackDecision(
        DecisionKind.HOLD,
        "cool-down: last rollback at 2026-01-01T11:50:00+00:00, within 30 min",
        violations=(VIOLATION,),
        not_measured=NO_LATENCY,
        degraded=True,
        measured=(("5", 0.5),),
    )


# -- rolling back ------------------------------------------------------------------------------


def test_with_nothing_labelled_the_stable_version_is_the_target():
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, FALLBACK, CHAMPION], POLICY, now=NOW)
    assert decision == degraded("v2 served stably (nothing labelled to measure on)", target_version="2", fallback_version="4", measured=(("5", 0.5),))
    assert decision.to_dict()["violations"] == ["accuracy 0.5 (bound 0.5309) vs baseline 0.9, n=1000"]


@pytest.mark.parametrize(("fallback_correct", "fallback_next"), [(950, True), (600, False)])
def test_a_stable_version_measured_healthy_is_the_target_and_the_fallback_next_only_when_measured_better(fallback_correct, fallback_next):
    measured = {"2": window(900), "4": window(fallback_correct)}
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, FALLBACK, CHAMPION], POLICY, now=NOW, measured=measured)
    assert decision == degraded(
        "v2 served stably and is measured healthy on the window (90.0%)",
        target_version="2",
        fallback_version="4",
        fallback_next=fallback_next,
        measured=(("2", 0.9), ("4", fallback_correct / 1_000), ("5", 0.5)),
    )


def test_a_recent_version_measured_healthy_and_no_worse_than_the_fallback_is_the_target():
    measured = {"3": window(900), "4": window(880)}
    decision = decide_rollback(DEGRADED, CHAMPION, [RECENT, FALLBACK, CHAMPION], POLICY, now=NOW, measured=measured)
    assert decision == degraded(
        "v3 served 30 min (< the 60-min stability window) and is measured healthy on the window (90.0%), no worse than the fallback",
        target_version="3",
        fallback_version="4",
        measured=(("3", 0.9), ("4", 0.88), ("5", 0.5)),
    )
    clearly_worse = decide_rollback(DEGRADED, CHAMPION, [RECENT, FALLBACK, CHAMPION], POLICY, now=NOW, measured={"3": window(900), "4": window(990)})
    assert clearly_worse.target_version is None and clearly_worse.kind is DecisionKind.FALLBACK


def test_of_two_recent_versions_the_one_that_served_last_is_tried_first():
    older = version("1", 30.5, 30)
    both = {"1": window(900), "3": window(900)}
    assert decide_rollback(DEGRADED, CHAMPION, [older, RECENT, CHAMPION], POLICY, now=NOW, measured=both).target_version == "3"
    assert decide_rollback(DEGRADED, CHAMPION, [RECENT, older, CHAMPION], POLICY, now=NOW, measured=both).target_version == "3"


def test_a_version_that_served_exactly_the_window_is_tried_once_as_stable():
    exactly = version("2", 21, 20)  # sixty minutes
    decision = decide_rollback(DEGRADED, CHAMPION, [exactly, FALLBACK, CHAMPION], POLICY, now=NOW, measured={"2": window(700), "4": window(600)})
    assert decision.reason == (  # skipped once: a version is stable or recent, never both
        f"{SUMMARY}; no version meets its baseline; v2 measured 70.0%, failing its own baseline; v2 is measured best on the window (70.0%)"
    )


def test_a_fallback_that_misses_its_bar_loses_to_a_recent_version_when_nothing_is_measured():
    weak = version("4", 50, 40, accuracy=0.7, fallback=True, holds_fallback_alias=True, meets_bar=False)
    decision = decide_rollback(DEGRADED, CHAMPION, [RECENT, weak, CHAMPION], POLICY, now=NOW)
    assert decision == degraded(
        "the fallback v4 misses its bar against the primary, so v3, which served before without an incident, is preferred even short of the "
        "stability window",
        target_version="3",
        fallback_version="4",
        measured=(("5", 0.5),),
    )


def test_with_no_version_healthy_the_best_measured_one_is_the_target_when_clearly_better():
    measured = {"2": window(700), "3": window(800), "4": window(600)}
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, RECENT, FALLBACK, CHAMPION], POLICY, now=NOW, measured=measured)
    assert decision == degraded(
        "no version meets its baseline; v2 measured 70.0%, failing its own baseline; v3 measured 80.0%, failing its own baseline; "
        "v3 is measured best on the window (80.0%)",
        target_version="3",
        fallback_version="4",
        measured=(("2", 0.7), ("3", 0.8), ("4", 0.6), ("5", 0.5)),
    )


# -- falling back, or holding ------------------------------------------------------------------


def test_the_fallback_measured_clearly_better_is_served():
    decision = decide_rollback(DEGRADED, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW, measured={"4": window(650)})
    assert decision == degraded(
        "no stable version to return to: the fallback v4 (measured 65.0% against 50.0% serving)",
        DecisionKind.FALLBACK,
        fallback_version="4",
        measured=(("4", 0.65), ("5", 0.5)),
    )
    unmeasured = decide_rollback(DEGRADED, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW)
    assert unmeasured == degraded(
        "no stable version to return to: the fallback v4", DecisionKind.FALLBACK, fallback_version="4", measured=(("5", 0.5),)
    )


def test_with_no_version_and_no_fallback_serving_is_unchanged_and_a_person_decides():
    decision = decide_rollback(DEGRADED, CHAMPION, [CHAMPION], POLICY, now=NOW)
    assert decision == degraded(
        "no version to return to and no fallback: serving unchanged, escalate to a person", DecisionKind.HOLD, escalate=True, measured=(("5", 0.5),)
    )


def test_a_fallback_the_window_cannot_score_is_not_served_blind():
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, FALLBACK, CHAMPION], POLICY, now=NOW, measured={"2": window(400)})
    assert decision == degraded(
        "no version to return to; v2 measured 40.0%, failing its own baseline, and the fallback v4 cannot be scored on the window: "
        "serving unchanged, escalate to a person",
        DecisionKind.HOLD,
        escalate=True,
        fallback_version="4",
        measured=(("2", 0.4), ("5", 0.5)),
    )
    unscorable = decide_rollback(DEGRADED, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW, unscorable=frozenset({"4"}))
    assert (unscorable.kind, unscorable.escalate) == (DecisionKind.HOLD, True)


def test_a_fallback_within_noise_of_what_serves_is_not_served():
    decision = decide_rollback(DEGRADED, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW, measured={"4": window(510)})
    assert decision == degraded(
        "no version to return to, and the fallback v4 is measured 51.0% against 50.0% serving, within noise or worse: serving unchanged, "
        "escalate to a person",
        DecisionKind.HOLD,
        escalate=True,
        fallback_version="4",
        measured=(("4", 0.51), ("5", 0.5)),
    )


def test_a_latency_crisis_falls_back_to_a_fallback_no_worse_in_accuracy():
    slow = LiveWindow({"accuracy": 500}, {"accuracy": 1_000}, (900.0,) * 50)
    champion = version("5", 1, None, accuracy=0.5)
    baseline = {"accuracy": 0.5, "latency_p95_ms": 200.0}
    within_noise = decide_rollback(slow, champion, [FALLBACK, champion], POLICY, now=NOW, baseline=baseline, measured={"4": window(510)})
    assert within_noise.kind is DecisionKind.FALLBACK  # accuracy only refuses something clearly worse
    worse = decide_rollback(slow, champion, [FALLBACK, champion], POLICY, now=NOW, baseline=baseline, measured={"4": window(400)})
    assert worse.kind is DecisionKind.HOLD


# -- emergencies -------------------------------------------------------------------------------


def test_an_emergency_without_a_violation_moves_only_to_something_measured_better():
    decision = decide_rollback(
        window(900), CHAMPION, [STABLE, FALLBACK, CHAMPION], POLICY, now=NOW, severity=Severity.EMERGENCY, measured={"2": window(950)}
    )
    assert decision == RollbackDecision(
        DecisionKind.ROLLBACK,
        "degraded (emergency line crossed); v2 served stably and is measured healthy on the window (95.0%)",
        "2",
        not_measured=NO_LATENCY,
        degraded=True,
        fallback_version="4",
        fallback_next=False,
        measured=(("2", 0.95), ("5", 0.9)),
    )
    same = decide_rollback(window(900), CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW, severity=Severity.EMERGENCY, measured={"2": window(905)})
    assert same.kind is DecisionKind.HOLD and same.escalate


def test_an_emergency_judges_a_window_of_ten():
    decision = decide_rollback(window(2, 10), CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW, severity=Severity.EMERGENCY)
    assert decision.violations == (Violation("accuracy", 0.2, pytest.approx(0.50984, abs=1e-5), 0.9, 10),)
    assert decision.reason == "degraded (accuracy 0.2 (bound 0.5098) vs baseline 0.9, n=10); v2 served stably (nothing labelled to measure on)"
    assert decide_rollback(window(2, 10), CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW).kind is DecisionKind.INCONCLUSIVE


# -- leaving the fallback ----------------------------------------------------------------------


FALLBACK_SERVING = version("4", 1, None, accuracy=0.7, fallback=True, holds_fallback_alias=True)


def test_the_fallback_serving_leaves_for_a_version_measured_healthy():
    measured = {"2": window(650), "3": window(900)}
    decision = decide_rollback(window(600), FALLBACK_SERVING, [STABLE, RECENT, FALLBACK_SERVING], POLICY, now=NOW, measured=measured)
    assert decision == RollbackDecision(
        DecisionKind.ROLLBACK,
        "the fallback v4 serves as a stopgap (60.0%); v3 is measured healthy on the window (90.0%)",
        "3",
        degraded=True,
        fallback_version="4",
        fallback_next=False,
        measured=(("2", 0.65), ("3", 0.9), ("4", 0.6)),
    )
    both = decide_rollback(
        window(600), FALLBACK_SERVING, [RECENT, STABLE, FALLBACK_SERVING], POLICY, now=NOW, measured={"2": window(900), "3": window(900)}
    )
    assert both.target_version == "2"  # a stable version before a recent one
    exactly = version("1", 21, 20)  # served exactly the stability window: stable, ahead of the more recent v3
    assert (
        decide_rollback(
            window(600), FALLBACK_SERVING, [RECENT, exactly, FALLBACK_SERVING], POLICY, now=NOW, measured={"1": window(900), "3": window(900)}
        ).target_version
        == "1"
    )
    older = version("1", 30.5, 30)
    assert (
        decide_rollback(
            window(600), FALLBACK_SERVING, [older, RECENT, FALLBACK_SERVING], POLICY, now=NOW, measured={"1": window(900), "3": window(900)}
        ).target_version
        == "3"
    )


def test_the_fallback_serving_stays_while_nothing_is_measured_healthy_or_no_worse():
    decision = decide_rollback(window(600), FALLBACK_SERVING, [STABLE, RECENT, FALLBACK_SERVING], POLICY, now=NOW, measured={"2": window(650)})
    assert decision == RollbackDecision(
        DecisionKind.HOLD,
        "the fallback v4 serves as a stopgap (60.0%); no version is measured healthy on the window yet (v2 65.0%, v3 not measured): it stays "
        "until one is, or a retrain passes the gate",
        degraded=True,
        fallback_version="4",
        measured=(("2", 0.65), ("4", 0.6)),
    )
    alone = decide_rollback(window(600), FALLBACK_SERVING, [FALLBACK_SERVING], POLICY, now=NOW)
    assert alone.reason == (
        "the fallback v4 serves as a stopgap (60.0%); no version is measured healthy on the window yet (no version served before): it stays "
        "until one is, or a retrain passes the gate"
    )
    healthy_but_worse = version("2", 30, 20, accuracy=0.5)  # meets its own (low) baseline, yet clearly below the fallback
    worse = decide_rollback(window(900), FALLBACK_SERVING, [healthy_but_worse, FALLBACK_SERVING], POLICY, now=NOW, measured={"2": window(500)})
    assert worse.kind is DecisionKind.HOLD
    unlabelled = decide_rollback(LiveWindow({}, {}), FALLBACK_SERVING, [FALLBACK_SERVING], POLICY, now=NOW)
    assert "stopgap (not measured)" in unlabelled.reason


# -- the pieces --------------------------------------------------------------------------------


def test_clearly_better_needs_the_gap_to_clear_z_standard_errors():
    # 0.9 and 0.8 on 100 rows each: one standard error of the difference is 0.05
    assert clearly_better(0.9, 100, 0.8, 100, z=1.5) is True
    assert clearly_better(0.9, 100, 0.8, 100, z=2.5) is False
    assert clearly_better(0.5, 100, 0.5, 100, z=0.0) is False  # no gap is never better, even at z = 0
    assert clearly_better(1.0, 100, 0.0, 100) is True  # no variance: any gap counts


def test_clearly_better_without_trials_compares_the_values():
    assert clearly_better(0.6, 0, 0.5, 100) is True
    assert clearly_better(0.5, 0, 0.5, 100) is False
    assert clearly_better(0.6, 100, 0.5, 0) is True
    assert clearly_better(0.6, 1, 0.5, 1) is False  # one row each is judged, and is noise


def test_measurements_are_shown_in_version_order():
    assert _shown({"10": 0.5, "9": 0.6, "x": 0.1}) == (("x", 0.1), ("9", 0.6), ("10", 0.5))
    assert _shown({"1": 0.5, "x": 0.1}) == (("x", 0.1), ("1", 0.5))
    decision = RollbackDecision(DecisionKind.HOLD, "", measured=(("9", 0.123456),))
    assert decision.to_dict()["measured_accuracy"] == {"9": 0.1235}


# -- the corners -------------------------------------------------------------------------------


def test_a_fallback_measured_on_error_counts_is_judged_on_as_many_rows():
    """Kills the trials of a window read only from its accuracy count: a window counting errors (1000 rows, 490 wrong)
    is 0.51 on 1000 rows, within noise of 0.50, not a plain 0.51 > 0.50 on no rows at all."""
    errors_counted = LiveWindow({"error_rate": 490}, {"error_rate": 1_000})
    decision = decide_rollback(DEGRADED, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW, measured={"4": errors_counted})
    assert (decision.kind, decision.escalate) == (DecisionKind.HOLD, True), decision.reason
    champion_errors = LiveWindow({"error_rate": 500}, {"error_rate": 1_000})
    assert decide_rollback(champion_errors, CHAMPION, [FALLBACK, CHAMPION], POLICY, now=NOW, measured={"4": window(510)}).kind is DecisionKind.HOLD


def test_the_best_measured_version_is_the_target_when_there_is_no_fallback():
    measured = {"2": window(700), "3": window(800)}
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, RECENT, CHAMPION], POLICY, now=NOW, measured=measured)
    assert (decision.kind, decision.target_version, decision.fallback_version) == (DecisionKind.ROLLBACK, "3", None)


def test_with_a_violation_a_healthy_version_within_noise_of_the_champion_is_still_a_target():
    """Only an emergency without a violation asks for clearly better: v2 (registered 0.5) at 0.51 is healthy."""
    modest = version("2", 30, 20, accuracy=0.5)
    decision = decide_rollback(DEGRADED, CHAMPION, [modest, CHAMPION], POLICY, now=NOW, measured={"2": window(510)})
    assert (decision.kind, decision.target_version) == (DecisionKind.ROLLBACK, "2"), decision.reason


def test_a_version_healthy_on_its_own_baseline_but_clearly_worse_than_the_champion_is_skipped():
    weak = version("2", 30, 20, accuracy=0.3)
    decision = decide_rollback(DEGRADED, CHAMPION, [weak, CHAMPION], POLICY, now=NOW, measured={"2": window(350)})
    assert decision == degraded(
        "no version to return to and no fallback; v2 measured 35.0%, no better than v5's 50.0%: serving unchanged, escalate to a person",
        DecisionKind.HOLD,
        escalate=True,
        measured=(("2", 0.35), ("5", 0.5)),
    )


def test_a_stable_version_the_window_cannot_score_is_passed_over_for_the_next():
    newer = version("6", 15, 10)  # stable and most recent, but not scored on the window
    decision = decide_rollback(DEGRADED, CHAMPION, [STABLE, newer, CHAMPION], POLICY, now=NOW, measured={"2": window(900)})
    assert (decision.kind, decision.target_version) == (DecisionKind.ROLLBACK, "2"), decision.reason


def test_every_violation_undecided_rule_and_unmeasured_latency_is_listed():
    two_latencies = RollbackPolicy(
        rules=[MetricRule(metric="accuracy", tolerance=0.02), MetricRule(metric="latency_p50_ms"), MetricRule(metric="latency_p95_ms")]
    )
    held = decide_rollback(window(900), CHAMPION, [CHAMPION], two_latencies, now=NOW)
    assert held.reason.endswith("; not measured: latency_p50_ms (no latency samples), latency_p95_ms (no latency samples)")
    two_rates = RollbackPolicy(rules=[MetricRule(metric="accuracy"), MetricRule(metric="error_rate")])
    thin = decide_rollback(window(9, 10), CHAMPION, [CHAMPION], two_rates, now=NOW)
    assert thin.reason == "cannot tell: accuracy: 10 samples < 30; error_rate: 10 samples < 30 (escalate to a person)"
    slow = LiveWindow({"accuracy": 500}, {"accuracy": 1_000}, (900.0,) * 50)
    both = decide_rollback(slow, CHAMPION, [STABLE, CHAMPION], POLICY, now=NOW, baseline={"accuracy": 0.9, "latency_p95_ms": 200.0})
    assert both.reason == (
        "degraded (accuracy 0.5 (bound 0.5309) vs baseline 0.9, n=1000; latency_p95_ms 900 (bound 900) vs baseline 200, n=50); "
        "v2 served stably (nothing labelled to measure on)"
    )


def test_a_version_whose_serving_has_no_recorded_end_is_measured_up_to_now():
    """A version still marked serving that is not the champion (an audit that lost the end of its interval) served until now."""
    open_ended = version("2", 2, None)  # two hours and counting: stable
    decision = decide_rollback(DEGRADED, CHAMPION, [open_ended, CHAMPION], POLICY, now=NOW)
    assert decision.target_version == "2", decision.reason
    just_started = version("3", 0.5, None)  # thirty minutes and counting: recent
    recent = decide_rollback(DEGRADED, CHAMPION, [just_started, CHAMPION], POLICY, now=NOW, measured={"3": window(900)})
    assert recent.target_version == "3" and "v3 served 30 min (< the 60-min stability window)" in recent.reason
    leaving = decide_rollback(window(600), FALLBACK_SERVING, [open_ended, FALLBACK_SERVING], POLICY, now=NOW, measured={"2": window(900)})
    assert leaving.target_version == "2"
    recent_leaving = decide_rollback(window(600), FALLBACK_SERVING, [just_started, FALLBACK_SERVING], POLICY, now=NOW, measured={"3": window(900)})
    assert recent_leaving.target_version == "3"


def test_a_version_of_exactly_the_window_is_looked_at_once_when_leaving_the_fallback():
    exactly = version("1", 21, 20)
    decision = decide_rollback(window(600), FALLBACK_SERVING, [exactly, FALLBACK_SERVING], POLICY, now=NOW, measured={"1": window(650)})
    assert "yet (v1 65.0%):" in decision.reason

"""The invariants of DESIGN.md's decisions, as properties over any registry history and any measurements:

- rollback before fallback: a stable version, not implicated, not measured failing, is always chosen over the fallback;
- never worse than doing nothing: the fallback is never chosen when it is measured no better than what serves;
- a rollback target is never implicated, retired, the fallback model or the version serving;
- the fallback model serving is a stopgap: never judged healthy against its own baseline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
from prefect_crisis.core.vocabulary import DecisionKind, Severity
from prefect_crisis.tasks.response.rollback import Candidate, LiveWindow, decide_rollback, eligible_versions, served_for

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02)], stability_window_minutes=60)
ROWS = 400


def window(accuracy: float, rows: int = ROWS) -> LiveWindow:
    return LiveWindow({"accuracy": round(accuracy * rows)}, {"accuracy": rows})


@st.composite
def histories(draw):
    """A registry: versions 1..n that served (or not) in turn, some implicated or retired, a fallback model, a champion."""
    count = draw(st.integers(1, 5))
    candidates, start = [], NOW - timedelta(hours=draw(st.integers(2, 48)))
    for number in range(1, count + 1):
        served = draw(st.booleans())
        minutes = draw(st.integers(1, 300))
        candidates.append(
            Candidate(
                version=str(number),
                served_from=start if served else None,
                served_until=start + timedelta(minutes=minutes) if served else None,
                metrics={"accuracy": draw(st.floats(0.6, 0.99))},
                incident=draw(st.booleans()) if served else False,
                retired=draw(st.sampled_from([False, False, False, True])),
            )
        )
        if served:
            start += timedelta(minutes=minutes)
    fallback = Candidate(str(count + 1), None, None, {"accuracy": draw(st.floats(0.3, 0.9))}, fallback=True, holds_fallback_alias=True)
    champion_is_fallback = draw(st.booleans()) and draw(st.booleans())
    champion = (
        Candidate(fallback.version, start, None, fallback.metrics, fallback=True, holds_fallback_alias=True)
        if champion_is_fallback
        else Candidate(str(count + 2), start, None, {"accuracy": draw(st.floats(0.8, 0.99))})
    )
    versions = [*candidates, champion]
    if not champion_is_fallback:
        versions.append(fallback)
    measured = {}
    for candidate in versions:
        if candidate.version != champion.version and draw(st.booleans()):
            measured[candidate.version] = window(draw(st.floats(0.0, 1.0)))
    live = window(draw(st.floats(0.0, 1.0)))
    severity = draw(st.sampled_from([Severity.CRITICAL, Severity.EMERGENCY]))
    return champion, versions, measured, live, severity


def scores(measured: dict[str, LiveWindow], live: LiveWindow, champion: Candidate) -> dict[str, float]:
    values = {version: w.successes["accuracy"] / w.samples["accuracy"] for version, w in measured.items()}
    values[champion.version] = live.successes["accuracy"] / live.samples["accuracy"]
    return values


@settings(max_examples=400, deadline=None)
@given(histories())
def test_every_decision_holds_the_invariants(history):
    champion, candidates, measured, live, severity = history
    decision = decide_rollback(live, champion, candidates, POLICY, now=NOW, severity=severity, measured=measured)
    measured_score = scores(measured, live, champion)
    by_version = {c.version: c for c in candidates}

    if decision.kind is DecisionKind.ROLLBACK:  # never to an implicated, retired, fallback or serving version
        target = by_version[decision.target_version]
        assert target in eligible_versions(candidates, champion.version), decision
        if target.version in measured_score:  # and never to something measured clearly worse than what serves
            assert measured_score[target.version] >= measured_score[champion.version] - 0.1, decision
    if decision.kind is DecisionKind.FALLBACK:  # never worse than doing nothing
        fallback = next(c for c in candidates if c.holds_fallback_alias)
        if fallback.version in measured_score:
            assert measured_score[fallback.version] > measured_score[champion.version], decision
    if champion.fallback:  # a stopgap is never healthy
        assert decision.degraded and decision.kind in (DecisionKind.ROLLBACK, DecisionKind.HOLD), decision

    # rollback before fallback: a stable version not measured failing its own baseline, when the champion is degraded
    stable = [c for c in eligible_versions(candidates, champion.version) if served_for(c, NOW) >= timedelta(minutes=POLICY.stability_window_minutes)]
    # (with a labelled window, a version is judged by its measurement; only with nothing measured does history decide)
    sound = [
        c
        for c in stable
        if (not measured and c.version not in measured)
        or (
            c.version in measured
            and measured_score[c.version] >= c.metrics["accuracy"] - 0.02
            and measured_score[c.version] > measured_score[champion.version] + 0.25
        )
    ]
    if decision.violations and not champion.fallback and sound:
        assert decision.kind is DecisionKind.ROLLBACK, decision


def test_an_emergency_without_a_violation_moves_only_to_something_measured_better():
    stable = Candidate("1", NOW - timedelta(hours=5), NOW - timedelta(hours=1), {"accuracy": 0.9})
    champion = Candidate("2", NOW - timedelta(hours=1), None, {"accuracy": 0.45})  # a model that always was this weak
    fallback = Candidate("3", None, None, {"accuracy": 0.4}, fallback=True, holds_fallback_alias=True)
    worse = decide_rollback(
        window(0.45),
        champion,
        [stable, champion, fallback],
        POLICY,
        now=NOW,
        severity=Severity.EMERGENCY,
        measured={"1": window(0.40), "3": window(0.30)},
    )
    assert worse.kind is DecisionKind.HOLD and worse.degraded
    better = decide_rollback(
        window(0.45),
        champion,
        [stable, champion, fallback],
        POLICY,
        now=NOW,
        severity=Severity.EMERGENCY,
        measured={"1": window(0.91), "3": window(0.30)},
    )
    assert (better.kind, better.target_version) == (DecisionKind.ROLLBACK, "1")


def test_a_version_that_served_less_than_the_window_is_a_target_only_when_measured_healthy_and_better_than_the_fallback():
    recent = Candidate("1", NOW - timedelta(minutes=50), NOW - timedelta(minutes=10), {"accuracy": 0.92})
    champion = Candidate("2", NOW - timedelta(minutes=10), None, {"accuracy": 0.97})
    fallback = Candidate("3", None, None, {"accuracy": 0.45}, fallback=True, holds_fallback_alias=True)
    history = [recent, champion, fallback]
    unmeasured = decide_rollback(window(0.10), champion, history, POLICY, now=NOW, measured={"3": window(0.44)})
    assert unmeasured.kind is DecisionKind.FALLBACK  # nothing known of v1 on the window: the stability window rules
    measured = decide_rollback(window(0.10), champion, history, POLICY, now=NOW, measured={"1": window(0.92), "3": window(0.44)})
    assert (measured.kind, measured.target_version) == (DecisionKind.ROLLBACK, "1") and "served 40 min" in measured.reason


def test_a_fallback_that_misses_its_bar_loses_to_any_version_that_served_without_an_incident():
    recent = Candidate("1", NOW - timedelta(minutes=50), NOW - timedelta(minutes=10), {"accuracy": 0.92})
    champion = Candidate("2", NOW - timedelta(minutes=10), None, {"accuracy": 0.97})
    weak = Candidate("3", None, None, {"accuracy": 0.45}, fallback=True, holds_fallback_alias=True, meets_bar=False)
    decision = decide_rollback(window(0.10), champion, [recent, champion, weak], POLICY, now=NOW)
    assert (decision.kind, decision.target_version) == (DecisionKind.ROLLBACK, "1") and "misses its bar" in decision.reason
    sound = Candidate("3", None, None, {"accuracy": 0.9}, fallback=True, holds_fallback_alias=True, meets_bar=True)
    assert decide_rollback(window(0.10), champion, [recent, champion, sound], POLICY, now=NOW).kind is DecisionKind.FALLBACK


def test_a_version_the_window_cannot_feed_is_never_a_target():
    stable = Candidate("1", NOW - timedelta(hours=5), NOW - timedelta(hours=1), {"accuracy": 0.9})
    champion = Candidate("2", NOW - timedelta(hours=1), None, {"accuracy": 0.9})
    fallback = Candidate("3", None, None, {"accuracy": 0.8}, fallback=True, holds_fallback_alias=True)
    history = [stable, champion, fallback]
    decision = decide_rollback(window(0.2), champion, history, POLICY, now=NOW, measured={"3": window(0.75)}, unscorable=frozenset({"1"}))
    assert decision.kind is DecisionKind.FALLBACK, decision  # v1 cannot read the window's rows: not a place to send them
    neither = decide_rollback(window(0.2), champion, history, POLICY, now=NOW, unscorable=frozenset({"1", "3"}))
    assert neither.kind is DecisionKind.HOLD and neither.escalate, neither

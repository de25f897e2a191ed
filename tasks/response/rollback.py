"""Decide a rollback (seed slides 3 and 13), as a plain function over values.

The seed's target was the best accuracy ever seen, however stale. Here: a metric is degraded only when the live
window's confidence bound says so (`rules.judge_rules`), and the target is the most recent version that served
through a whole stability window without an incident (`candidates`), measured healthy on the incident's window.
Nothing here imports Prefect or MLflow; the registry is read by the caller (`reading.serving_history_of`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.metrics import METRICS
from prefect_crisis.core.vocabulary import DecisionKind, MetricKind, Severity
from prefect_crisis.tasks.response.candidates import Candidate, by_preference, eligible_versions, guarded_baseline, last_served, served_for
from prefect_crisis.tasks.response.rules import EMERGENCY_MIN_SAMPLES, LiveWindow, Violation, accuracy_of, judge_rules

if TYPE_CHECKING:
    from prefect_crisis.blocks.rollback_policy import RollbackPolicy

__all__ = [
    "BETTER_Z",
    "EMERGENCY_MIN_SAMPLES",
    "Candidate",
    "LiveWindow",
    "RollbackDecision",
    "Violation",
    "clearly_better",
    "decide_rollback",
    "eligible_versions",
    "judge_rules",
    "served_for",
]


@dataclass(frozen=True)
class RollbackDecision:
    """What to do, why, and the measurements it rests on (a value: logged, tested, put in an event).

    `degraded`: the champion is worse than it may be (a violation), or it is the fallback model (a stopgap);
    a HOLD that is `degraded` means nothing was measured better than what serves: serving stays, a person decides.
    `fallback_version`: where FALLBACK goes, and where a ROLLBACK whose target fails verification may go next when the
    fallback is measured better (`fallback_next`). `measured`: accuracy on the incident's window per version (the
    champion's under its own version).
    """

    kind: DecisionKind
    reason: str
    target_version: str | None = None
    violations: tuple[Violation, ...] = ()
    undecided: tuple[str, ...] = ()
    not_measured: tuple[str, ...] = ()
    degraded: bool = False
    fallback_version: str | None = None
    fallback_next: bool = True
    measured: tuple[tuple[str, float], ...] = ()
    escalate: bool = False  # a degraded HOLD because nothing is measured better: a person (the emergency step) takes it

    def to_dict(self) -> dict:
        return {
            "decision": self.kind.value,
            "reason": self.reason,
            "target_version": self.target_version,
            "violations": [str(v) for v in self.violations],
            "undecided": list(self.undecided),
            "not_measured": list(self.not_measured),
            "degraded": self.degraded,
            "escalate": self.escalate,
            "fallback_version": self.fallback_version,
            "measured_accuracy": {version: round(value, 4) for version, value in self.measured},
        }


def decide_rollback(
    live: LiveWindow,
    champion: Candidate,
    candidates: Sequence[Candidate],
    policy: RollbackPolicy,
    *,
    now: datetime,
    baseline: dict[str, float] | None = None,
    last_rollback_at: datetime | None = None,
    severity: Severity = Severity.CRITICAL,
    measured: Mapping[str, LiveWindow] | None = None,
    unscorable: frozenset[str] = frozenset(),
) -> RollbackDecision:
    """HOLD, ROLLBACK(target), FALLBACK or INCONCLUSIVE (a rule cannot be judged: too few samples, no baseline,
    metric not reported), holding the invariants of DESIGN.md:

    - rollback before fallback: a stable version, not implicated, that is not measured failing its own baseline on
      the window is always preferred to the fallback; a version that served less than the stability window is a target
      only when it is measured healthy on the window and better than the fallback;
    - the fallback only when no such version exists, and never when it is measured worse than what serves;
    - the fallback model serving is a stopgap, never judged against its own baseline: the decision looks for a version
      measured healthy and better on the window, and holds (degraded) when there is none;
    - an emergency judges without waiting for more samples and without the cool-down.

    Args:
        live: the live window of the current champion.
        champion: the current champion; its metrics, none looser than the version it was promoted over
            (`promotion_guarded`), are the baseline unless `baseline` is given.
        candidates: every registered version, with its serving history.
        now: the decision's clock (injected; tests pass fixed times).
        last_rollback_at: the last rollback of this model, for the cool-down.
        measured: versions scored on the incident's labelled window (the same rows as `live`): a target that fails its
            own baseline there is not chosen, and the fallback is compared with what serves. Empty: nothing scored (the
            verification after the move decides).
        unscorable: versions the window cannot feed (columns it lacks): never a target, the fallback included.
    """
    measured = dict(measured or {})
    emergency = severity is Severity.EMERGENCY
    fallback = next((c for c in candidates if c.holds_fallback_alias), None)
    scores = {version: value for version, window in measured.items() if (value := accuracy_of(window)) is not None}
    trials = {version: _labelled_rows(window) for version, window in measured.items()}
    if (serving := accuracy_of(live)) is not None:
        scores[champion.version], trials[champion.version] = serving, _labelled_rows(live)
    better = partial(_better, scores, trials)
    if champion.fallback:
        return _leave_the_fallback(champion, candidates, policy, now, measured, scores, better)
    if baseline is None:
        baseline = guarded_baseline(champion, candidates)
    results = judge_rules(live, baseline, policy, min_samples_cap=EMERGENCY_MIN_SAMPLES if emergency else None)
    violations, undecided = results.violations, results.undecided
    judged: dict[str, Any] = {"violations": violations, "undecided": undecided, "not_measured": results.not_measured, "measured": _shown(scores)}
    unmeasured = f"; not measured: {', '.join(results.not_measured)}" if results.not_measured else ""
    if not violations and not emergency:
        if undecided:
            return RollbackDecision(
                DecisionKind.INCONCLUSIVE,
                "cannot tell: " + "; ".join(undecided) + unmeasured + " (escalate to a person)",
                undecided=undecided,
                not_measured=results.not_measured,
                measured=_shown(scores),
            )
        return RollbackDecision(DecisionKind.HOLD, "no metric is worse than its tolerance allows" + unmeasured, **judged)
    if last_rollback_at is not None and not emergency:
        cooldown = timedelta(minutes=policy.cooldown_minutes)
        if now - last_rollback_at < cooldown:
            return RollbackDecision(
                DecisionKind.HOLD,
                f"cool-down: last rollback at {last_rollback_at.isoformat()}, within {policy.cooldown_minutes:g} min",
                degraded=True,
                **judged,
            )
    summary = "; ".join(str(v) for v in violations) or "emergency line crossed"
    latency_only = bool(violations) and all(METRICS[v.metric].kind == MetricKind.LATENCY for v in violations if v.metric in METRICS)
    return _repair(
        champion,
        candidates,
        policy,
        now,
        measured,
        scores,
        better,
        fallback,
        summary,
        judged,
        must_beat_champion=not violations,
        latency_only=latency_only,
        unscorable=unscorable,
    )


BETTER_Z = 2.0  # standard errors a measured gain must clear: a window of 300 rows cannot tell 0.537 from 0.533


def clearly_better(value: float, trials: int, than: float, than_trials: int, z: float = BETTER_Z) -> bool:
    """`value` beats `than` beyond sampling noise: their difference exceeds `z` standard errors of a difference of two
    proportions (unpaired, so conservative for two versions scored on the same rows).

    Example:
        >>> clearly_better(0.5367, 300, 0.5333, 300), clearly_better(0.90, 300, 0.05, 300)
        (False, True)
    """
    if trials <= 0 or than_trials <= 0:
        return value > than
    error = math.sqrt(max(value * (1 - value), 1e-9) / trials + max(than * (1 - than), 1e-9) / than_trials)
    return value - than > z * error


def _better(scores: Mapping[str, float], trials: Mapping[str, int], version: str | None, than: str | None) -> bool:
    """Version `version` is measured clearly better than version `than` on the window; True when `than` is not measured."""
    if than is None or than not in scores:
        return True
    if version is None or version not in scores:
        return False
    return clearly_better(scores[version], trials.get(version, 0), scores[than], trials.get(than, 0))  # pragma: no mutate


def _labelled_rows(window: LiveWindow) -> int:
    """The rows an accuracy was measured on, whichever of accuracy and error_rate the window counts (0: none)."""
    measured = window.rate("accuracy")
    return 0 if measured is None else measured[1]


def _shown(scores: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(scores.items(), key=lambda pair: int(pair[0]) if pair[0].isdigit() else 0))


def _passes(candidate: Candidate, window: LiveWindow, candidates: Sequence[Candidate], policy: RollbackPolicy) -> bool:
    """The version meets its own baseline on the window (no violation; too few samples does not fail it)."""
    return not judge_rules(window, guarded_baseline(candidate, candidates), policy).violations


def _repair(
    champion: Candidate,
    candidates: Sequence[Candidate],
    policy: RollbackPolicy,
    now: datetime,
    measured: Mapping[str, LiveWindow],
    scores: Mapping[str, float],
    better: Callable[[str | None, str | None], bool],
    fallback: Candidate | None,
    summary: str,
    judged: dict,
    *,
    must_beat_champion: bool = False,  # pragma: no mutate
    latency_only: bool = False,  # pragma: no mutate
    unscorable: frozenset[str] = frozenset(),
) -> RollbackDecision:
    """The champion is degraded: the stable version to roll back to, else a version measured healthy, else the fallback.

    With a labelled window, a version is a target only when scored on it (one the window cannot feed never is), healthy
    against its own baseline, and not measured clearly worse than what serves (clearly better, for an emergency without
    a violation); the fallback only when measured clearly better than what serves. Without a window (nothing measured),
    the serving history decides. A latency crisis compares accuracy only to refuse something clearly worse.
    """
    window = timedelta(minutes=policy.stability_window_minutes)
    eligible = [c for c in eligible_versions(candidates, champion.version) if c.version not in unscorable]
    stable = by_preference([c for c in eligible if served_for(c, now) >= window], policy)
    recent = sorted([c for c in eligible if served_for(c, now) < window], key=last_served, reverse=True)
    serving, fallback_score = scores.get(champion.version), (scores.get(fallback.version) if fallback else None)
    windowed = bool(measured)  # versions were scored on a labelled window: decide on measurements, not on history
    # an emergency without a violation moves only to something measured clearly better
    must_beat_champion = must_beat_champion and serving is not None
    fallback_version = fallback.version if fallback else None
    skipped: list[str] = []

    def sound(candidate: Candidate) -> bool:
        """Healthy on the window, and no worse than what serves (clearly better when there is nothing to repair but the line)."""
        if not _passes(candidate, measured[candidate.version], candidates, policy):
            skipped.append(f"v{candidate.version} measured {scores[candidate.version]:.1%}, failing its own baseline")
            return False
        if (must_beat_champion and not better(candidate.version, champion.version)) or better(champion.version, candidate.version):
            skipped.append(f"v{candidate.version} measured {scores[candidate.version]:.1%}, no better than v{champion.version}'s {_pct(serving)}")
            return False
        return True

    for candidate in stable:
        if candidate.version not in measured:
            if windowed:
                skipped.append(f"v{candidate.version} cannot be scored on the window")
                continue
            return _rollback(
                candidate, f"degraded ({summary}); v{candidate.version} served stably (nothing labelled to measure on)", fallback_version, judged
            )
        if sound(candidate):
            why = f"degraded ({summary}); v{candidate.version} served stably and is measured healthy on the window ({scores[candidate.version]:.1%})"
            return _rollback(
                candidate, why, fallback_version, judged, fallback_next=fallback_version in scores and better(fallback_version, candidate.version)
            )
    for candidate in recent:
        if candidate.version in measured and sound(candidate) and not better(fallback_version, candidate.version):
            minutes = served_for(candidate, now).total_seconds() / 60
            why = (
                f"degraded ({summary}); v{candidate.version} served {minutes:.0f} min (< the {policy.stability_window_minutes:g}-min stability "
                f"window) and is measured healthy on the window ({scores[candidate.version]:.1%}), no worse than the fallback"
            )
            return _rollback(candidate, why, fallback_version, judged)
    if fallback is not None and fallback.meets_bar is False and not windowed:
        # a fallback known to be weak, and nothing measured: any version that served without an incident beats it
        if recent:
            why = (
                f"degraded ({summary}); the fallback v{fallback.version} misses its bar against the primary, so v{recent[0].version}, "
                "which served before without an incident, is preferred even short of the stability window"
            )
            return _rollback(recent[0], why, fallback_version, judged)
    # nothing healthy to return to: the best measured of what is left, the fallback, or what serves
    scored = [c for c in eligible if c.version in scores]
    best = max(scored, key=lambda c: scores[c.version], default=None)
    tried = ("; " + "; ".join(skipped)) if skipped else ""
    if best is not None and better(best.version, champion.version) and better(best.version, fallback_version):
        why = (
            f"degraded ({summary}); no version meets its baseline{tried}; v{best.version} is measured best on the window ({scores[best.version]:.1%})"
        )
        return _rollback(best, why, fallback_version, judged)
    if fallback is None:
        return RollbackDecision(
            DecisionKind.HOLD,
            f"degraded ({summary}); no version to return to and no fallback{tried}: serving unchanged, escalate to a person",
            degraded=True,
            escalate=True,
            **judged,
        )
    if fallback.version in unscorable or (
        windowed
        and serving is not None
        and (
            fallback_score is None
            or not (better(fallback.version, champion.version) or (latency_only and not better(champion.version, fallback.version)))
        )
    ):
        shown = (
            "cannot be scored on the window"
            if fallback_score is None
            else f"is measured {fallback_score:.1%} against {serving:.1%} serving, within noise or worse"
        )
        return RollbackDecision(
            DecisionKind.HOLD,
            f"degraded ({summary}); no version to return to{tried}, and the fallback v{fallback.version} {shown}: serving unchanged, escalate to a person",
            degraded=True,
            escalate=True,
            fallback_version=fallback_version,
            **judged,
        )
    measured_note = f" (measured {fallback_score:.1%} against {serving:.1%} serving)" if fallback_score is not None and serving is not None else ""
    return RollbackDecision(
        DecisionKind.FALLBACK,
        f"degraded ({summary}); no stable version to return to{tried}: the fallback v{fallback.version}{measured_note}",
        degraded=True,
        fallback_version=fallback_version,
        **judged,
    )


def _rollback(target: Candidate, reason: str, fallback_version: str | None, judged: dict, *, fallback_next: bool = True) -> RollbackDecision:
    return RollbackDecision(
        DecisionKind.ROLLBACK, reason, target.version, degraded=True, fallback_version=fallback_version, fallback_next=fallback_next, **judged
    )


def _leave_the_fallback(
    champion: Candidate,
    candidates: Sequence[Candidate],
    policy: RollbackPolicy,
    now: datetime,
    measured: Mapping[str, LiveWindow],
    scores: Mapping[str, float],
    better: Callable[[str | None, str | None], bool],
) -> RollbackDecision:
    """The fallback model serves (a stopgap): go back to a version measured healthy on the window and not measured worse
    than it (within noise, the real version wins)."""
    serving = scores.get(champion.version)
    window = timedelta(minutes=policy.stability_window_minutes)
    eligible = eligible_versions(candidates, champion.version)
    ordered = by_preference([c for c in eligible if served_for(c, now) >= window], policy) + sorted(
        [c for c in eligible if served_for(c, now) < window], key=last_served, reverse=True
    )
    for candidate in ordered:
        window_of = measured.get(candidate.version)
        if window_of is not None and _passes(candidate, window_of, candidates, policy) and not better(champion.version, candidate.version):
            return RollbackDecision(
                DecisionKind.ROLLBACK,
                f"the fallback v{champion.version} serves as a stopgap ({_pct(serving)}); v{candidate.version} is measured healthy on the window "
                f"({scores[candidate.version]:.1%})",
                candidate.version,
                degraded=True,
                fallback_version=champion.version,
                fallback_next=False,
                measured=_shown(scores),
            )
    looked = ", ".join(f"v{c.version} {_pct(scores.get(c.version))}" for c in ordered) or "no version served before"
    return RollbackDecision(
        DecisionKind.HOLD,
        f"the fallback v{champion.version} serves as a stopgap ({_pct(serving)}); no version is measured healthy on the window yet ({looked}): "
        "it stays until one is, or a retrain passes the gate",
        degraded=True,
        fallback_version=champion.version,
        measured=_shown(scores),
    )


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1%}"

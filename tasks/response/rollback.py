"""Decide a rollback (seed slides 3 and 13), as a plain function over values.

The seed's rule fired when accuracy did *not* drop (it compared a relative
change with `> -0.05`) and its target was the best accuracy ever seen, however
stale. Here: a metric is degraded only when the live window's confidence bound
says so with enough samples, and the target is the most recent version that
served through a whole stability window without an incident.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import numpy as np
from scipy import stats

from prefect_crisis.blocks.rollback_policy import METRICS, MetricRule, RollbackPolicy
from prefect_crisis.core.vocabulary import AliasAction, AuditOutcome, DecisionKind, MetricKind, Severity, TagKey


@dataclass(frozen=True)
class LiveWindow:
    """What the live model did recently: counts for rates, samples for latency.

    `successes[metric]` counts the rate's numerator: correct predictions for
    accuracy, errors for error_rate. Either one is enough; the other is
    derived (they are one fact).

    Example:
        >>> LiveWindow({"accuracy": 430}, {"accuracy": 1_000}).rate("error_rate")
        (0.57, 1000)
    """

    successes: dict[str, int]  # rate metric -> count of its numerator events
    samples: dict[str, int]  # rate metric -> trials
    latencies_ms: tuple[float, ...] = ()

    def rate(self, metric: str) -> tuple[float, int] | None:
        """(value, trials) of a rate, derived from its complement if need be; None: not reported."""
        if metric in self.samples:
            trials = self.samples[metric]
            return (self.successes.get(metric, 0) / trials if trials else math.nan), trials
        complement = METRICS[metric].complement if metric in METRICS else None
        if complement is not None and complement in self.samples:
            trials = self.samples[complement]
            return ((trials - self.successes.get(complement, 0)) / trials if trials else math.nan), trials
        return None

    def value(self, rule: MetricRule) -> tuple[float, int] | None:
        """(value, samples) of the rule's metric; None when the window does not measure it."""
        if rule.kind == MetricKind.LATENCY:
            if not self.latencies_ms:
                return None
            return float(np.percentile(self.latencies_ms, rule.spec.percentile)), len(self.latencies_ms)
        return self.rate(rule.metric)


def baseline_value(metric: str, baseline: dict[str, float]) -> float | None:
    """The baseline of `metric`, or 1 minus its complement's (accuracy <-> error_rate); None if neither.

    Example:
        >>> baseline_value("error_rate", {"accuracy": 0.9, "f1": 0.88})
        0.1
    """
    if metric in baseline:
        return baseline[metric]
    complement = METRICS[metric].complement if metric in METRICS else None
    if complement is not None and complement in baseline:
        return round(1.0 - baseline[complement], 12)
    return None


def promotion_guarded(metrics: dict[str, float], replaced: dict[str, float] | None) -> dict[str, float]:
    """The champion's registered rates, none looser than those of the version it was promoted over.

    A promotion claims the new version is at least as good as the one it replaced. Its own holdout
    figures may not say so: a retrain on labels a broken pipeline flipped scores itself on those labels,
    and judged against that figure its live errors look normal. So the baseline is the better of the
    two, per rate; without a replaced version it is the champion's own.

    Example:
        >>> promotion_guarded({"accuracy": 0.70}, {"accuracy": 0.91})
        {'accuracy': 0.91, 'error_rate': 0.09}
        >>> promotion_guarded({"accuracy": 0.95}, {"accuracy": 0.91})["error_rate"]
        0.05
    """
    guarded = dict(metrics)
    if not replaced:
        return guarded
    for metric, spec in METRICS.items():
        own, before = baseline_value(metric, metrics), baseline_value(metric, replaced)
        if spec.kind == MetricKind.RATE and own is not None and before is not None:
            guarded[metric] = max(own, before) if spec.higher_is_better else min(own, before)
    return guarded


def promotions_over(trail) -> dict[str, str | None]:
    """Per version, the version its latest arrival on the champion alias replaced, when that arrival was a
    promotion (None when it came by rollback, fallback or a plain move), from the alias's audit trail.

    Example:
        >>> from types import SimpleNamespace as Move
        >>> promotions_over([Move(action="promote", from_version="1", to_version="2", outcome="applied"),
        ...                  Move(action="rollback", from_version="2", to_version="1", outcome="applied")])
        {'2': '1', '1': None}
    """
    over: dict[str, str | None] = {}
    for move in trail:
        if move.outcome == AuditOutcome.APPLIED and move.to_version:
            over[move.to_version] = move.from_version if move.action == AliasAction.PROMOTE else None
    return over


@dataclass(frozen=True)
class Candidate:
    """A registered version as the decision sees it."""

    version: str
    served_from: datetime | None  # when it last became champion; None: never served
    served_until: datetime | None  # when it stopped serving; None: serving now
    metrics: dict[str, float]
    incident: bool = False  # an incident was recorded while it served
    retired: bool = False
    fallback: bool = False  # the fallback model (`crisis.role=fallback`): FALLBACK's target, never a rollback's
    promoted_over: str | None = None  # the version its latest promotion replaced as champion
    holds_fallback_alias: bool = False  # the version @fallback points at: what FALLBACK serves
    meets_bar: bool | None = None  # a fallback model: whether it reached its bar against the primary at training (None: not recorded)


@dataclass(frozen=True)
class Violation:
    metric: str
    live: float
    bound: float
    baseline: float
    samples: int

    def __str__(self) -> str:
        return f"{self.metric} {self.live:.4g} (bound {self.bound:.4g}) vs baseline {self.baseline:.4g}, n={self.samples}"


@dataclass(frozen=True)
class RuleResults:
    """Every rule of a policy judged on one live window: nothing is skipped silently."""

    violations: tuple[Violation, ...] = ()
    undecided: tuple[str, ...] = ()  # rules that cannot be judged: each says why
    not_measured: tuple[str, ...] = ()  # latency rules with no latency samples at all


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


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Example:
        >>> [round(x, 3) for x in wilson_interval(80, 100)]
        [0.711, 0.867]
    """
    if trials == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def _allowed(rule: MetricRule, baseline: float) -> float:
    slack = rule.tolerance * abs(baseline) if rule.relative else rule.tolerance
    return baseline - slack if rule.higher_is_better else baseline + slack


def check_rule(rule: MetricRule, live: LiveWindow, baseline: float, confidence: float) -> Violation | None:
    """A violation when the live metric is worse than allowed beyond doubt.

    For rates the *optimistic* end of the Wilson interval must still be worse
    than the allowed value, so one noisy window does not roll back a model.
    """
    measured = live.value(rule)
    if measured is None or math.isnan(measured[0]):
        return None
    value, samples = measured
    allowed = _allowed(rule, baseline)
    if rule.kind == MetricKind.RATE:
        low, high = wilson_interval(round(value * samples), samples, confidence)
        bound = high if rule.higher_is_better else low
    else:
        bound = value
    worse = bound < allowed if rule.higher_is_better else bound > allowed
    return Violation(rule.metric, value, bound, baseline, samples) if worse else None


def judge_rules(live: LiveWindow, baseline: dict[str, float], policy: RollbackPolicy, *, min_samples_cap: int | None = None) -> RuleResults:
    """Judge every rule; a rule that cannot be judged is named in `undecided`.

    A latency rule with no latency samples at all is `not_measured` (latency
    is not collected), which does not stand in the way of a HOLD.
    `min_samples_cap`: judge with at most this many samples required (an emergency does not wait for more;
    the Wilson bound still asks a small window for a large gap).

    Example:
        >>> policy = RollbackPolicy(rules=[MetricRule(metric="error_rate", tolerance=0.02)])
        >>> judge_rules(LiveWindow({"accuracy": 430}, {"accuracy": 1_000}), {"accuracy": 0.9}, policy).violations[0].metric
        'error_rate'
    """
    violations, undecided, not_measured = [], [], []
    for rule in policy.rules:
        measured = live.value(rule)
        if measured is None:
            if rule.kind == MetricKind.LATENCY:
                not_measured.append(f"{rule.metric} (no latency samples)")
            else:
                undecided.append(f"{rule.metric}: the live window does not report it")
            continue
        reference = baseline_value(rule.metric, baseline)
        if reference is None:
            known = ", ".join(sorted(baseline)) or "none"
            undecided.append(f"{rule.metric}: no baseline (the champion records {known})")
            continue
        _, samples = measured
        needed = rule.min_samples if min_samples_cap is None else min(rule.min_samples, min_samples_cap)
        if samples < needed:
            undecided.append(f"{rule.metric}: {samples} samples < {needed}")
            continue
        violation = check_rule(rule, live, reference, policy.confidence)
        if violation:
            violations.append(violation)
    return RuleResults(tuple(violations), tuple(undecided), tuple(not_measured))


EMERGENCY_MIN_SAMPLES = 10  # an emergency judges a window this small (the Wilson bound asks it for a large gap)


def eligible_versions(candidates: Sequence[Candidate], current: str | None) -> list[Candidate]:
    """Versions a rollback may go to: served before, not implicated in an incident, not retired, not the fallback
    model, not the current one."""
    return [
        candidate for candidate in candidates
        if candidate.version != current and not (candidate.retired or candidate.fallback or candidate.incident) and candidate.served_from is not None
    ]


def served_for(candidate: Candidate, now: datetime) -> timedelta:
    return (candidate.served_until or now) - candidate.served_from if candidate.served_from else timedelta(0)


def by_preference(stable: Sequence[Candidate], policy: RollbackPolicy) -> list[Candidate]:
    """Stable versions in the policy's order of preference: the most recent first, or the best on the first rule's metric."""
    recent = sorted(stable, key=lambda c: c.served_until or c.served_from, reverse=True)
    if policy.prefer == "best-metric" and policy.rules:
        rule = policy.rules[0]
        sign = 1 if rule.higher_is_better else -1
        scored = [c for c in recent if baseline_value(rule.metric, c.metrics) is not None]
        unscored = [c for c in recent if baseline_value(rule.metric, c.metrics) is None]
        return sorted(scored, key=lambda c: -sign * baseline_value(rule.metric, c.metrics)) + unscored
    return recent


def guarded_baseline(candidate: Candidate, candidates: Sequence[Candidate]) -> dict[str, float]:
    """A version's baseline: its registered rates, none looser than those of the version it was promoted over."""
    replaced = next((c.metrics for c in candidates if c.version == candidate.promoted_over), None)
    return promotion_guarded(candidate.metrics, replaced)


def accuracy_of(window: LiveWindow | None) -> float | None:
    measured = window.rate("accuracy") if window is not None else None
    return None if measured is None or math.isnan(measured[0]) else measured[0]


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
    trials = {version: window.samples.get("accuracy", 0) for version, window in measured.items()}
    if (serving := accuracy_of(live)) is not None:
        scores[champion.version], trials[champion.version] = serving, live.samples.get("accuracy", 0)
    better = partial(_better, scores, trials)
    if champion.fallback:
        return _leave_the_fallback(champion, candidates, policy, now, measured, scores, better)
    if baseline is None:
        baseline = guarded_baseline(champion, candidates)
    results = judge_rules(live, baseline, policy, min_samples_cap=EMERGENCY_MIN_SAMPLES if emergency else None)
    violations, undecided = results.violations, results.undecided
    judged = {"violations": violations, "undecided": undecided, "not_measured": results.not_measured, "measured": _shown(scores)}
    unmeasured = f"; not measured: {', '.join(results.not_measured)}" if results.not_measured else ""
    if not violations and not emergency:
        if undecided:
            return RollbackDecision(
                DecisionKind.INCONCLUSIVE, "cannot tell: " + "; ".join(undecided) + unmeasured + " (escalate to a person)",
                undecided=undecided, not_measured=results.not_measured, measured=_shown(scores),
            )
        return RollbackDecision(DecisionKind.HOLD, "no metric is worse than its tolerance allows" + unmeasured, **judged)
    if last_rollback_at is not None and not emergency:
        cooldown = timedelta(minutes=policy.cooldown_minutes)
        if now - last_rollback_at < cooldown:
            return RollbackDecision(
                DecisionKind.HOLD, f"cool-down: last rollback at {last_rollback_at.isoformat()}, within {policy.cooldown_minutes:g} min",
                degraded=True, **judged,
            )
    summary = "; ".join(str(v) for v in violations) or "emergency line crossed"
    latency_only = bool(violations) and all(METRICS[v.metric].kind == MetricKind.LATENCY for v in violations if v.metric in METRICS)
    return _repair(champion, candidates, policy, now, measured, scores, better, fallback, summary, judged,
                   must_beat_champion=not violations, latency_only=latency_only, unscorable=unscorable)


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
    return clearly_better(scores[version], trials.get(version, 0), scores[than], trials.get(than, 0))


def _shown(scores: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(scores.items(), key=lambda pair: int(pair[0]) if pair[0].isdigit() else 0))


def _passes(candidate: Candidate, window: LiveWindow, candidates: Sequence[Candidate], policy: RollbackPolicy) -> bool:
    """The version meets its own baseline on the window (no violation; too few samples does not fail it)."""
    return not judge_rules(window, guarded_baseline(candidate, candidates), policy).violations


def _repair(
    champion: Candidate, candidates: Sequence[Candidate], policy: RollbackPolicy, now: datetime, measured: Mapping[str, LiveWindow],
    scores: Mapping[str, float], better: Callable[[str | None, str | None], bool], fallback: Candidate | None, summary: str, judged: dict,
    *, must_beat_champion: bool = False, latency_only: bool = False, unscorable: frozenset[str] = frozenset(),
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
    recent = sorted([c for c in eligible if served_for(c, now) < window], key=lambda c: c.served_until or c.served_from, reverse=True)
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
        if must_beat_champion and not better(candidate.version, champion.version) or better(champion.version, candidate.version):
            skipped.append(f"v{candidate.version} measured {scores[candidate.version]:.1%}, no better than v{champion.version}'s {_pct(serving)}")
            return False
        return True

    for candidate in stable:
        if candidate.version not in measured:
            if windowed:
                skipped.append(f"v{candidate.version} cannot be scored on the window")
                continue
            return _rollback(candidate, f"degraded ({summary}); v{candidate.version} served stably (nothing labelled to measure on)", fallback_version, judged)
        if sound(candidate):
            why = f"degraded ({summary}); v{candidate.version} served stably and is measured healthy on the window ({scores[candidate.version]:.1%})"
            return _rollback(candidate, why, fallback_version, judged, fallback_next=fallback_version in scores and better(fallback_version, candidate.version))
    for candidate in recent:
        if candidate.version in measured and sound(candidate) and not better(fallback_version, candidate.version):
            minutes = served_for(candidate, now).total_seconds() / 60
            why = (f"degraded ({summary}); v{candidate.version} served {minutes:.0f} min (< the {policy.stability_window_minutes:g}-min stability "
                   f"window) and is measured healthy on the window ({scores[candidate.version]:.1%}), no worse than the fallback")
            return _rollback(candidate, why, fallback_version, judged)
    if fallback is not None and fallback.meets_bar is False and not windowed:
        # a fallback known to be weak, and nothing measured: any version that served without an incident beats it
        if recent:
            why = (f"degraded ({summary}); the fallback v{fallback.version} misses its bar against the primary, so v{recent[0].version}, "
                   "which served before without an incident, is preferred even short of the stability window")
            return _rollback(recent[0], why, fallback_version, judged)
    # nothing healthy to return to: the best measured of what is left, the fallback, or what serves
    scored = [c for c in eligible if c.version in scores]
    best = max(scored, key=lambda c: scores[c.version], default=None)
    tried = ("; " + "; ".join(skipped)) if skipped else ""
    if best is not None and better(best.version, champion.version) and better(best.version, fallback_version):
        why = f"degraded ({summary}); no version meets its baseline{tried}; v{best.version} is measured best on the window ({scores[best.version]:.1%})"
        return _rollback(best, why, fallback_version, judged)
    if fallback is None:
        return RollbackDecision(DecisionKind.HOLD, f"degraded ({summary}); no version to return to and no fallback{tried}: serving unchanged, "
                                "escalate to a person", degraded=True, escalate=True, **judged)
    if fallback.version in unscorable or windowed and serving is not None and (
        fallback_score is None or not (better(fallback.version, champion.version) or latency_only and not better(champion.version, fallback.version))
    ):
        shown = "cannot be scored on the window" if fallback_score is None else f"is measured {fallback_score:.1%} against {serving:.1%} serving, within noise or worse"
        return RollbackDecision(
            DecisionKind.HOLD,
            f"degraded ({summary}); no version to return to{tried}, and the fallback v{fallback.version} {shown}: serving unchanged, escalate to a person",
            degraded=True, escalate=True, fallback_version=fallback_version, **judged,
        )
    measured_note = f" (measured {fallback_score:.1%} against {serving:.1%} serving)" if fallback_score is not None and serving is not None else ""
    return RollbackDecision(
        DecisionKind.FALLBACK, f"degraded ({summary}); no stable version to return to{tried}: the fallback v{fallback.version}{measured_note}",
        degraded=True, fallback_version=fallback_version, **judged,
    )


def _rollback(target: Candidate, reason: str, fallback_version: str | None, judged: dict, *, fallback_next: bool = True) -> RollbackDecision:
    return RollbackDecision(
        DecisionKind.ROLLBACK, reason, target.version, degraded=True, fallback_version=fallback_version, fallback_next=fallback_next, **judged
    )


def _leave_the_fallback(
    champion: Candidate, candidates: Sequence[Candidate], policy: RollbackPolicy, now: datetime,
    measured: Mapping[str, LiveWindow], scores: Mapping[str, float], better: Callable[[str | None, str | None], bool],
) -> RollbackDecision:
    """The fallback model serves (a stopgap): go back to a version measured healthy on the window and not measured worse
    than it (within noise, the real version wins)."""
    serving = scores.get(champion.version)
    window = timedelta(minutes=policy.stability_window_minutes)
    eligible = eligible_versions(candidates, champion.version)
    ordered = by_preference([c for c in eligible if served_for(c, now) >= window], policy) + sorted(
        [c for c in eligible if served_for(c, now) < window], key=lambda c: c.served_until or c.served_from, reverse=True
    )
    for candidate in ordered:
        window_of = measured.get(candidate.version)
        if window_of is not None and _passes(candidate, window_of, candidates, policy) and not better(champion.version, candidate.version):
            return RollbackDecision(
                DecisionKind.ROLLBACK,
                f"the fallback v{champion.version} serves as a stopgap ({_pct(serving)}); v{candidate.version} is measured healthy on the window "
                f"({scores[candidate.version]:.1%})",
                candidate.version, degraded=True, fallback_version=champion.version, fallback_next=False, measured=_shown(scores),
            )
    looked = ", ".join(f"v{c.version} {_pct(scores.get(c.version))}" for c in ordered) or "no version served before"
    return RollbackDecision(
        DecisionKind.HOLD,
        f"the fallback v{champion.version} serves as a stopgap ({_pct(serving)}); no version is measured healthy on the window yet ({looked}): "
        "it stays until one is, or a retrain passes the gate",
        degraded=True, fallback_version=champion.version, measured=_shown(scores),
    )


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1%}"


def candidates_from_registry(registry, audit=None) -> tuple[Candidate | None, list[Candidate], datetime | None]:
    """Champion, every version with its latest serving interval, and the last
    rollback time, from the registry's audit (MLflow keeps no alias history).

    Versions tagged `crisis.role=fallback` are marked `fallback`, so the
    decision never picks them as a ROLLBACK target; the champion is found
    among all versions (after a FALLBACK recovery it is the fallback model).

    Args:
        registry: a `ModelRegistry`.
        audit: the incident's `AuditSnapshot`; the audit is read when not given.
    """
    served_from: dict[str, datetime] = {}
    served_until: dict[str, datetime] = {}
    incident: set[str] = set()
    last_rollback_at = None
    trail = audit.of_alias(registry.champion_alias) if audit is not None else registry.audit_trail(registry.champion_alias)
    for move in trail:
        if not move.applied:
            continue
        if move.from_version:
            served_until[move.from_version] = move.at
            if move.incident:
                incident.add(move.from_version)
        if move.to_version:
            served_from[move.to_version] = move.at
            served_until.pop(move.to_version, None)
        if AliasAction(move.action).is_recovery:
            last_rollback_at = move.at
    promoted_over = promotions_over(trail)
    versions = registry.versions()
    candidates = [
        Candidate(
            version=info.version,
            served_from=served_from.get(info.version),
            served_until=served_until.get(info.version),
            metrics=dict(info.metrics),
            incident=info.version in incident,
            retired=info.retired,
            fallback=info.is_fallback,
            promoted_over=promoted_over.get(info.version),
            holds_fallback_alias=registry.fallback_alias in info.aliases,
            meets_bar={"true": True, "false": False}.get(info.tags.get(TagKey.FALLBACK_MEETS_BAR, "")),
        )
        for info in versions
    ]
    champion = next((c for c, info in zip(candidates, versions) if registry.champion_alias in info.aliases), None)
    return champion, candidates, last_rollback_at

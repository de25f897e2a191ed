"""Decide a rollback (seed slides 3 and 13), as a plain function over values.

The seed's rule fired when accuracy did *not* drop (it compared a relative
change with `> -0.05`) and its target was the best accuracy ever seen, however
stale. Here: a metric is degraded only when the live window's confidence bound
says so with enough samples, and the target is the most recent version that
served through a whole stability window without an incident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy import stats

from prefect_crisis.blocks.rollback_policy import METRICS, MetricRule, RollbackPolicy
from prefect_crisis.core.vocabulary import AliasAction, AuditOutcome, DecisionKind, MetricKind, Severity


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
    kind: DecisionKind
    reason: str
    target_version: str | None = None
    violations: tuple[Violation, ...] = ()
    undecided: tuple[str, ...] = ()
    not_measured: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "decision": self.kind.value,
            "reason": self.reason,
            "target_version": self.target_version,
            "violations": [str(v) for v in self.violations],
            "undecided": list(self.undecided),
            "not_measured": list(self.not_measured),
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


def judge_rules(live: LiveWindow, baseline: dict[str, float], policy: RollbackPolicy) -> RuleResults:
    """Judge every rule; a rule that cannot be judged is named in `undecided`.

    A latency rule with no latency samples at all is `not_measured` (latency
    is not collected), which does not stand in the way of a HOLD.

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
        if samples < rule.min_samples:
            undecided.append(f"{rule.metric}: {samples} samples < {rule.min_samples}")
            continue
        violation = check_rule(rule, live, reference, policy.confidence)
        if violation:
            violations.append(violation)
    return RuleResults(tuple(violations), tuple(undecided), tuple(not_measured))


def stable_versions(candidates: Sequence[Candidate], current: str | None, now: datetime, window: timedelta) -> list[Candidate]:
    """Versions that served at least `window` without an incident, not retired, not the fallback model, not the current one.

    The fallback model may have served a long while (after a FALLBACK recovery)
    and still is no place to roll back to: it is the last resort, not a version.
    """
    stable = []
    for candidate in candidates:
        if candidate.version == current or candidate.retired or candidate.fallback or candidate.incident or candidate.served_from is None:
            continue
        until = candidate.served_until or now
        if until - candidate.served_from >= window:
            stable.append(candidate)
    return stable


def choose_target(stable: Sequence[Candidate], policy: RollbackPolicy) -> Candidate | None:
    if not stable:
        return None
    if policy.prefer == "best-metric" and policy.rules:
        rule = policy.rules[0]
        scored = [(c, score) for c in stable if (score := baseline_value(rule.metric, c.metrics)) is not None]
        if scored:
            sign = 1 if rule.higher_is_better else -1
            return max(scored, key=lambda pair: sign * pair[1])[0]
    return max(stable, key=lambda c: c.served_until or c.served_from)


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
) -> RollbackDecision:
    """HOLD, ROLLBACK(target), FALLBACK (no stable version) or INCONCLUSIVE (a
    rule cannot be judged: too few samples, no baseline, metric not reported).

    Args:
        live: the live window of the current champion.
        champion: the current champion; its metrics, none looser than the version it was promoted over
            (`promotion_guarded`), are the baseline unless `baseline` is given.
        candidates: every registered version, with its serving history.
        now: the decision's clock (injected; tests pass fixed times).
        last_rollback_at: the last rollback of this model, for the cool-down.
    """
    if baseline is None:
        replaced = next((c.metrics for c in candidates if c.version == champion.promoted_over), None)
        baseline = promotion_guarded(champion.metrics, replaced)
    results = judge_rules(live, baseline, policy)
    violations, undecided = results.violations, results.undecided
    judged = {"violations": violations, "undecided": undecided, "not_measured": results.not_measured}
    unmeasured = f"; not measured: {', '.join(results.not_measured)}" if results.not_measured else ""
    if not violations:
        if undecided:
            return RollbackDecision(
                DecisionKind.INCONCLUSIVE, "cannot tell: " + "; ".join(undecided) + unmeasured + " (escalate to a person)",
                undecided=undecided, not_measured=results.not_measured,
            )
        return RollbackDecision(DecisionKind.HOLD, "no metric is worse than its tolerance allows" + unmeasured, not_measured=results.not_measured)
    if last_rollback_at is not None and severity is not Severity.EMERGENCY:
        cooldown = timedelta(minutes=policy.cooldown_minutes)
        if now - last_rollback_at < cooldown:
            return RollbackDecision(
                DecisionKind.HOLD, f"cool-down: last rollback at {last_rollback_at.isoformat()}, within {policy.cooldown_minutes:g} min", **judged
            )
    stable = stable_versions(candidates, champion.version, now, timedelta(minutes=policy.stability_window_minutes))
    target = choose_target(stable, policy)
    summary = "; ".join(str(v) for v in violations)
    if target is None:
        return RollbackDecision(DecisionKind.FALLBACK, f"degraded ({summary}) and no stable version to return to", **judged)
    return RollbackDecision(DecisionKind.ROLLBACK, f"degraded ({summary}); v{target.version} served stably", target.version, **judged)


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
        )
        for info in versions
    ]
    champion = next((c for c, info in zip(candidates, versions) if registry.champion_alias in info.aliases), None)
    return champion, candidates, last_rollback_at

"""The registered versions as a response sees them: their serving history, their baselines, and which of them
a rollback may go to; plain values built from the registry's versions and its audit, read once by the caller.

Nothing here imports Prefect or MLflow: versions and audit rows are read by their fields (`VersionInfo`,
`AliasMove` of `prefect_crisis.blocks`, or any value shaped like them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prefect_crisis.core.errors import IncidentError
from prefect_crisis.core.metrics import METRICS
from prefect_crisis.core.vocabulary import AliasAction, AuditOutcome, MetricKind, TagKey
from prefect_crisis.tasks.response.rules import baseline_value

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import AliasMove, VersionInfo
    from prefect_crisis.blocks.rollback_policy import RollbackPolicy


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
class ServingHistory:
    """One read of the registry for a response: the champion, every version as a `Candidate`, the last rollback, and
    the features any version reads. The response's steps (measure, decide, verify) share it instead of reading again."""

    champion: Candidate | None
    candidates: tuple[Candidate, ...]
    last_rollback_at: datetime | None
    features: tuple[str, ...] = ()


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


def promotions_over(trail: Iterable[AliasMove]) -> dict[str, str | None]:
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


def guarded_baseline(candidate: Candidate, candidates: Sequence[Candidate]) -> dict[str, float]:
    """A version's baseline: its registered rates, none looser than those of the version it was promoted over."""
    replaced = next((c.metrics for c in candidates if c.version == candidate.promoted_over), None)
    return promotion_guarded(candidate.metrics, replaced)


def eligible_versions(candidates: Sequence[Candidate], current: str | None) -> list[Candidate]:
    """Versions a rollback may go to: served before, not implicated in an incident, not retired, not the fallback
    model, not the current one."""
    return [
        candidate
        for candidate in candidates
        if candidate.version != current and not (candidate.retired or candidate.fallback or candidate.incident) and candidate.served_from is not None
    ]


def served_for(candidate: Candidate, now: datetime) -> timedelta:
    return (candidate.served_until or now) - candidate.served_from if candidate.served_from else timedelta(0)


def last_served(candidate: Candidate) -> datetime:
    """When the version last served: when it stopped serving, else when it started (the recency order of served versions).

    Raises:
        IncidentError: it never served (only served versions are ordered by recency: `eligible_versions`).
    """
    moment = candidate.served_until or candidate.served_from
    if moment is None:
        raise IncidentError(f"v{candidate.version} never served: it has no place among the served versions")
    return moment


def by_preference(stable: Sequence[Candidate], policy: RollbackPolicy) -> list[Candidate]:
    """Stable versions in the policy's order of preference: the most recent first, or the best on the first rule's metric."""
    recent = sorted(stable, key=last_served, reverse=True)
    if policy.prefer == "best-metric" and policy.rules:
        rule = policy.rules[0]
        sign = 1 if rule.higher_is_better else -1
        scored = [(value, c) for c in recent if (value := baseline_value(rule.metric, c.metrics)) is not None]
        unscored = [c for c in recent if baseline_value(rule.metric, c.metrics) is None]
        return [c for _, c in sorted(scored, key=lambda pair: -sign * pair[0])] + unscored
    return recent


def features_of(versions: Iterable[VersionInfo]) -> tuple[str, ...]:
    """Every feature any version reads (their `crisis.features` tags), in the order first seen.

    Example:
        >>> from types import SimpleNamespace as Version
        >>> features_of([Version(tags={"crisis.features": "a,b"}), Version(tags={"crisis.features": "b,c"}), Version(tags={})])
        ('a', 'b', 'c')
    """
    found: dict[str, None] = {}
    for info in versions:
        for name in info.tags.get(TagKey.FEATURES, "").split(","):
            if name:
                found[name] = None
    return tuple(found)


def serving_history(trail: Iterable[AliasMove], versions: Sequence[VersionInfo], champion_alias: str, fallback_alias: str) -> ServingHistory:
    """Champion, every version with its latest serving interval, and the last rollback time, from the champion alias's
    audit trail (MLflow keeps no alias history) and the versions read with it.

    Versions tagged `crisis.role=fallback` are marked `fallback`, so the decision never picks them as a ROLLBACK
    target; the champion is found among all versions (after a FALLBACK recovery it is the fallback model).
    """
    served_from: dict[str, datetime] = {}
    served_until: dict[str, datetime] = {}
    incident: set[str] = set()
    last_rollback_at = None
    trail = list(trail)
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
            holds_fallback_alias=fallback_alias in info.aliases,
            meets_bar={"true": True, "false": False}.get(info.tags.get(TagKey.FALLBACK_MEETS_BAR, "")),
        )
        for info in versions
    ]
    champion = next((c for c, info in zip(candidates, versions, strict=True) if champion_alias in info.aliases), None)
    return ServingHistory(champion, tuple(candidates), last_rollback_at, features_of(versions))

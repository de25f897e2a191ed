"""Execute recovery (seed slide 5): a strategy per violation, verify, escalate.

Each violation type has an ordered list of strategies. After each action the
new champion is verified on the recent labelled window; when it does not meet
the policy the next strategy is tried, and when none is left
`ml.recovery.failed` is emitted (the emergency automation listens to it).
Every action is idempotent for one incident: the registry's audit records the
incident id, and a second run for the same incident changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, AliasAction, CrisisEvent, DecisionKind, Strategy, ViolationType
from prefect_crisis.tasks.response.candidates import Candidate, guarded_baseline
from prefect_crisis.tasks.response.rollback import RollbackDecision
from prefect_crisis.tasks.response.rules import LiveWindow, judge_rules

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import AliasMove, AuditSnapshot, ModelRegistry, VersionInfo
    from prefect_crisis.blocks.rollback_policy import RollbackPolicy
    from prefect_crisis.core.timeline import Incident, Timeline

STRATEGIES: dict[ViolationType, tuple[Strategy, ...]] = {
    ViolationType.QUALITY: (Strategy.ROLLBACK, Strategy.FALLBACK),
    ViolationType.LATENCY: (Strategy.FALLBACK,),
    ViolationType.ERRORS: (Strategy.ROLLBACK, Strategy.FALLBACK),
    ViolationType.DATA_INTEGRITY: (Strategy.STOP_TRAINING,),
}


@dataclass(frozen=True)
class Verification:
    passed: bool
    detail: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """The accuracy measured on the window; None when the verification measured none."""
        return self.metrics.get("accuracy")


@dataclass(frozen=True)
class Attempt:
    strategy: Strategy
    version: str | None
    verification: Verification | None
    note: str = ""


@dataclass(frozen=True)
class RecoveryOutcome:
    incident: str
    recovered: bool
    already_handled: bool
    champion_before: str | None
    champion_after: str | None
    attempts: tuple[Attempt, ...] = ()

    def to_dict(self) -> dict:
        return {
            "incident": self.incident,
            "recovered": self.recovered,
            "already_handled": self.already_handled,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "attempts": [
                {
                    "strategy": a.strategy.value,
                    "version": a.version,
                    "verified": None if a.verification is None else a.verification.passed,
                    "detail": a.note or (a.verification.detail if a.verification else ""),
                }
                for a in self.attempts
            ],
        }


def already_handled(registry: ModelRegistry, incident: str, audit: AuditSnapshot | None = None) -> bool:
    """True when an alias move for this incident is already in the audit (or the snapshot of it given)."""
    return (audit if audit is not None else registry.audit_snapshot()).handled(incident)


def verify_on_window(
    version: str,
    live: LiveWindow,
    candidates: Sequence[Candidate],
    policy: RollbackPolicy,
    before: Verification | None = None,
    *,
    min_samples_cap: int | None = None,
) -> Verification:
    """Verification of `version` from its measurements on the incident's window (`live`), against its *own* baseline
    (none looser than the version it was promoted over). A rule that cannot be judged (too few rows, no baseline) does
    not verify: unknown is not recovered. The fallback model, a stopgap, verifies when it is measured no worse than
    what served before (`before`).

    Example:
        >>> from prefect_crisis.blocks.rollback_policy import RollbackPolicy
        >>> good = Candidate("2", None, None, {"accuracy": 0.9})
        >>> verify_on_window("2", LiveWindow({"accuracy": 270}, {"accuracy": 300}), [good], RollbackPolicy()).passed
        True
        >>> verify_on_window("2", LiveWindow({"accuracy": 5}, {"accuracy": 5}), [good], RollbackPolicy()).passed
        False
    """
    accuracy = live.successes.get("accuracy", 0) / max(live.samples.get("accuracy", 0), 1)
    by_version = {c.version: c for c in candidates}
    candidate = by_version.get(version)
    if candidate is not None and candidate.fallback:
        before_accuracy = None if before is None else before.accuracy
        passed = before_accuracy is None or accuracy >= before_accuracy
        compared = "" if before_accuracy is None else f" against {before_accuracy:.4f} serving before"
        return Verification(passed, f"fallback v{version} accuracy {accuracy:.4f} on the window{compared} (a stopgap)", {"accuracy": accuracy})
    baseline = guarded_baseline(candidate, candidates) if candidate is not None else {}
    judged = judge_rules(live, baseline, policy, min_samples_cap=min_samples_cap)
    failing = [str(v) for v in judged.violations] + list(judged.undecided)  # a rule that cannot be judged does not verify
    detail = f"v{version} accuracy {accuracy:.4f} on the window against its own baseline" + (f"; still failing: {failing}" if failing else "")
    if judged.not_measured:
        detail += f"; not measured: {', '.join(judged.not_measured)}"
    return Verification(not failing, detail, {"accuracy": accuracy})


def plan_of(decision: RollbackDecision, violation: ViolationType) -> list[tuple[Strategy, str | None]]:
    """The moves the decision asks for, in order, limited to the violation's strategies: the rollback target first, then the
    fallback when the decision allows it next (the target may fail verification); a FALLBACK decision: the fallback only.

    Example:
        >>> plan_of(RollbackDecision(DecisionKind.ROLLBACK, "degraded", "1", fallback_version="4", fallback_next=True), ViolationType.QUALITY)
        [(<Strategy.ROLLBACK: 'rollback'>, '1'), (<Strategy.FALLBACK: 'fallback'>, '4')]
        >>> plan_of(RollbackDecision(DecisionKind.ROLLBACK, "degraded", "1", fallback_version="4"), ViolationType.LATENCY)
        [(<Strategy.FALLBACK: 'fallback'>, '4')]
    """
    allowed = STRATEGIES[violation]
    if Strategy.STOP_TRAINING in allowed:
        return [(Strategy.STOP_TRAINING, None)]
    plan: list[tuple[Strategy, str | None]] = []
    if decision.kind is DecisionKind.ROLLBACK and Strategy.ROLLBACK in allowed:
        plan.append((Strategy.ROLLBACK, decision.target_version))
    if Strategy.FALLBACK in allowed and (decision.kind is DecisionKind.FALLBACK or decision.fallback_next or Strategy.ROLLBACK not in allowed):
        plan.append((Strategy.FALLBACK, decision.fallback_version))
    if decision.kind is DecisionKind.FALLBACK and Strategy.ROLLBACK in allowed and not plan[:1] == [(Strategy.ROLLBACK, None)]:
        plan.insert(0, (Strategy.ROLLBACK, None))  # said as tried: there was no version to roll back to
    return plan


def execute_recovery(
    registry: ModelRegistry,
    decision: RollbackDecision,
    violation: ViolationType,
    incident: Incident | str,
    verify: Callable[[str], Verification],
    stop_training: Callable[[str], None],
    *,
    audit: AuditSnapshot | None = None,
    champion: VersionInfo | None = None,
    timeline: Timeline | None = None,
    emergency_in_force: Callable[[str], bool] = lambda model: False,
    before: Verification | None = None,
    skip_if_handled: bool = True,
    escalate: bool = True,
) -> RecoveryOutcome:
    """Carry out the decision's plan until a move verifies; when none does, keep the better state.

    Args:
        decision: the rollback decision: its target, and the fallback version (where FALLBACK goes).
        verify: evaluates a version on the recent labelled window against that version's own baseline (the
            fallback: against what served before); `metrics["accuracy"]` is compared to keep the better state.
        stop_training: raises the model's stop flag (DATA_INTEGRITY).
        audit: the incident's snapshot of the audit (read here when not given).
        champion: the champion the incident began with (read here when not given).
        timeline: where `ml.recovery.*` goes; the registry's timeline for the incident by default.
        emergency_in_force: whether the model's emergency stop is in force; `ml.recovery.succeeded` carries it as
            the `ml.model.emergency` label, so the ladder resolves an emergency and stays quiet after other recoveries.
        before: the champion measured on the same window before any move; when every move fails verification, the
            state measured best (before or after) is the one left serving.
        skip_if_handled: a second run for an incident that already moved an alias changes nothing (a later response
            of the same episode passes False: it acts on what serves now).
        escalate: a failed recovery emits `ml.recovery.failed` (the ladder's emergency step listens); the emergency step
            itself passes False, so its own failure does not start it again (its `ml.emergency.stopped` says so).
    """
    identifier = incident if isinstance(incident, str) else incident.id  # an Incident, or its id
    timeline = timeline or registry.timeline(incident)
    champion = champion if champion is not None else registry.champion()
    before_version = champion.version if champion else None
    if skip_if_handled and already_handled(registry, identifier, audit):
        return RecoveryOutcome(identifier, True, True, before_version, before_version)
    attempts: list[Attempt] = []
    serving: VersionInfo | None = champion
    after = before_version
    for strategy, target in plan_of(decision, violation):
        if strategy is Strategy.STOP_TRAINING:
            stop_training(f"incident {identifier}: {decision.reason}")
            attempts.append(Attempt(strategy, None, Verification(True, "stop flag raised"), "stop flag raised"))
            break
        if strategy is Strategy.FALLBACK and target is None:
            fallback = registry.version_by_alias(registry.fallback_alias)
            target = fallback.version if fallback else None
        if target is None:
            attempts.append(Attempt(strategy, None, None, f"no {strategy.value} target"))
            continue
        if target == after:
            attempts.append(Attempt(strategy, target, None, f"v{target} already serves"))
            continue
        try:
            move: AliasMove = registry.move_alias(
                registry.champion_alias, target, f"{strategy.value}: {decision.reason}", incident, action=AliasAction(strategy.value), current=serving
            )
        except RegistryError as error:
            attempts.append(Attempt(strategy, target, None, f"alias move refused: {error}"))
            continue
        after = move.to_version
        serving = None  # moved: the next strategy reads where the alias points
        verification = verify(target)
        attempts.append(Attempt(strategy, target, verification))
        if verification.passed:
            break
    recovered = bool(attempts) and attempts[-1].verification is not None and attempts[-1].verification.passed
    if not recovered and after != before_version:
        after = _keep_the_better(registry, incident, decision, before_version, before, attempts, after, timeline) or after
    outcome = RecoveryOutcome(identifier, recovered, False, before_version, after, tuple(attempts))
    labels = {EMERGENCY_LABEL: str(emergency_in_force(registry.model_name)).lower()} if recovered else None
    if not recovered and not escalate:
        return outcome
    timeline.emit(
        CrisisEvent.RECOVERY_SUCCEEDED if recovered else CrisisEvent.RECOVERY_FAILED,
        registry.model_name,
        {"violation": violation.value, **outcome.to_dict()},
        version=outcome.champion_after,
        labels=labels,
    )
    return outcome


def _keep_the_better(
    registry: ModelRegistry,
    incident: Incident | str,
    decision: RollbackDecision,
    before_version: str | None,
    before: Verification | None,
    attempts: list[Attempt],
    after: str | None,
    timeline: Timeline,
) -> str | None:
    """No move verified: leave serving whichever state measured best on the same window (before any move, or a
    move's target). Returns the version serving afterwards (None: unchanged)."""
    measured = [(before_version, before.accuracy if before else None)] + [(a.version, a.verification.accuracy) for a in attempts if a.verification]
    scored = [(version, value) for version, value in measured if version is not None and value is not None]
    if not scored:
        return None
    best, value = max(scored, key=lambda pair: pair[1])
    if best == after:
        return None
    shown = ", ".join(f"v{version} {score:.1%}" for version, score in scored)
    try:
        move = registry.move_alias(
            registry.champion_alias,
            best,
            f"keep the better state: no move verified; measured on the window {shown}",
            incident,
            action=AliasAction.ROLLBACK,
        )
    except RegistryError as error:
        attempts.append(Attempt(Strategy.ROLLBACK, best, None, f"keeping the better state v{best} refused: {error}"))
        return None
    attempts.append(
        Attempt(
            Strategy.ROLLBACK,
            best,
            Verification(False, f"kept the better state v{best} ({shown})", {"accuracy": value}),
            f"no move verified: kept the better state v{best} ({shown})",
        )
    )
    return move.to_version

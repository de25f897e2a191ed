"""Execute recovery (seed slide 5): a strategy per violation, verify, escalate.

Each violation type has an ordered list of strategies. After each action the
new champion is verified on the recent labelled window; when it does not meet
the policy the next strategy is tried, and when none is left
`ml.recovery.failed` is emitted (the emergency automation listens to it).
Every action is idempotent for one incident: the registry's audit records the
incident id, and a second run for the same incident changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prefect_crisis.blocks.registry import AliasMove, AuditSnapshot, ModelRegistry, VersionInfo, incident_id
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, AliasAction, CrisisEvent, DecisionKind, Strategy, ViolationType
from prefect_crisis.tasks.rollback import RollbackDecision


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
) -> RecoveryOutcome:
    """Run the violation's strategies in order until one verifies.

    Args:
        decision: the rollback decision; its target is the ROLLBACK strategy's version.
        verify: evaluates a version on the recent labelled window.
        stop_training: raises the model's stop flag (DATA_INTEGRITY).
        audit: the incident's snapshot of the audit (read here when not given).
        champion: the champion the incident began with (read here when not given).
        timeline: where `ml.recovery.*` goes; the registry's timeline for the incident by default.
        emergency_in_force: whether the model's emergency stop is in force; `ml.recovery.succeeded` carries it as
            the `ml.model.emergency` label, so the ladder resolves an emergency and stays quiet after other recoveries.
    """
    identifier = incident_id(incident)
    timeline = timeline or registry.timeline(incident)
    champion = champion if champion is not None else registry.champion()
    before = champion.version if champion else None
    if already_handled(registry, identifier, audit):
        return RecoveryOutcome(identifier, True, True, before, before)
    attempts: list[Attempt] = []
    serving: VersionInfo | None = champion
    after = before
    for strategy in STRATEGIES[violation]:
        if strategy is Strategy.STOP_TRAINING:
            stop_training(f"incident {identifier}: {decision.reason}")
            attempts.append(Attempt(strategy, None, Verification(True, "stop flag raised"), "stop flag raised"))
            break
        if strategy is Strategy.ROLLBACK:
            target = decision.target_version if decision.kind is DecisionKind.ROLLBACK else None
        else:
            fallback = registry.version_by_alias(registry.fallback_alias)
            target = fallback.version if fallback else None
        if target is None:
            attempts.append(Attempt(strategy, None, None, f"no {strategy.value} target"))
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
    outcome = RecoveryOutcome(identifier, recovered, False, before, after, tuple(attempts))
    labels = {EMERGENCY_LABEL: str(emergency_in_force(registry.model_name)).lower()} if recovered else None
    timeline.emit(
        CrisisEvent.RECOVERY_SUCCEEDED if recovered else CrisisEvent.RECOVERY_FAILED,
        registry.model_name,
        {"violation": violation.value, **outcome.to_dict()},
        version=outcome.champion_after,
        labels=labels,
    )
    return outcome

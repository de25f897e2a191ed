"""Crises the ladder escalates rather than repairs: a concept that changed under every version (the response holds
and the emergency step stops training, or the fallback, measured better, serves as a stopgap), and a health monitor
gone silent (the dead man's switch raises a diagnose-only warning once its window has passed)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_crisis.core.errors import DrillError
from prefect_crisis.core.prefect_compat import drain_events
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent, DecisionKind, Severity
from prefect_crisis.tasks.drills.end_state import EndState, FreshRows
from prefect_crisis.tasks.drills.injections import lift_emergency, serve_and_label, synthetic_champion, synthetic_rows
from prefect_crisis.tasks.drills.observe import applied_moves, champion_moves, first_event, incident_of, model_events, response_runs
from prefect_crisis.tasks.drills.scenario import ChampionState, Drill, Scenario, wait_until
from prefect_crisis.tasks.training.stop_flag import read_stop_flag

# -- concept-drift ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptDrift(Scenario[ChampionState]):
    def new_state(self) -> ChampionState:
        return ChampionState()

    def setup(self, drill: Drill[ChampionState]) -> None:
        synthetic_champion(drill)

    def inject(self, drill: Drill[ChampionState]) -> None:
        serve_and_label(drill, synthetic_rows(drill.seed + 600, drift=True), str(drill.seed + 600))

    def expect(self, drill: Drill[ChampionState]) -> None:
        """Every version learnt the old concept, so nothing is better than what serves but by the window's noise. The
        decision: the fallback only when measured better than what serves on the window, and then it serves as a stopgap
        (verified, no escalation); else the response holds, emits `ml.recovery.failed`, and the emergency step stops
        training and holds serving. Either way at most one move of the champion, and the end state is no worse than
        doing nothing (pre_accuracy here: the pre-crisis version on fresh rows of the new concept)."""
        registry, good, fallback = drill.model_registry, drill.state.good, drill.state.fallback
        injected_at = drill.fault_injected_at
        breach = wait_until(lambda: first_event(drill.model, [CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY], injected_at), drill.limit)
        if not drill.require(breach, f"the drift was not detected within {drill.limit:g} s"):
            return
        drill.detect_s = drill.since(breach.occurred)

        def settled():
            return first_event(drill.model, [CrisisEvent.EMERGENCY_STOPPED], injected_at) or applied_moves(
                registry, AliasAction.FALLBACK, injected_at
            )

        if not drill.require(wait_until(settled, drill.limit), f"neither a stopgap nor an emergency stop within {drill.limit:g} s"):
            return
        moves = champion_moves(registry, injected_at)
        drill.require(len(moves) <= 1, f"{len(moves)} champion moves: a storm")
        decisions = [event.payload for event in model_events(drill.model, [CrisisEvent.DECISION_TAKEN], injected_at)]
        chosen = next(
            (decision for decision in decisions if decision.get("decision") == DecisionKind.FALLBACK.value), decisions[0] if decisions else {}
        )
        measured = chosen.get("measured_accuracy", {})
        drill.facts.update(champion_moves=len(moves), measured_on_window=measured)
        stopgap = [move for move in moves if move.action == AliasAction.FALLBACK]
        if stopgap:
            drill.facts["response"] = "stopgap"
            drill.mitigate_s = drill.since(stopgap[0].at)
            drill.incident = stopgap[0].incident
            drill.require(stopgap[0].to_version == fallback, f"the stopgap is v{stopgap[0].to_version}, not the fallback v{fallback}")
            drill.require(
                measured.get(fallback, 0.0) > measured.get(good, 1.0), f"the fallback serves though not measured better on the window ({measured})"
            )
            return
        drill.facts["response"] = "held"
        failed = first_event(drill.model, [CrisisEvent.RECOVERY_FAILED], injected_at)
        drill.require(failed, "the response held without emitting ml.recovery.failed")
        stopped = first_event(drill.model, [CrisisEvent.EMERGENCY_STOPPED], injected_at)
        if drill.require(stopped, "the ladder did not escalate to the emergency stop"):
            drill.mitigate_s = drill.since(stopped.occurred)
            drill.incident = incident_of(stopped)
        champion = registry.champion()
        drill.require(
            not moves and champion is not None and champion.version == good, f"the champion moved from v{good} with nothing measured better"
        )
        drill.require(read_stop_flag(drill.model), "training was not stopped while the concept changed")

    def clean_up(self, drill: Drill[ChampionState]) -> None:
        lift_emergency(drill)


# -- monitor-silent -----------------------------------------------------------------------


@dataclass
class Silent(ChampionState):
    """The dead man's window deployed on the server (seconds)."""

    window: float = 0.0


def dead_man_window() -> float:
    """The deployed dead man's window: the `crisis-monitor-silent` automation's `within` (seconds).

    Raises:
        StackError: the automation is not on the server.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import EventTrigger

    from prefect_crisis.blocks.escalation_policy import LadderStep
    from prefect_crisis.core.errors import StackError

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(LadderStep.MONITOR_SILENT.automation_name)
    if not found:
        raise StackError("the crisis-monitor-silent automation is not on the server: run `crisis deploy`")
    trigger = found[0].trigger
    if not isinstance(trigger, EventTrigger):  # the ladder deploys it as one; a hand-edited automation may not be
        raise StackError(
            f"the crisis-monitor-silent automation on the server has a {trigger.type} trigger, not an event trigger: run `crisis deploy`"
        )
    return trigger.within.total_seconds()


@dataclass(frozen=True)
class MonitorSilent(Scenario[Silent]):
    def new_state(self) -> Silent:
        return Silent()

    def setup(self, drill: Drill[Silent]) -> None:
        synthetic_champion(drill)
        drill.state.window = dead_man_window()

    def inject(self, drill: Drill[Silent]) -> None:
        Timeline().emit(CrisisEvent.HEALTH_REPORTED, drill.model, {"breaches": 0, "drill": True})
        drain_events()
        drill.inject_now()  # its last report: from now on the monitor is silent

    def expect(self, drill: Drill[Silent]) -> None:
        window = drill.state.window
        injected_at = drill.fault_injected_at
        runs = wait_until(lambda: response_runs(drill.model, injected_at), window + drill.limit, every=1.0)
        if not drill.require(runs, f"no warning response within {window + drill.limit:g} s of the last health report (window {window:g} s)"):
            return
        run = runs[-1]
        detected = drill.detect_s = drill.mitigate_s = drill.since(run.created)
        if detected is None:
            raise DrillError(f"the warning response {run.id} has no creation time on the server")
        drill.require(detected >= window - 1, f"the warning came {detected:.1f} s after the last report, before the {window:g} s window")
        drill.require(
            (run.parameters.get("severity"), run.parameters.get("diagnose_only")) == (Severity.WARNING.value, True),
            f"the silent monitor started a {run.parameters.get('severity')} response, not a diagnose-only warning",
        )
        drill.facts["window_s"] = window


SCENARIOS = (
    ConceptDrift(
        "concept-drift",
        "live traffic whose labels follow a new concept: every version is wrong, so nothing is better; "
        "detected, the response holds and the emergency step stops training (or the fallback, measured better, is a stopgap)",
        limit=120,
        end=EndState(FreshRows.DRIFTED),
    ),
    MonitorSilent(
        "monitor-silent",
        "a model's health monitor stops reporting: the dead man's switch raises a diagnose-only warning once its window has passed",
        limit=60,
        end=EndState(FreshRows.SYNTHETIC, warnings_only=True),
    ),
)

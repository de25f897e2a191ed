"""What the stack did, read back from Prefect events and flow runs and the MLflow audit: when the system noticed,
when it repaired, which incident recorded it, the processes that run a flow run, and the end state a drill is judged
on (the judgement itself is tasks/drills/end_state.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent

from prefect_crisis.blocks.registry import AliasMove, ModelRegistry
from prefect_crisis.core.errors import IncidentError
from prefect_crisis.core.prefect_compat import drain_events
from prefect_crisis.core.timeline import prefect_datetime
from prefect_crisis.core.vocabulary import INCIDENT_RESOURCE, INCIDENT_ROLE, MODEL_RESOURCE, AliasAction, CrisisEvent
from prefect_crisis.tasks.drills.catalogue import FRESH_ROWS
from prefect_crisis.tasks.drills.end_state import EndState, FreshRows, MeasuredAccuracy, judge_accuracy, judge_incidents, judge_rows_lost
from prefect_crisis.tasks.drills.injections import real_stack, synthetic_rows
from prefect_crisis.tasks.drills.real_models import serving_accuracy, version_accuracy
from prefect_crisis.tasks.drills.scenario import Drill, wait_until
from prefect_crisis.tasks.response.report import read_events, wait_for_incident_end
from prefect_crisis.tasks.training.checkpoints import training_experiment

TIMELINE_STEPS = ("incident.opened", "decision.taken", "model.rolled-back", "recovery.succeeded")
INCIDENTS_SETTLE = 20.0  # seconds for the incidents a drill saw to reach the server's event store


# -- events -----------------------------------------------------------------------------


def model_events(model: str, names: Iterable[CrisisEvent], since: datetime) -> list[ReceivedEvent]:
    """The model's events of these names since `since`, oldest first."""
    return read_events(
        EventFilter(
            occurred=EventOccurredFilter(
                since=prefect_datetime(since - timedelta(seconds=1)), until=prefect_datetime(datetime.now(UTC) + timedelta(minutes=1))
            ),
            event=EventNameFilter(name=[name.value for name in names]),
            resource=EventResourceFilter(id=[f"{MODEL_RESOURCE}{model}"]),
        )
    )


def first_event(model: str, names: Iterable[CrisisEvent], since: datetime) -> ReceivedEvent | None:
    found = [event for event in model_events(model, names, since) if event.occurred >= since]
    return found[0] if found else None


def incidents_opened(model: str, since: datetime) -> list[ReceivedEvent]:
    """The model's `ml.incident.opened` events since `since`: a response that joins the open incident emits
    `ml.incident.joined` instead, so this counts the incidents of the episode."""
    return [event for event in model_events(model, [CrisisEvent.INCIDENT_OPENED], since) if event.occurred >= since]


def incident_of(event: ReceivedEvent) -> str | None:
    """The incident an event belongs to (its related `ml.incident.<id>` resource)."""
    return next((r.id.removeprefix(INCIDENT_RESOURCE) for r in event.related if r.role == INCIDENT_ROLE), None)


# -- the registry -----------------------------------------------------------------------


def champion_moves(registry: ModelRegistry, since: datetime) -> list[AliasMove]:
    """Every applied move of the champion alias at or after `since`, whatever its action, oldest first."""
    return [move for move in registry.audit_trail(registry.champion_alias) if move.applied and move.at >= since]


def applied_moves(registry: ModelRegistry, action: AliasAction, since: datetime) -> list[AliasMove]:
    """The champion's applied moves of `action` at or after `since`, oldest first."""
    return [move for move in registry.audit_trail(registry.champion_alias) if move.action == action and move.applied and move.at >= since]


def training_runs(registry: ModelRegistry) -> list:
    """The model's MLflow training runs, oldest first."""
    client = registry.client
    return client.search_runs([training_experiment(client, registry.model_name)], order_by=["attributes.start_time ASC"])


# -- flow runs and processes ------------------------------------------------------------


def ladder_runs(model: str, since: datetime, deployment: str = "crisis-response") -> list:
    """The runs of a ladder deployment (crisis-response, emergency-stop) for `model` created since `since`, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterExpectedStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=prefect_datetime(since - timedelta(seconds=5)))),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
    return [run for run in runs if run.parameters.get("model_name") == model]


def response_runs(model: str, since: datetime) -> list:
    """The crisis-response runs of `model` created since `since` (newest first: a busy stack has many)."""
    return ladder_runs(model, since)


def flow_run_ended(flow_run_id: str) -> Any:
    """The flow run once it is over (its state final), else None."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run if run.state is not None and run.state.is_final() else None


def flow_run_processes(flow_run_id: str) -> list:
    """This machine's processes that run the flow run (a worker gives them `PREFECT__FLOW_RUN_ID`), children last."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return sorted(found, key=lambda process: len(process.parents()) if process.is_running() else 0)


# -- the incident and the end state -----------------------------------------------------


def check_timeline(drill: Drill[Any], incident: str | None, steps: tuple[str, ...] = TIMELINE_STEPS) -> None:
    """The incident's timeline is complete (its steps reached the server) and it is marked as a drill."""
    if not drill.require(incident, "no incident recorded the response"):
        return
    drill.incident = incident
    try:
        report = wait_for_incident_end(incident, timeout=20)  # its recovery outcome on the server: the steps before it are too
    except IncidentError as error:
        drill.failures.append(f"incident {incident}: {error}")
        return
    seen = {step.step for step in report.steps}
    missing = [step for step in steps if step not in seen]
    drill.require(not missing, f"incident {incident}'s timeline lacks {', '.join(missing)}")
    drill.require(report.incident.get("drill"), f"incident {incident} is not marked as a drill")


def fresh_rows(drill: Drill[Any], fresh: FreshRows) -> pd.DataFrame:
    """The fresh labelled rows the end state is measured on (the response never saw them)."""
    if fresh is FreshRows.REAL:
        return real_stack(drill).fresh()
    return synthetic_rows(drill.seed + 900, FRESH_ROWS, drift=fresh is FreshRows.DRIFTED)


def check_end_state(drill: Drill[Any], end: EndState) -> None:
    """Read the end state from the stack and judge it (`EndState`): `pre_accuracy`, `end_accuracy` and `incidents` in the facts."""
    injected_at = drill.injected_at
    if not drill.require(injected_at, "the fault was never injected: no end state to judge"):
        return
    fewest, _ = end.incidents

    def counted() -> tuple[list[ReceivedEvent]] | None:  # the server persists events in batches: wait for the incidents the drill already knows of
        opened = incidents_opened(drill.model, injected_at)
        known = drill.incident is None or drill.incident in {incident_of(event) for event in opened}
        return (opened,) if len(opened) >= fewest and known else None  # a tuple: none opened is an answer too

    drain_events()
    settled = wait_until(counted, INCIDENTS_SETTLE)
    opened = settled[0] if settled else incidents_opened(drill.model, injected_at)
    judge_incidents(drill, end, [str(event.payload.get("severity")) for event in opened])
    measured = None
    if end.fresh is not None:
        rows = fresh_rows(drill, end.fresh)
        good = drill.state.good
        before = version_accuracy(drill.model_registry, good, rows)
        version, after = serving_accuracy(drill.model_registry, rows)
        measured = MeasuredAccuracy(good, before, version, after, len(rows))
    judge_accuracy(drill, end, measured)
    judge_rows_lost(drill)

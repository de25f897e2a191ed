"""Rebuild an incident's timeline from Prefect events and the MLflow audit.

Events of an incident carry the related resource `ml.incident.<id>`; the
registry's audit rows carry the incident id as a tag. One line per step:
when, what acted (a flow run, an automation, or a person outside any run),
what came out; and the durations that matter: time to detect (first symptom
-> incident opened), to decide (opened -> decision taken) and to recover
(opened -> recovery verified).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventIDFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.errors import IncidentError
from prefect_crisis.core.timeline import prefect_datetime
from prefect_crisis.core.vocabulary import INCIDENT_RESOURCE, MODEL_NAME_LABEL, MODEL_RESOURCE, CrisisEvent
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

EVENT_NAMESPACE = INCIDENT_RESOURCE.partition(".")[0] + "."  # the namespace of every event prefect-crisis emits, cut from a step's name

LOOK_BACK = timedelta(days=30)
BREACHES = (CrisisEvent.BREACH_WARNING, CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY)
OUTCOMES = {
    CrisisEvent.INCIDENT_OPENED: lambda p: f"{p.get('severity')} {p.get('violation')}" + (" (drill)" if p.get("drill") else ""),
    CrisisEvent.INCIDENT_JOINED: lambda p: f"{p.get('severity')} breach joined the open incident (it stood {p.get('episode_state')})",
    CrisisEvent.DIAGNOSIS_DONE: lambda p: (
        f"error rate {p.get('error_rate', 0):.2%}; " + ("; ".join(p.get("top_findings") or []) or "no recommendation")
    ),
    CrisisEvent.DECISION_TAKEN: lambda p: (
        f"{p.get('decision')}" + (f" to v{p['target_version']}" if p.get("target_version") else "") + f": {p.get('reason', '')}"
    ),
    CrisisEvent.MODEL_ROLLED_BACK: lambda p: f"{p.get('alias')} v{p.get('from_version')} -> v{p.get('to_version')}",
    CrisisEvent.FALLBACK_ENGAGED: lambda p: f"{p.get('alias')} v{p.get('from_version')} -> fallback v{p.get('to_version')}",
    CrisisEvent.RECOVERY_SUCCEEDED: lambda p: f"verified: champion v{p.get('champion_before')} -> v{p.get('champion_after')}",
    CrisisEvent.RECOVERY_FAILED: lambda p: "not recovered: " + ("; ".join(a.get("detail", "") for a in p.get("attempts", [])) or p.get("reason", "")),
}


@dataclass(frozen=True)
class Step:
    at: datetime
    step: str
    actor: str
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "step": self.step, "actor": self.actor, "outcome": self.outcome}


@dataclass(frozen=True)
class IncidentReport:
    incident: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    time_to_detect: timedelta | None = None
    time_to_decide: timedelta | None = None
    time_to_recover: timedelta | None = None

    def to_dict(self) -> dict[str, Any]:
        def seconds(value: timedelta | None) -> float | None:
            return None if value is None else round(value.total_seconds(), 3)

        return {
            "incident": self.incident,
            "steps": [step.to_dict() for step in self.steps],
            "time_to_detect_s": seconds(self.time_to_detect),
            "time_to_decide_s": seconds(self.time_to_decide),
            "time_to_recover_s": seconds(self.time_to_recover),
        }

    def lines(self) -> list[str]:
        def took(value: timedelta | None) -> str:
            return "n/a" if value is None else f"{value.total_seconds():.1f}s"

        head = self.incident
        lines = [
            f"incident {head['id']} of {head['model']}: {head['severity']} {head['violation']}, opened {head['opened_at']}"
            + (" (drill)" if head.get("drill") else "")
        ]
        lines += [f"  {step.at:%H:%M:%S.%f}"[:-3] + f"  {step.step:<22} {step.actor:<32} {step.outcome}" for step in self.steps]
        lines.append(f"  time to detect {took(self.time_to_detect)}, to decide {took(self.time_to_decide)}, to recover {took(self.time_to_recover)}")
        return lines


def read_events(event_filter: EventFilter, limit: int = 1_000) -> list[ReceivedEvent]:
    """Events matching the filter from the Prefect API, every page up to about `limit`, oldest first."""
    events: list[ReceivedEvent] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=event_filter, limit=50)  # the API's largest page
        events.extend(page.events)
        while page.next_page and len(events) < limit:
            page = client.read_events_page(str(page.next_page))
            events.extend(page.events)
    return sorted(events, key=lambda event: event.occurred)


def _window(now: datetime | None = None) -> EventOccurredFilter:
    now = now or datetime.now(UTC)
    return EventOccurredFilter(since=prefect_datetime(now - LOOK_BACK), until=prefect_datetime(now + timedelta(minutes=1)))


def incident_events(incident_id: str) -> list[ReceivedEvent]:
    """Every event related to `ml.incident.<id>`, oldest first."""
    return read_events(EventFilter(occurred=_window(), related=EventRelatedFilter(id=[f"{INCIDENT_RESOURCE}{incident_id}"])))


def opened_incidents(model: str | None = None) -> list[ReceivedEvent]:
    """The `ml.incident.opened` events (of one model), oldest first."""
    resource = EventResourceFilter(id=[f"{MODEL_RESOURCE}{model}"]) if model else None
    return read_events(EventFilter(occurred=_window(), event=EventNameFilter(name=[CrisisEvent.INCIDENT_OPENED.value]), resource=resource))


def actor(event: ReceivedEvent) -> str:
    """What acted: the flow run the event came from, else a person (an event sent outside any run)."""
    runs = [r for r in event.related if r.role == "flow-run"]
    if runs:
        return f"flow run {runs[0].name or runs[0].id.rsplit('.', 1)[-1]}"
    return "person (outside a run)"


def first_symptom(model: str, opened: ReceivedEvent, triggering_event_id: str | None) -> datetime | None:
    """When the first symptom was seen: the triggering event, else the earliest breach of the hour before."""
    if triggering_event_id:
        try:
            found = read_events(EventFilter(occurred=_window(), id=EventIDFilter(id=[UUID(triggering_event_id)])))
        except ValueError:
            found = []
        if found:
            return found[0].occurred
    since = opened.occurred - timedelta(hours=1)
    breaches = read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=since, until=opened.occurred),
            event=EventNameFilter(name=[event.value for event in BREACHES]),
            resource=EventResourceFilter(id=[f"{MODEL_RESOURCE}{model}"]),
        )
    )
    return breaches[0].occurred if breaches else None


def build_report(events: list[ReceivedEvent], audit_moves: list | None = None, symptom_at: datetime | None = None) -> IncidentReport:
    """The incident's report from its events (oldest first) and its audit rows (`AliasMove`s)."""
    opened = next((e for e in events if e.event == CrisisEvent.INCIDENT_OPENED.value), None)
    if opened is None:
        raise IncidentError("no ml.incident.opened event for this incident: it was opened before events were kept, or on another server")
    steps = []
    for event in events:
        name = CrisisEvent(event.event) if event.event in CrisisEvent._value2member_map_ else None
        outcome = (
            OUTCOMES[name](event.payload)
            if name in OUTCOMES
            else ", ".join(f"{k}={v}" for k, v in event.payload.items() if k in ("version", "to_version", "reason"))
        )
        steps.append(Step(event.occurred, event.event.removeprefix(EVENT_NAMESPACE), actor(event), outcome))
    for move in audit_moves or []:
        who = f"flow run {move.flow_run_id[:8]}" if move.flow_run_id else "person (outside a run)"
        steps.append(
            Step(
                move.at, f"audit: {move.action}", who, f"{move.alias or '-'} v{move.from_version or '-'} -> v{move.to_version or '-'}: {move.outcome}"
            )
        )
    steps.sort(key=lambda step: step.at)

    def first(*names: CrisisEvent) -> datetime | None:
        return next((e.occurred for e in events if e.event in {n.value for n in names}), None)

    decided, recovered = first(CrisisEvent.DECISION_TAKEN), first(CrisisEvent.RECOVERY_SUCCEEDED)
    return IncidentReport(
        incident=opened.payload,
        steps=steps,
        time_to_detect=None if symptom_at is None else opened.occurred - symptom_at,
        time_to_decide=None if decided is None else decided - opened.occurred,
        time_to_recover=None if recovered is None else recovered - opened.occurred,
    )


def incident_report(incident_id: str) -> IncidentReport:
    """Read one incident back from the Prefect server and the model's MLflow audit.

    Raises:
        IncidentError: no event of the Prefect server names this incident, or its opening names no model.
    """
    events = incident_events(incident_id)
    opened = next((e for e in events if e.event == CrisisEvent.INCIDENT_OPENED.value), None)
    if opened is None:
        raise IncidentError(f"no incident {incident_id!r} on this Prefect server: list them with `crisis incident list`")
    model = opened.payload.get("model") or opened.resource.get(MODEL_NAME_LABEL)
    if not model:
        raise IncidentError(f"incident {incident_id!r} names no model (its ml.incident.opened event {opened.id} has none)")
    registry = ModelRegistry(model_name=model)
    registry.settle_audit()  # shown settled: reading the audit never writes
    audit = [move for move in registry.audit_trail() if move.incident == incident_id]
    return build_report(events, audit, first_symptom(model, opened, opened.payload.get("triggering_event_id")))


def wait_for_incident_end(incident_id: str, timeout: float = 120.0, every: float = 0.5) -> IncidentReport:
    """The incident's report once its recovery outcome reached the server (events are persisted in batches; on a busy
    machine a flow's last events may take half a minute to be stored, so the default wait is generous: it returns as
    soon as the outcome is there)."""
    from prefect_crisis.core.prefect_compat import drain_events

    drain_events()
    ends = {CrisisEvent.RECOVERY_SUCCEEDED.value, CrisisEvent.RECOVERY_FAILED.value}
    Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(every)).poll(lambda: any(event.event in ends for event in incident_events(incident_id)))
    return incident_report(incident_id)

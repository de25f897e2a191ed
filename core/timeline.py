"""The incident and its timeline: the one way events leave prefect-crisis.

An `Incident` is opened once per crisis and handed to every later step. A
`Timeline` is bound to an incident (or to none, outside a crisis) and to a
clock; every step emits through it, so each event of an incident carries the
related resource `ml.incident.<id>` and the Prefect event feed of that
resource reads as the incident's timeline. The sink is Prefect's event client
in production and a list in unit tests.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect_crisis.core.vocabulary import (
    INCIDENT_RESOURCE,
    INCIDENT_ROLE,
    INCIDENT_RUN_TAG,
    MODEL_NAME_LABEL,
    MODEL_RESOURCE,
    MODEL_VERSION_RESOURCE,
    MODEL_VERSION_ROLE,
    CrisisEvent,
    Severity,
    ViolationType,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Incident:
    """One crisis of one model, opened once and handed to every later step.

    Example:
        >>> from datetime import datetime, timezone
        >>> incident = Incident("inc-1", "churn", Severity.CRITICAL, ViolationType.QUALITY, datetime(2026, 1, 1, tzinfo=timezone.utc))
        >>> incident.run_tag, incident.resource_id
        ('incident:inc-1', 'ml.incident.inc-1')
    """

    id: str
    model: str
    severity: Severity
    violation: ViolationType
    opened_at: datetime
    triggering_event_id: str | None = None  # set when an automation opened it
    drill: bool = False

    @property
    def run_tag(self) -> str:
        """The tag every flow run of the response carries."""
        return f"{INCIDENT_RUN_TAG}{self.id}"

    @property
    def resource_id(self) -> str:
        return f"{INCIDENT_RESOURCE}{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "severity": self.severity.value,
            "violation": self.violation.value,
            "opened_at": self.opened_at.isoformat(),
            "triggering_event_id": self.triggering_event_id,
            "drill": self.drill,
        }


def model_resource(model: str) -> dict[str, str]:
    """The resource every crisis event is about."""
    return {"prefect.resource.id": f"{MODEL_RESOURCE}{model}", "prefect.resource.name": model, MODEL_NAME_LABEL: model}


def related_resources(model: str, version: str | int | None = None, incident: str | None = None) -> list[dict[str, str]]:
    """Model version and incident, as related resources with their roles."""
    related = []
    if version is not None:
        related.append(
            {
                "prefect.resource.id": f"{MODEL_VERSION_RESOURCE}{model}.{version}",
                "prefect.resource.role": MODEL_VERSION_ROLE,
                "prefect.resource.name": f"{model} v{version}",
            }
        )
    if incident is not None:
        related.append(
            {
                "prefect.resource.id": f"{INCIDENT_RESOURCE}{incident}",
                "prefect.resource.role": INCIDENT_ROLE,
                "prefect.resource.name": f"incident {incident}",
            }
        )
    return related


@dataclass(frozen=True)
class TimelineEvent:
    """One event as the timeline emitted it (what a sink receives)."""

    event: CrisisEvent
    occurred: datetime
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def incident_ids(self) -> list[str]:
        return [r["prefect.resource.id"].removeprefix(INCIDENT_RESOURCE) for r in self.related if r.get("prefect.resource.role") == INCIDENT_ROLE]


Sink = Callable[[TimelineEvent], Any]


# How events outlast a Prefect server that is away (restarted, upgraded, briefly down). Prefect's events client
# keeps each event it has not seen confirmed and sends it again when it reconnects, but it looks for a lost server
# only every 30 s, and it spends its ~8 s of reconnection attempts on every event emitted while the server is away
# (a process exiting then waits that long per event). Ours spends them once per outage: from then on an event is
# held at once, and the held events are sent again every 2 s until the server answers, so an event emitted during
# a restart reaches the automations within seconds of the server's return. Nothing is written to disk: a process
# that exits (or drains its events) while the server is away looks for it 5 s more, then loses what it held, and
# its log says so.
RESEND_EVERY_SECONDS = 2.0
FLUSH_ON_CLOSE_SECONDS = 5.0  # a drain or the process's exit waits this long for an away server, once
DELIVERY = logging.getLogger("prefect_crisis.events")


@functools.cache  # one class: the worker instances are keyed by it
def _patient_client_type():
    import time

    from prefect.events.clients import RETRYABLE_EXCEPTIONS, PrefectEventsClient

    from prefect_crisis.core.uris import mask_uri
    from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

    class PatientEventsClient(PrefectEventsClient):
        """Prefect's events client that holds events while the server is away and resends them every 2 s."""

        def __init__(self, api_url: str | None = None):
            super().__init__(api_url=api_url, checkpoint_interval=RESEND_EVERY_SECONDS)
            self._away_since: float | None = None

        def _went_away(self, error: Exception) -> None:
            self._away_since = self._away_since or time.monotonic()
            DELIVERY.warning(
                "the Prefect server at %s does not answer (%s): events are held in this process and sent "
                "again when it answers; they are lost if the process ends first",
                mask_uri(self._api_url),
                error,
            )

        async def __aenter__(self):
            try:
                return await super().__aenter__()
            except RETRYABLE_EXCEPTIONS as error:  # started while the server is away: hold, and look for it every 2 s
                self._went_away(error)
                self._start_checkpoint_task()
                return self

        async def _emit(self, event) -> None:
            if self._away_since is not None and self._websocket is None:
                self._unconfirmed_events.append(event)  # held: the resend loop sends it when the server answers
                return
            try:
                await super()._emit(event)  # Prefect's: keeps the event until confirmed, tries to reconnect ~8 s
            except RETRYABLE_EXCEPTIONS as error:
                self._went_away(error)

        def _log_connection_error(self, error: Exception) -> None:
            return None  # said once per outage, in our words, by _emit

        async def __aexit__(self, *exc_info) -> None:
            """On close (a drain, the process's exit) with events held: look for the server a few seconds more."""
            self._stop_checkpoint_task()  # one reconnect at a time: the resend loop's or this one
            async for _attempt in Retrying(stop=stop_after_delay(FLUSH_ON_CLOSE_SECONDS), wait=wait_fixed(0.5)).aattempts():
                if self._away_since is None or not self._unconfirmed_events:
                    break
                try:
                    await self._reconnect()  # sends them
                except Exception:
                    continue
            if self._away_since is not None and self._unconfirmed_events:
                DELIVERY.warning(
                    "the Prefect server at %s still does not answer: %d held events lost", mask_uri(self._api_url), len(self._unconfirmed_events)
                )
            await super().__aexit__(*exc_info)

        async def _reconnect(self) -> None:
            held = len(self._unconfirmed_events)
            await super()._reconnect()  # on success it has sent every held event again
            if self._away_since is not None:
                DELIVERY.warning(
                    "the Prefect server at %s answers again after %.0f s: %d held events sent",
                    mask_uri(self._api_url),
                    time.monotonic() - self._away_since,
                    held,
                )
                self._away_since = None

    return PatientEventsClient


def _events_worker(api_url: str):
    """The events worker of this process for `api_url`: Prefect's EventsWorker with the patient client."""
    from prefect.events.worker import EventsWorker

    # keyed by server: a process that talks to two servers in turn never sends one's events to the other
    worker = super(EventsWorker, EventsWorker).instance.__func__(EventsWorker, _patient_client_type(), (("api_url", api_url),))
    _flush_before_exit(worker)
    return worker


_FLUSHED_AT_EXIT: set[int] = set()


def _flush_before_exit(worker, waiting=None) -> None:
    """At the process's exit, let `worker` send what it has queued before Prefect drains it.

    Prefect drains its events worker at exit and warns "Still processing items: N items remaining..." when the
    queue is not empty at that moment, though it then sends them: a script that emitted its last events just
    before ending printed that warning. This waits (FLUSH_ON_CLOSE_SECONDS at most) for the queue to empty
    first; registered after the worker started, it runs before Prefect's drain (those hooks run last-in first-out).
    """
    import threading

    if id(worker) in _FLUSHED_AT_EXIT:
        return
    _FLUSHED_AT_EXIT.add(id(worker))
    from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

    waiting = waiting or Retrying(stop=stop_after_delay(FLUSH_ON_CLOSE_SECONDS), wait=wait_fixed(0.05))
    threading._register_atexit(lambda: queue_emptied(worker, waiting))  # the hook Prefect's services use for the same reason


def queue_emptied(worker, waiting) -> bool:
    """True once `worker`'s queue is empty (polled by `waiting`); False when its budget ran out first."""
    queue = getattr(worker, "_queue", None)
    return queue is None or bool(waiting.poll(lambda: queue.qsize() == 0))


def prefect_sink(event: TimelineEvent) -> Any:
    """Send the event to Prefect (inside a run Prefect relates it to the run), patiently when the server is away.

    Prefect Cloud, an ephemeral server and a process with events turned off take Prefect's own path (`emit_event`).
    """
    from prefect.events import Event, emit_event
    from prefect.events.worker import emit_events_to_cloud, should_emit_events_to_running_server
    from prefect.settings import PREFECT_API_URL

    if emit_events_to_cloud() or not should_emit_events_to_running_server():
        return emit_event(event=event.event.value, resource=event.resource, related=event.related, payload=event.payload, occurred=event.occurred)
    sent = Event(event=event.event.value, resource=event.resource, related=event.related, payload=event.payload, occurred=event.occurred)
    _events_worker(PREFECT_API_URL.value()).send(sent)
    return sent


class ListSink(list):
    """A sink that keeps the events in a list (unit tests)."""

    def __call__(self, event: TimelineEvent) -> None:
        self.append(event)


class Timeline:
    """The one emitter: bound to an incident (or its id, or none) and a clock.

    Example:
        >>> sink = ListSink()
        >>> timeline = Timeline("inc-1", sink=sink)
        >>> _ = timeline.emit(CrisisEvent.DECISION_TAKEN, "churn", {"decision": "rollback"}, version=3)
        >>> sink[0].incident_ids, sink[0].resource["ml.model.name"]
        (['inc-1'], 'churn')
    """

    def __init__(self, incident: Incident | str | None = None, *, clock: Callable[[], datetime] | None = None, sink: Sink | None = None):
        self.incident = incident if isinstance(incident, Incident) else None
        self.incident_id = incident.id if isinstance(incident, Incident) else incident
        self.clock = clock or utc_now
        self.sink = sink if sink is not None else prefect_sink

    def bound(self, incident: Incident | str | None) -> Timeline:
        """The same clock and sink, bound to another incident."""
        return Timeline(incident, clock=self.clock, sink=self.sink)

    def emit(
        self,
        event: CrisisEvent,
        model: str,
        payload: dict[str, Any] | None = None,
        *,
        version: str | int | None = None,
        labels: dict[str, str] | None = None,
    ) -> TimelineEvent:
        """Emit `event` about `model` (and `version`), inside the bound incident; `labels` are added to the model resource."""
        body = dict(payload or {})
        if self.incident_id is not None:
            body.setdefault("incident", self.incident_id)
        emitted = TimelineEvent(
            CrisisEvent(event), self.clock(), {**model_resource(model), **(labels or {})}, related_resources(model, version, self.incident_id), body
        )
        self.sink(emitted)
        return emitted

    def logger(self, logger: logging.Logger | logging.LoggerAdapter, model: str, version: str | int | None = None) -> StepLogger:
        """`logger` whose records carry incident id, model and version (as `extra` and in the message)."""
        return StepLogger(logger, {"incident": self.incident_id, "model": model, "version": None if version is None else str(version)})


class StepLogger(logging.LoggerAdapter):
    """Records of a crisis step: `[incident <id> <model> v<version>] message`, with the same fields as extras."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        context = self.extra or {}
        label = " ".join(
            part
            for part in (
                f"incident {context['incident']}" if context.get("incident") else "",
                str(context.get("model") or ""),
                f"v{context['version']}" if context.get("version") else "",
            )
            if part
        )
        kwargs["extra"] = {**kwargs.get("extra", {}), **{f"crisis_{key}": value for key, value in context.items()}}
        return (f"[{label}] {msg}" if label else msg), kwargs


def emit_crisis_event(
    event: CrisisEvent,
    model: str,
    payload: dict[str, Any] | None = None,
    *,
    version: str | int | None = None,
    incident: str | None = None,
    labels: dict[str, str] | None = None,
) -> TimelineEvent:
    """Emit one event outside a bound timeline (a one-off `Timeline(incident)`).

    Example:
        ```python
        from prefect_crisis.core.timeline import emit_crisis_event
        from prefect_crisis.core.vocabulary import CrisisEvent

        emit_crisis_event(CrisisEvent.BREACH_WARNING, "churn", {"metric": "accuracy", "value": 0.81}, version=7)
        ```
    """
    return Timeline(incident).emit(event, model, payload, version=version, labels=labels)

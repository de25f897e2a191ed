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
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from prefect.types import DateTime
    from pydantic import TypeAdapter


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


@functools.cache
def _prefect_datetimes() -> TypeAdapter[DateTime]:
    from prefect.types import DateTime
    from pydantic import TypeAdapter

    return TypeAdapter(DateTime)


def prefect_datetime(at: datetime) -> DateTime:
    """`at` as the datetime type Prefect's events and event filters declare (what their validation makes of it anyway).

    Example:
        >>> prefect_datetime(datetime(2024, 1, 1, tzinfo=UTC)).isoformat()
        '2024-01-01T00:00:00+00:00'
    """
    return _prefect_datetimes().validate_python(at)


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


def prefect_sink(event: TimelineEvent) -> Any:
    """Send the event to Prefect (inside a run Prefect relates it to the run), patiently when the server is away
    (`prefect_crisis.core.prefect_compat.send_event`)."""
    from prefect_crisis.core.prefect_compat import send_event

    return send_event(event.event.value, event.resource, event.related, event.payload, event.occurred)


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

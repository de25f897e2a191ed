"""Prefect events of prefect-crisis: the vocabulary the automations listen to.

Every event is about one model: its resource is `ml.model.<name>`, with the
model version and the incident as related resources where known, so the
Prefect UI's event feed for a model (or an incident) reads as its timeline.
Emit through `emit_crisis_event`; no module builds event dicts by hand.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from prefect.events import emit_event
from prefect.events.schemas.events import Event


class CrisisEvent(str, Enum):
    """Event names (DESIGN.md). Severity is in the name, because automation
    triggers match names and labels, not payloads."""

    DATA_VALIDATED = "ml.data.validated"
    DATA_REJECTED = "ml.data.rejected"
    TRAINING_STARTED = "ml.training.started"
    TRAINING_COMPLETED = "ml.training.completed"
    TRAINING_STOPPED = "ml.training.stopped"
    MODEL_REGISTERED = "ml.model.registered"
    MODEL_PROMOTED = "ml.model.promoted"
    MODEL_ROLLED_BACK = "ml.model.rolled-back"
    BREACH_WARNING = "ml.breach.warning"
    BREACH_CRITICAL = "ml.breach.critical"
    BREACH_EMERGENCY = "ml.breach.emergency"
    FALLBACK_ENGAGED = "ml.fallback.engaged"
    FALLBACK_RELEASED = "ml.fallback.released"
    RECOVERY_SUCCEEDED = "ml.recovery.succeeded"
    RECOVERY_FAILED = "ml.recovery.failed"


def model_resource(model: str) -> dict[str, str]:
    """The resource every crisis event is about."""
    return {
        "prefect.resource.id": f"ml.model.{model}",
        "prefect.resource.name": model,
        "ml.model.name": model,
    }


def related_resources(model: str, version: str | int | None = None, incident: str | None = None) -> list[dict[str, str]]:
    """Model version and incident, as related resources with their roles."""
    related = []
    if version is not None:
        related.append(
            {
                "prefect.resource.id": f"ml.model-version.{model}.{version}",
                "prefect.resource.role": "model-version",
                "prefect.resource.name": f"{model} v{version}",
            }
        )
    if incident is not None:
        related.append(
            {
                "prefect.resource.id": f"ml.incident.{incident}",
                "prefect.resource.role": "incident",
                "prefect.resource.name": f"incident {incident}",
            }
        )
    return related


def emit_crisis_event(
    event: CrisisEvent,
    model: str,
    payload: dict[str, Any] | None = None,
    *,
    version: str | int | None = None,
    incident: str | None = None,
) -> Event | None:
    """Emit one crisis event for `model`.

    Inside a flow or task run Prefect adds the run as a related resource, so
    the event links back to the run that caused it.

    Example:
        ```python
        from prefect_crisis.tasks.events import CrisisEvent, emit_crisis_event

        emit_crisis_event(
            CrisisEvent.BREACH_WARNING,
            "churn",
            {"metric": "accuracy", "value": 0.81, "threshold": 0.85},
            version=7,
        )
        ```
    """
    return emit_event(
        event=CrisisEvent(event).value,
        resource=model_resource(model),
        related=related_resources(model, version, incident),
        payload=payload or {},
    )

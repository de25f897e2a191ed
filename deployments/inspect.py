"""Read back through the Prefect API what a run left behind: artifacts and
crisis events. Used by the CLI and by tests, so both see what a user sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import Artifact
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent

from prefect_crisis.core.timeline import prefect_datetime
from prefect_crisis.core.vocabulary import EVENT_PREFIX, MODEL_RESOURCE
from prefect_crisis.tasks.response.report import read_events


def flow_run_family(flow_run_id: UUID) -> list[UUID]:
    """The flow run and its subflow runs (depth-first)."""
    family = [flow_run_id]
    with get_client(sync_client=True) as client:
        frontier = [flow_run_id]
        while frontier:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [child.id for child in children]
            family.extend(frontier)
    return family


def read_artifacts_of_flow_run(flow_run_id: UUID) -> list[Artifact]:
    """Artifacts created by a flow run or any of its subflows."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_family(flow_run_id))))


def read_crisis_events(model: str, prefix: str = EVENT_PREFIX, since: timedelta = timedelta(hours=1), limit: int = 500) -> list[ReceivedEvent]:
    """Events about `model` whose name starts with `prefix`, oldest first (at most about `limit`)."""
    now = datetime.now(UTC)
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=prefect_datetime(now - since), until=prefect_datetime(now + timedelta(minutes=1))),
        event=EventNameFilter(prefix=[prefix]),
        resource=EventResourceFilter(id=[f"{MODEL_RESOURCE}{model}"]),
    )
    return read_events(event_filter, limit)

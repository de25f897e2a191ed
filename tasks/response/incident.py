"""The incident and its episode: open the incident (or join the model's current episode), tag the response's run,
and record where the episode stands after the response. The response's steps live in `scoring` (the versions on the
labelled window), `tasks` (diagnose, decide, recover) and `diagnosis_view` (the diagnosis artifact); their names
still import from here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import ModelRegistry, first_line
from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.timeline import Incident, Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, Severity, ViolationType
from prefect_crisis.tasks.model_slots import response_limit, response_slot
from prefect_crisis.tasks.response.diagnosis_view import plot_diagnosis, render_diagnosis
from prefect_crisis.tasks.response.episodes import Episode, EpisodeState, Retry, new_episode, read_episode, write_episode
from prefect_crisis.tasks.response.reading import STORE_RETRY_DELAYS, model_features, read_serving_history, store_unavailable
from prefect_crisis.tasks.response.scoring import MEASURED_VERSIONS, live_window, measure_versions, predict_with, scorable_rows, verifier
from prefect_crisis.tasks.response.tasks import TOP_FINDINGS, decide_rollback_task, diagnose_model, execute_recovery_task

__all__ = [
    "MEASURED_VERSIONS",
    "STORE_RETRY_DELAYS",
    "TOP_FINDINGS",
    "close_episode",
    "decide_rollback_task",
    "diagnose_model",
    "execute_recovery_task",
    "join_or_open_incident",
    "live_window",
    "measure_versions",
    "model_features",
    "new_incident_id",
    "open_incident",
    "plot_diagnosis",
    "predict_with",
    "read_serving_history",
    "render_diagnosis",
    "response_limit",
    "response_slot",
    "scorable_rows",
    "store_unavailable",
    "tag_response_run",
    "verifier",
]


def open_incident(
    model: str,
    incident_id: str,
    severity: Severity,
    violation: ViolationType,
    *,
    triggering_event_id: str | None = None,
    drill: bool = False,
    timeline: Timeline | None = None,
    clock: Callable[[], datetime] | None = None,
    retry: Retry | None = None,
) -> tuple[Incident, Timeline]:
    """Open the incident once, emit `ml.incident.opened` (naming the crashed run a `retry` repeats), and give the timeline
    bound to it."""
    base = timeline or Timeline(clock=clock)
    incident = Incident(incident_id, model, Severity(severity), ViolationType(violation), base.clock(), triggering_event_id, drill)
    bound = base.bound(incident)
    bound.emit(CrisisEvent.INCIDENT_OPENED, model, {"flow_run_id": flow_run.get_id(), **incident.to_dict(), **retried(retry)})
    return incident, bound


def retried(retry: Retry | None) -> dict[str, str | int]:
    """What an incident event says of the crashed run a retry repeats (nothing for a first run)."""
    return {"retry_of": retry.of, "attempt": retry.attempt} if retry is not None else {}


def tag_response_run(incident: Incident, retry: Retry | None = None) -> None:
    """Add the tag `incident:<id>` to the current flow run (an automation cannot name it in advance), and to the crashed run
    a `retry` repeats (it may have crashed before it knew its incident): the incident's runs are one filter in the UI."""
    run_ids = [run_id for run_id in (flow_run.get_id(), retry.of if retry is not None else None) if run_id]
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            try:
                run = client.read_flow_run(UUID(run_id))
            except (ObjectNotFound, ValueError):  # a retry_of that names no run (a hand-made retry): tag this run only
                continue
            if incident.run_tag not in run.tags:
                client.update_flow_run(UUID(run_id), tags=[*run.tags, incident.run_tag])


def join_or_open_incident(
    model: str,
    event_id: str | None,
    severity: Severity,
    violation: ViolationType,
    *,
    quiet_minutes: float,
    drill: bool,
    clock: Callable[[], datetime],
    incident_id: str | None = None,
    fallback_serves: bool = False,
    retry: Retry | None = None,
) -> tuple[Incident, Timeline, Episode] | None:
    """The incident this response belongs to: the model's current episode when it is joinable (one incident per episode;
    `ml.incident.joined` says so), else a new one (`ml.incident.opened`). None: the triggering event was answered already.
    A `retry` (a run repeating a crashed one) answers the crashed run's event again and joins its incident when it is the
    episode's. Call it holding the model's concurrency slot."""
    now = clock()
    episode = read_episode(model)
    if episode is not None and episode.answered(event_id) and retry is None:
        return None
    retrying = retry is not None and episode is not None and episode.incident == (incident_id or event_id)
    if episode is not None and (retrying or episode.joinable(now, quiet_minutes, fallback_serves)):
        incident = Incident(
            episode.incident,
            model,
            Severity(severity),
            ViolationType(violation),
            datetime.fromisoformat(episode.opened_at),
            event_id,
            episode.drill or drill,
        )
        timeline = Timeline(clock=clock).bound(incident)
        timeline.emit(
            CrisisEvent.INCIDENT_JOINED,
            model,
            {
                "flow_run_id": flow_run.get_id(),
                "triggering_event_id": event_id,
                "severity": Severity(severity).value,
                "episode_state": episode.state.value,
                **retried(retry),
            },
        )
        episode = episode.touched(now, event_id)
    else:
        incident, timeline = open_incident(
            model,
            incident_id or event_id or new_incident_id(),
            severity,
            violation,
            triggering_event_id=event_id,
            drill=drill,
            clock=clock,
            retry=retry,
        )
        episode = new_episode(incident.id, incident.severity.value, incident.violation.value, now, event_id, incident.drill)
    write_episode(model, episode)
    return incident, timeline, episode


def close_episode(registry: ModelRegistry, episode: Episode) -> Episode:
    """Record where the episode stands after a response: a stopgap while the fallback model serves, recovered when a
    version serves, open otherwise. The store unreadable now: the episode keeps its state (logged), never a failed response."""
    try:
        champion = registry.champion()
    except CrisisError as error:
        get_run_logger().warning(
            "episode %s: the champion cannot be read now (%s); its state is left as it was", episode.incident, first_line(str(error))
        )
        return episode
    state = (
        EpisodeState.STOPGAP
        if champion is not None and champion.is_fallback
        else EpisodeState.RECOVERED
        if champion is not None
        else EpisodeState.OPEN
    )
    updated = episode.touched(registry.now(), None, state)
    write_episode(registry.model_name, updated)
    return updated


def new_incident_id() -> str:
    return f"inc-{datetime.now(UTC):%Y%m%dT%H%M%S}"

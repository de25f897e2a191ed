"""One incident per episode: a model's current incident, which later breaches attach to.

A breach that persists is one crisis, not one per sweep: the first response of an episode opens the incident, and every
response that follows for that model (the next sweep's breach, an emergency, the scheduled and the evidence-triggered
sweep in the same second) joins it instead of opening another. The episode is a small value kept in a Prefect Variable
per model (`crisis-incident-<model>`), read and written only while the response holds the model's concurrency slot, so
two responses never both open one.

An episode ends `quiet_minutes` after its last response, unless the fallback model serves: a stopgap keeps the incident
open, since the ladder is still looking for a good version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from prefect.variables import Variable

RESPONSE_ATTEMPTS = 3  # runs of one response (or emergency stop) whose workers died, before the incident goes up the ladder
EVENTS_KEPT = 20  # triggering events remembered per episode: a late duplicate of an older one is rare, and is held by the cool-down


class EpisodeState(StrEnum):
    """Where the episode stands after its latest response."""

    OPEN = "open"  # responding, or nothing repaired yet
    STOPGAP = "stopgap"  # the fallback model serves: the incident stays open until a version is good again
    RECOVERED = "recovered"  # a version serves and verified healthy


@dataclass(frozen=True)
class Episode:
    """A model's current incident.

    Example:
        >>> from datetime import datetime, timezone
        >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
        >>> episode = Episode("e-1", "critical", "quality", at.isoformat(), EpisodeState.RECOVERED, at.isoformat(), ("e-1",))
        >>> episode.joinable(at + timedelta(minutes=10), quiet_minutes=30), episode.joinable(at + timedelta(minutes=31), quiet_minutes=30)
        (True, False)
        >>> stopgap = replace(episode, state=EpisodeState.STOPGAP)
        >>> stopgap.joinable(at + timedelta(days=2), 30), stopgap.joinable(at + timedelta(days=2), 30, fallback_serves=False)
        (True, False)
    """

    incident: str
    severity: str
    violation: str
    opened_at: str
    state: EpisodeState
    updated_at: str
    events: tuple[str, ...] = ()
    drill: bool = False

    def joinable(self, now: datetime, quiet_minutes: float, fallback_serves: bool = True) -> bool:
        """A response at `now` joins this incident: the stopgap it left still serves (`fallback_serves`: the fallback model is
        the champion now), or the last response was within `quiet_minutes`."""
        if self.state is EpisodeState.STOPGAP and fallback_serves:
            return True
        return now - datetime.fromisoformat(self.updated_at) < timedelta(minutes=quiet_minutes)

    def answered(self, event_id: str | None) -> bool:
        """The triggering event was answered already (a duplicate or late delivery of the same event)."""
        return bool(event_id) and event_id in self.events

    def touched(self, now: datetime, event_id: str | None, state: EpisodeState | None = None) -> Episode:
        events = self.events if not event_id or event_id in self.events else (*self.events, event_id)[-EVENTS_KEPT:]
        return replace(self, updated_at=now.isoformat(), events=events, state=state or self.state)


@dataclass(frozen=True)
class Retry:
    """A run that repeats a crashed one (the ladder's crisis-retry-* automations): the crashed run's id and this run's attempt.

    Example:
        >>> Retry.of_parameters(None, 1) is None, Retry.of_parameters("run-1", 2).exhausted, Retry("run-2", 4).exhausted
        (True, False, True)
    """

    of: str
    attempt: int

    @classmethod
    def of_parameters(cls, retry_of: str | None, attempt: int) -> Retry | None:
        """The retry a flow's `retry_of` and `attempt` parameters describe; None for a first run."""
        return cls(retry_of, attempt) if retry_of else None

    @property
    def exhausted(self) -> bool:
        """This run is past RESPONSE_ATTEMPTS: it must not try again."""
        return self.attempt > RESPONSE_ATTEMPTS


def episode_name(model: str) -> str:
    """Name of the Variable that holds the model's current episode (model names are already Variable-safe: lowercase
    letters, digits, `-` and `_`; `churn_v2` and `churn-v2` stay two models)."""
    return "crisis-incident-" + model


def read_episode(model: str) -> Episode | None:
    value = Variable.get(episode_name(model), default=None)
    if not isinstance(value, dict):
        return None
    try:
        return Episode(**{**value, "state": EpisodeState(value["state"]), "events": tuple(value.get("events", ()))})
    except (TypeError, KeyError, ValueError):
        return None  # written by another release: a new episode starts


def write_episode(model: str, episode: Episode) -> None:
    Variable.set(episode_name(model), {**asdict(episode), "state": episode.state.value, "events": list(episode.events)}, overwrite=True)


def new_episode(incident: str, severity: str, violation: str, now: datetime, event_id: str | None, drill: bool) -> Episode:
    return Episode(incident, severity, violation, now.isoformat(), EpisodeState.OPEN, now.isoformat(), (event_id,) if event_id else (), drill)

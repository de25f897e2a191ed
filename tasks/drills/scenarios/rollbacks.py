"""Releases that go wrong in production and are rolled back: a retrain on labels flipped upstream (synthetic, and a
real one on breast-cancer), a release trained on rotated labels (digits), and one critical breach delivered twice
with a late copy. Live labels reveal each; the monitor breaches and the response rolls back to the stable version,
once, with its incident's timeline whole."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np

from prefect_crisis.core.timeline import model_resource, prefect_datetime, related_resources
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent
from prefect_crisis.tasks.drills.datasets import LABEL
from prefect_crisis.tasks.drills.end_state import EndState, FreshRows
from prefect_crisis.tasks.drills.faults import positives_flipped
from prefect_crisis.tasks.drills.injections import (
    SERVED_ROWS,
    lift_emergency,
    real_champion,
    real_stack,
    register_synthetic,
    serve_and_label,
    synthetic_champion,
    synthetic_rows,
)
from prefect_crisis.tasks.drills.observe import applied_moves, check_timeline, first_event, response_runs
from prefect_crisis.tasks.drills.real_models import RealModelStack, mislabelled, release_poisoned, release_retrained
from prefect_crisis.tasks.drills.scenario import ChampionState, Drill, Scenario, wait_until

# A labelling pipeline that records half the benign tumours as malignant: the retrain's own holdout (on those labels)
# says 0.6-0.77, and on true labels it answers 0.57-0.75 of breast-cancer's rows right: the monitor's critical band.
BENIGN_RECORDED_MALIGNANT = 0.5
MEASURED = EndState(FreshRows.SYNTHETIC)
REAL = EndState(FreshRows.REAL)


@dataclass
class Poisoned(ChampionState):
    """The stable champion and the poisoned version promoted over it."""

    poisoned: str | None = None


PoisonedT = TypeVar("PoisonedT", bound=Poisoned)


def expect_rollback(drill: Drill[Any]) -> None:
    """A critical or emergency breach, then a rollback within the limit to the stable version, its incident's timeline whole."""
    registry, good, injected_at = drill.model_registry, drill.state.good, drill.fault_injected_at
    moves = wait_until(lambda: applied_moves(registry, AliasAction.ROLLBACK, injected_at), drill.limit, every=0.2)
    breach = first_event(drill.model, [CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY], injected_at)
    drill.detect_s = drill.since(breach.occurred) if breach else None
    drill.require(breach, "no critical or emergency breach was raised")
    if not drill.require(moves, f"no rollback within {drill.limit:g} s of the labels"):
        return
    drill.recover_s = drill.mitigate_s = drill.since(moves[0].at)
    champion = registry.champion()
    serving = champion.version if champion is not None else None
    drill.require(
        moves[0].to_version == good and serving == good,
        f"rolled back to v{moves[0].to_version}, champion v{serving}; the stable version is v{good}",
    )
    check_timeline(drill, moves[0].incident)


def promote_poisoned_and_label(drill: Drill[PoisonedT]) -> None:
    """Promote a retrain on positives flipped upstream (past any gate) and serve it a labelled window without the
    monitor's evidence (`emit=False`): the window a response reads."""
    registry = drill.model_registry
    poisoned = register_synthetic(registry, drill.seed + 1, positives_flipped)
    registry.promote(poisoned, "retrained on the latest batch")
    drill.state.poisoned = poisoned
    serve_and_label(drill, synthetic_rows(drill.seed + 800), str(drill.seed + 800), emit=False)  # the window the response reads; no monitor run


# -- poisoned-retrain ---------------------------------------------------------------------


@dataclass(frozen=True)
class PoisonedRetrain(Scenario[Poisoned]):
    def new_state(self) -> Poisoned:
        return Poisoned()

    def setup(self, drill: Drill[Poisoned]) -> None:
        synthetic_champion(drill)

    def inject(self, drill: Drill[Poisoned]) -> None:
        registry = drill.model_registry
        poisoned = register_synthetic(registry, drill.seed + 1, positives_flipped)
        holdout = registry.version(poisoned).metrics.get("accuracy")
        registry.promote(poisoned, f"retrained on the latest batch (holdout accuracy {holdout:.3f} on its own labels)")
        drill.state.poisoned = poisoned
        serve_and_label(drill, synthetic_rows(drill.seed + 500), str(drill.seed + 500))

    def expect(self, drill: Drill[Poisoned]) -> None:
        expect_rollback(drill)


# -- duplicate-event ----------------------------------------------------------------------


@dataclass
class Duplicated(Poisoned):
    """The ids of the breach sent twice and of its late copy."""

    event_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class DuplicateEvent(Scenario[Duplicated]):
    def new_state(self) -> Duplicated:
        return Duplicated()

    def setup(self, drill: Drill[Duplicated]) -> None:
        synthetic_champion(drill)
        promote_poisoned_and_label(drill)

    def inject(self, drill: Drill[Duplicated]) -> None:
        """One critical breach delivered twice (the same event, id and all, posted again: a sender's retry after a lost
        acknowledgement), then a late one that happened a minute earlier (out of order)."""
        from prefect.client.orchestration import get_client
        from prefect.events import Event, RelatedResource, Resource

        model, poisoned = drill.model, drill.state.poisoned
        payload = {"metric": "error_rate", "value": 0.4, "threshold": 0.2, "window": "drill", "samples": SERVED_ROWS, "drill": True}
        injected_at = drill.inject_now()
        breach = Event(
            event=CrisisEvent.BREACH_CRITICAL.value,
            resource=Resource(model_resource(model)),
            related=[RelatedResource(related) for related in related_resources(model, poisoned)],
            payload=payload,
            occurred=prefect_datetime(injected_at),
        )
        late = Event(
            event=CrisisEvent.BREACH_CRITICAL.value,
            resource=Resource(model_resource(model)),
            related=[RelatedResource(related) for related in related_resources(model, poisoned)],
            payload=payload,
            occurred=prefect_datetime(injected_at - timedelta(minutes=1)),
        )
        with get_client(sync_client=True) as client:  # the events API, as any sender posts them
            for event in (breach, breach, late):
                client.request("POST", "/events", json=[event.model_dump(mode="json")]).raise_for_status()
        drill.state.event_ids = {str(breach.id), str(late.id)}

    def expect(self, drill: Drill[Duplicated]) -> None:
        expect_rollback(drill)
        time.sleep(5)  # a second response would have started by now
        runs = response_runs(drill.model, drill.fault_injected_at)
        moves = applied_moves(drill.model_registry, AliasAction.ROLLBACK, drill.fault_injected_at)
        drill.require(len(runs) == 1, f"{len(runs)} responses to one breach sent twice and a late copy")
        drill.require(len(moves) == 1, f"{len(moves)} rollbacks")
        # the server orders events by when they happened: the late copy may be the one that opened the incident
        drill.require(drill.incident in drill.state.event_ids, f"the incident is {drill.incident}, not one of the breaches' event ids")
        drill.facts.update(responses=len(runs))


# -- real-bad-release, real-poisoned-retrain ----------------------------------------------


@dataclass
class RealRelease(Poisoned):
    """The real model and its data set's parts."""

    stack: RealModelStack | None = None


@dataclass(frozen=True)
class RealRollback(Scenario[RealRelease]):
    """A real model on `dataset`: a good scaled logistic version that served 3 h, the weak 3-feature fallback behind
    it; a poisoned release (`release`) serves the window's rows and their true labels come in. Rolled back to the good
    version (rollback before fallback): never to the weak fallback."""

    dataset: str = "digits"
    release: str = "rotated"  # rotated: every label recorded as the next; benign-as-malignant: BENIGN_RECORDED_MALIGNANT of them

    def new_state(self) -> RealRelease:
        return RealRelease()

    def setup(self, drill: Drill[RealRelease]) -> None:
        drill.state.stack = real_champion(drill, self.dataset)

    def inject(self, drill: Drill[RealRelease]) -> None:
        stack = real_stack(drill)
        if self.release == "rotated":
            drill.state.poisoned = release_poisoned(stack)
        else:
            recorded = mislabelled(
                stack.parts["retrain"][LABEL].to_numpy(), stack.data.classes, BENIGN_RECORDED_MALIGNANT, np.random.default_rng(drill.seed)
            )
            drill.state.poisoned = release_retrained(stack, recorded)
        serve_and_label(drill, stack.window(), "window")

    def expect(self, drill: Drill[RealRelease]) -> None:
        expect_rollback(drill)
        stopgaps = applied_moves(drill.model_registry, AliasAction.FALLBACK, drill.fault_injected_at)
        drill.require(not stopgaps, f"the weak fallback v{drill.state.fallback} served though the good v{drill.state.good} was there")

    def clean_up(self, drill: Drill[RealRelease]) -> None:
        lift_emergency(drill)


SCENARIOS = (
    PoisonedRetrain(
        "poisoned-retrain",
        "a retrain on labels flipped upstream is promoted by its own holdout; live labels reveal it; "
        "the monitor breaches and the response rolls back to the stable version",
        limit=240,
        end=MEASURED,
    ),
    DuplicateEvent(
        "duplicate-event",
        "one critical breach delivered twice (same event id) and a late copy out of order: one response, one rollback",
        limit=90,
        end=MEASURED,
    ),
    RealRollback(
        "real-bad-release",
        "digits: a release trained on rotated labels is promoted over the good version and serves; "
        "labels come in; the ladder rolls back to the good version, not the weak fallback",
        limit=240,
        end=REAL,
        dataset="digits",
        release="rotated",
    ),
    RealRollback(
        "real-poisoned-retrain",
        "breast-cancer: a retrain on labels that call half the benign tumours malignant is "
        "promoted directly and serves; labels come in; the response rolls back to the good version",
        limit=240,
        end=REAL,
        dataset="breast-cancer",
        release="benign-as-malignant",
    ),
)

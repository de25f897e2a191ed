"""Serving faults: the served primary raises on every call, or answers late against its timeout. The router alone
answers them from the fallback, and lets the primary back once it is fixed; the champion never moves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.core.errors import DrillError
from prefect_crisis.core.prefect_compat import drain_events
from prefect_crisis.core.timeline import Timeline, TimelineEvent, prefect_sink
from prefect_crisis.core.vocabulary import CrisisEvent
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed
from prefect_crisis.tasks.drills.end_state import EndState
from prefect_crisis.tasks.drills.faults import FaultyEstimator, Served, inject_into_primary, serve_rows
from prefect_crisis.tasks.drills.injections import stable_champion
from prefect_crisis.tasks.drills.observe import champion_moves, first_event
from prefect_crisis.tasks.drills.scenario import ChampionState, Drill, Scenario, seconds, wait_until
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.serving.inference_log import open_inference_log
from prefect_crisis.tasks.serving.router import FallbackRouter

SERVING_FAULT = EndState(
    unmeasured="a serving fault: the primary's answers fail or come late, they are not wrong; the router's fallback answers "
    "meanwhile, the primary answers again once fixed, and the champion never moves (checked)",
    incidents=(0, 1),
    warnings_only=True,
    why="none by design: the router alone answers from the fallback; a health sweep that happens to see the fallback's share "
    "meanwhile may raise one diagnose-only warning",
)
SERVING_DRILL_POLICY = FallbackPolicy(
    primary_timeout_seconds=0.25, failure_threshold=3, cooldown_seconds=1.0, share_window_rows=200, min_share_rows=50, refresh_seconds=3600
)


class Recorder:
    """The router's timeline sink: every event to Prefect, and its time kept here (the router sends from a thread)."""

    def __init__(self) -> None:
        self.seen: list[TimelineEvent] = []

    def __call__(self, event: TimelineEvent) -> None:
        self.seen.append(event)
        prefect_sink(event)

    def first(self, name: CrisisEvent, since: datetime) -> datetime | None:
        return next((event.occurred for event in self.seen if event.event == name.value and event.occurred >= since), None)


@dataclass
class ServingState(ChampionState):
    """The drill's own router (with its timeline recorder), the fault switch in front of its primary, and the traffic sent."""

    router: FallbackRouter | None = None
    recorder: Recorder = field(default_factory=Recorder)
    faulty: FaultyEstimator | None = None
    served: Served = field(default_factory=lambda: Served([], []))


@dataclass(frozen=True)
class ServingFault(Scenario[ServingState]):
    """`fault`: "raise", the primary raises; a number, it sleeps that many seconds before answering."""

    fault: str | float = "raise"

    def new_state(self) -> ServingState:
        return ServingState()

    def setup(self, drill: Drill[ServingState]) -> None:
        state = drill.state
        drill.registry, state.good = stable_champion(drill.model, drill.seed)
        router = state.router = FallbackRouter(
            drill.registry, SERVING_DRILL_POLICY, log=open_inference_log(InferenceLog()), close_log=True, timeline=Timeline(sink=state.recorder)
        ).start(refresh_in_background=False)
        warm = serve_rows(router, make_batch(200, seed=drill.seed + 700), prefix=f"{drill.model}-warm")
        drill.require(warm.rows_by_fallback < 100, f"before the fault the fallback answered {warm.rows_by_fallback} of 200 rows")

    def inject(self, drill: Drill[ServingState]) -> None:
        state = drill.state
        router = state.router
        if router is None:
            raise DrillError(f"drill {drill.scenario!r} has no router to break: its setup starts one")
        faulty = state.faulty = inject_into_primary(router)
        served = Served([], [])
        drill.inject_now()
        faulty.fault = self.fault
        served.extend(serve_rows(router, make_batch(300, seed=drill.seed + 701), prefix=f"{drill.model}-fault", pause=0.02))
        cleared_at = drill.cleared_at = datetime.now(UTC)
        faulty.fault = None  # the primary is fixed (a restarted dependency, a deploy rolled back)
        batch = make_batch(100, seed=drill.seed + 702)

        def released_or_serve() -> bool:  # traffic keeps coming until the fallback is released (or the limit)
            if state.recorder.first(CrisisEvent.FALLBACK_RELEASED, cleared_at) is not None:
                return True
            served.extend(serve_rows(router, batch, prefix=f"{drill.model}-after-{uuid.uuid4().hex[:4]}", pause=0.02))
            return False

        Retrying(stop=stop_after_delay(drill.limit), wait=wait_fixed(0)).poll(released_or_serve)
        state.served = served

    def expect(self, drill: Drill[ServingState]) -> None:
        recorder, served, faulty = drill.state.recorder, drill.state.served, drill.state.faulty
        injected_at, cleared_at = drill.fault_injected_at, drill.fault_cleared_at
        if faulty is None:
            raise DrillError(f"drill {drill.scenario!r} put no fault switch in front of the primary: its inject step does")
        drill.require(
            served.failed_requests == 0 and served.rows_failed == 0,
            f"{served.failed_requests} of {served.requests} requests and {served.rows_failed} rows failed to the client",
        )
        engaged = recorder.first(CrisisEvent.FALLBACK_ENGAGED, injected_at)
        released = recorder.first(CrisisEvent.FALLBACK_RELEASED, cleared_at)
        if drill.require(engaged, "the fallback was never engaged while the primary failed"):
            drill.detect_s = drill.mitigate_s = drill.since(engaged)
        if drill.require(released, f"the fallback was not released within {drill.limit:g} s of the primary's repair"):
            drill.recover_s = seconds(cleared_at, released)
        drill.facts.update(
            requests=served.requests, rows_by_fallback=served.rows_by_fallback, primary_calls_faulted=faulty.faulted_calls, rows_lost=served.rows_lost
        )
        moves = champion_moves(drill.model_registry, injected_at)
        drill.require(not moves, f"a serving fault moved the champion {len(moves)} time(s): the router alone answers it")
        self.clean_up(drill)
        drain_events()
        on_server = wait_until(lambda: first_event(drill.model, [CrisisEvent.FALLBACK_RELEASED], injected_at), 15)
        drill.require(on_server, "ml.fallback.released did not reach the Prefect server")

    def clean_up(self, drill: Drill[ServingState]) -> None:
        router, drill.state.router = drill.state.router, None
        if router is not None:
            router.close()


SCENARIOS = (
    ServingFault(
        "primary-raising",
        "the served primary raises on every call: each request is answered by the fallback, and the breaker lets the primary back when it is fixed",
        limit=30,
        end=SERVING_FAULT,
        fault="raise",
    ),
    ServingFault(
        "latency-spike",
        "the served primary takes 1 s a call against a 0.25 s timeout: answered by the fallback, released when the primary is fast again",
        limit=30,
        end=SERVING_FAULT,
        fault=1.0,
    ),
)

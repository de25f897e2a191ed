"""What a drill scenario is, as plain values: the scenario itself (a name, a description, a time limit, the end
state it is judged on, and its inject / expect / clean-up steps), the record of one iteration (`Drill`, with the
scenario's own typed state), and the result it leaves (`DrillResult`).

Nothing here talks to the stack: the scenarios that do (tasks/drills/scenarios/) subclass `Scenario`, and the
flow (flows/drill.py) runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar

from prefect_crisis.core.errors import DrillError
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed
from prefect_crisis.tasks.drills.end_state import EndState

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import ModelRegistry

StateT = TypeVar("StateT")
ValueT = TypeVar("ValueT")


def seconds(since: datetime, at: datetime | None) -> float | None:
    """Seconds from `since` to `at` (None stays None).

    Example:
        >>> start = datetime(2024, 1, 1, tzinfo=UTC)
        >>> seconds(start, start.replace(second=2)), seconds(start, None)
        (2.0, None)
    """
    return None if at is None else round((at - since).total_seconds(), 3)


def wait_until(
    read: Callable[[], ValueT],
    limit: float,
    every: float = 0.25,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ValueT:
    """Poll `read` until it gives something truthy or `limit` seconds pass; returns its last value.

    Example:
        >>> from prefect_crisis.core.waiting import FakeClock
        >>> fake, answers = FakeClock(), iter([None, 0, "up"])
        >>> wait_until(lambda: next(answers), 5, every=1, clock=fake, sleep=fake.sleep), fake.now
        ('up', 2.0)
    """
    return Retrying(stop=stop_after_delay(limit), wait=wait_fixed(every), clock=clock, sleep=sleep).poll(read)


@dataclass
class ChampionState:
    """What a scenario that starts from a serving champion knows: the pre-crisis version and its fallback."""

    good: str | None = None
    fallback: str | None = None


@dataclass
class Drill(Generic[StateT]):
    """One iteration's record: the scenario's own state (`state`), when the fault went in, what the checks found.

    `validate_batch` is the validation flow a batch scenario sends its batches through, handed down by the flow
    (tasks never import flows).
    """

    scenario: str
    iteration: int
    seed: int
    model: str
    limit: float
    state: StateT
    registry: ModelRegistry | None = None
    validate_batch: Callable[..., Any] | None = None
    injected_at: datetime | None = None
    cleared_at: datetime | None = None
    detect_s: float | None = None
    mitigate_s: float | None = None
    recover_s: float | None = None
    incident: str | None = None
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def require(self, condition: ValueT | None, failure: str) -> TypeGuard[ValueT]:
        """Record `failure` unless `condition` holds; returns whether it held (so a value that held is not None)."""
        if not condition:
            self.failures.append(failure)
        return bool(condition)

    def inject_now(self) -> datetime:
        self.injected_at = datetime.now(UTC)
        return self.injected_at

    @property
    def model_registry(self) -> ModelRegistry:
        """The drill model's registry, once `setup` made it.

        Raises:
            DrillError: the scenario read it before its setup made one.
        """
        if self.registry is None:
            raise DrillError(f"drill {self.scenario!r} has no registry yet: its setup makes one (synthetic_champion, real_champion)")
        return self.registry

    @property
    def fault_injected_at(self) -> datetime:
        """When the fault went in, once `inject_now` stamped it.

        Raises:
            DrillError: the scenario read it before its inject step stamped it.
        """
        if self.injected_at is None:
            raise DrillError(f"drill {self.scenario!r} has no injection time yet: its inject step stamps it (inject_now)")
        return self.injected_at

    @property
    def batch_validation(self) -> Callable[..., Any]:
        """The validation flow a batch scenario sends its batches through (`validate_batch`).

        Raises:
            DrillError: the drill was made without one (the crisis-drill flow hands it down).
        """
        if self.validate_batch is None:
            raise DrillError(f"drill {self.scenario!r} has no validation flow to send batches through: the crisis-drill flow hands it down")
        return self.validate_batch

    @property
    def fault_cleared_at(self) -> datetime:
        """When the fault was lifted, once the inject step stamped it.

        Raises:
            DrillError: the scenario read it before its inject step stamped it.
        """
        if self.cleared_at is None:
            raise DrillError(f"drill {self.scenario!r} has no clearing time yet: its inject step stamps it (cleared_at)")
        return self.cleared_at

    def since(self, at: datetime | None) -> float | None:
        return seconds(self.injected_at, at) if self.injected_at else None


@dataclass(frozen=True)
class Scenario(Generic[StateT]):
    """A drill scenario as one value: its name, what it does (`summary`), the seconds the stack has to respond
    (`limit`) and the end state it is judged on (`end`); a subclass gives its steps over a `Drill` carrying its own
    state (`new_state`): `setup` builds the model, `inject` breaks it (and stamps the time), `expect` waits for the
    stack's response and records what held, `clean_up` leaves nothing in force (it runs whatever happened before)."""

    name: str
    summary: str
    limit: float = 120.0
    end: EndState = field(default_factory=EndState)

    def new_state(self) -> StateT:
        raise NotImplementedError(f"scenario {self.name!r} names no state")

    def setup(self, drill: Drill[StateT]) -> None:
        return None

    def inject(self, drill: Drill[StateT]) -> None:
        raise NotImplementedError(f"scenario {self.name!r} injects nothing")

    def expect(self, drill: Drill[StateT]) -> None:
        raise NotImplementedError(f"scenario {self.name!r} expects nothing")

    def clean_up(self, drill: Drill[StateT]) -> None:
        return None


@dataclass(frozen=True)
class DrillResult:
    scenario: str
    iteration: int
    seed: int
    model: str
    passed: bool
    detect_s: float | None
    mitigate_s: float | None
    recover_s: float | None
    incident: str | None
    failures: tuple[str, ...]
    facts: dict[str, Any]
    wall_s: float

    @classmethod
    def of(cls, drill: Drill[Any], wall_s: float) -> DrillResult:
        """The result an iteration's record leaves."""
        return cls(
            drill.scenario,
            drill.iteration,
            drill.seed,
            drill.model,
            not drill.failures,
            drill.detect_s,
            drill.mitigate_s,
            drill.recover_s,
            drill.incident,
            tuple(drill.failures),
            drill.facts,
            wall_s,
        )

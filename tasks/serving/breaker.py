"""The serving circuit breaker (seed slide 2): stop calling a broken primary,
try it again later, close again when it answers.

closed -> open after `failure_threshold` failures within `window_seconds`;
open -> half-open once `cooldown_seconds` have passed (one trial call is let
through); half-open -> closed when the trial succeeds, -> open when it fails.
The clock is a parameter, so tests never sleep; listeners hear every state
change (the serving model emits `ml.fallback.engaged` / `released` from one).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prefect_crisis.core.vocabulary import BreakerState


@dataclass(frozen=True)
class StateChange:
    """One transition of the breaker, as listeners receive it."""

    old: BreakerState
    new: BreakerState
    reason: str
    at: float  # the breaker's clock


Listener = Callable[[StateChange], None]


class CircuitBreaker:
    """A thread-safe circuit breaker with explicit states, an injected clock and listeners.

    Example:
        >>> now = [0.0]
        >>> breaker = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=30, clock=lambda: now[0])
        >>> breaker.record_failure("timeout"); breaker.record_failure("timeout"); breaker.state
        <BreakerState.OPEN: 'open'>
        >>> breaker.allow()
        False
        >>> now[0] = 31.0; breaker.allow(), breaker.state
        (True, <BreakerState.HALF_OPEN: 'half-open'>)
        >>> breaker.record_success(); breaker.state
        <BreakerState.CLOSED: 'closed'>
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        window_seconds: float = 60.0,
        cooldown_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: tuple[Listener, ...] | list[Listener] = (),
    ):
        if failure_threshold < 1 or window_seconds <= 0 or cooldown_seconds < 0:
            raise ValueError("failure_threshold >= 1, window_seconds > 0 and cooldown_seconds >= 0 are required")
        self.failure_threshold = failure_threshold
        self.window_seconds = window_seconds
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.listeners = list(listeners)
        self._state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._lock = threading.Lock()
        self.opened_count = 0  # transitions to open (first opens and failed trials): for benchmarks and status

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def allow(self) -> bool:
        """Whether the next call may go to the primary. In half-open, one trial at a time."""
        changes = []
        with self._lock:
            if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cooldown_seconds:
                changes.append(self._move(BreakerState.HALF_OPEN, f"cool-down of {self.cooldown_seconds:g} s over: one trial call"))
            if self._state is BreakerState.CLOSED:
                allowed = True
            elif self._state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = allowed = True
            else:
                allowed = False
        self._tell(changes)
        return allowed

    def record_success(self) -> None:
        """A call to the primary answered: a half-open breaker closes."""
        changes = []
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._trial_in_flight = False
                self._failures.clear()
                changes.append(self._move(BreakerState.CLOSED, "the trial call answered"))
        self._tell(changes)

    def record_failure(self, reason: str) -> None:
        """A call to the primary raised or timed out."""
        changes = []
        with self._lock:
            now = self.clock()
            if self._state is BreakerState.HALF_OPEN:
                self._trial_in_flight = False
                self._opened_at = now
                changes.append(self._move(BreakerState.OPEN, f"the trial call failed: {reason}"))
            elif self._state is BreakerState.CLOSED:
                self._failures.append(now)
                while self._failures and now - self._failures[0] > self.window_seconds:
                    self._failures.popleft()
                if len(self._failures) >= self.failure_threshold:
                    self._opened_at = now
                    changes.append(
                        self._move(
                            BreakerState.OPEN,
                            f"{len(self._failures)} failures within {self.window_seconds:g} s (last: {reason})",
                        )
                    )
        self._tell(changes)

    def _move(self, new: BreakerState, reason: str) -> StateChange:
        change = StateChange(self._state, new, reason, self.clock())
        self._state = new
        if new is BreakerState.OPEN:
            self.opened_count += 1
        return change

    def _tell(self, changes: list[StateChange]) -> None:
        # Outside the lock: a listener may read the state.
        for change in changes:
            for listener in self.listeners:
                listener(change)

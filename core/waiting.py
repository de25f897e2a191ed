"""Waiting, polling and retrying: one policy object in tenacity's shape, with the clock and sleep injected.

A `Retrying` is a stop condition (`stop_after_delay(10) | stop_after_attempt(3)`), a wait between
attempts (`wait_fixed(0.5)`, `wait_exponential(1, maximum=30)`), and the clock and sleep it reads
(`time.monotonic` and `time.sleep` unless told; a test passes a `FakeClock`, so it never waits).
Each operation states its budget once, where it is called; nothing retries inside a retry.

Three ways to use one:

- `poll(probe)`: call `probe` until it returns something truthy, or the budget is spent (returns
  the last result, so a falsy answer means "gave up");
- `call(fn, retry_on=...)`: call `fn` again while it raises one of `retry_on`, re-raising the
  last error when the budget is spent;
- `for attempt in policy.attempts():`: a loop body that decides for itself (break on success),
  with the policy's waits between passes.

Example:
    >>> clock = FakeClock()
    >>> policy = Retrying(stop=stop_after_delay(5), wait=wait_fixed(2), clock=clock, sleep=clock.sleep)
    >>> answers = iter([None, None, "ready"])
    >>> policy.poll(lambda: next(answers)), clock.now
    ('ready', 4.0)
    >>> Retrying(stop=stop_after_attempt(3), clock=clock, sleep=clock.sleep).poll(lambda: None) is None
    True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """Where a loop stands: the attempt about to run (1-based) and the seconds since the first began; asked whether to
    give up, also the pause the policy would take before the next attempt (`upcoming_sleep`)."""

    number: int
    elapsed: float
    upcoming_sleep: float = 0.0


class Stop:
    """When to give up, asked after a failed attempt; `a | b` gives up when either does."""

    def __call__(self, attempt: Attempt) -> bool:
        raise NotImplementedError

    def __or__(self, other: Stop) -> Stop:
        return _StopAny(self, other)


@dataclass(frozen=True)
class _StopAny(Stop):
    first: Stop
    second: Stop

    def __call__(self, attempt: Attempt) -> bool:
        return self.first(attempt) or self.second(attempt)


@dataclass(frozen=True)
class stop_after_attempt(Stop):
    """Give up once `attempts` attempts have been made."""

    attempts: int

    def __call__(self, attempt: Attempt) -> bool:
        return attempt.number >= self.attempts


@dataclass(frozen=True)
class stop_after_delay(Stop):
    """Give up once `seconds` have passed since the first attempt began."""

    seconds: float

    def __call__(self, attempt: Attempt) -> bool:
        return attempt.elapsed >= self.seconds


@dataclass(frozen=True)
class stop_before_delay(Stop):
    """Give up when the next pause would end more than `seconds` after the first attempt began: never sleeps past the budget.

    Example:
        >>> stop_before_delay(1)(Attempt(3, 0.7, upcoming_sleep=0.4)), stop_before_delay(1)(Attempt(3, 0.6, upcoming_sleep=0.4))
        (True, False)
    """

    seconds: float

    def __call__(self, attempt: Attempt) -> bool:
        return attempt.elapsed + attempt.upcoming_sleep > self.seconds


@dataclass(frozen=True)
class stop_never(Stop):
    """Never give up (a supervisor that restarts what it watches)."""

    def __call__(self, attempt: Attempt) -> bool:
        return False


@dataclass(frozen=True)
class wait_fixed:
    """The same pause after every attempt."""

    seconds: float

    def __call__(self, attempt: Attempt) -> float:
        return self.seconds


@dataclass(frozen=True)
class wait_exponential:
    """`initial`, then twice as long after each attempt, never more than `maximum`.

    Example:
        >>> [wait_exponential(1, maximum=5)(Attempt(n, 0)) for n in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0

    def __call__(self, attempt: Attempt) -> float:
        return float(min(self.initial * self.multiplier ** (attempt.number - 1), self.maximum))


class FakeClock:
    """A clock whose `sleep` moves it on at once: pass `clock=fake, sleep=fake.sleep` (or `asleep=fake.asleep`)."""

    def __init__(self, start: float = 0.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass(frozen=True)
class Retrying:
    """A budget (`stop`), a pace (`wait`), and the clock and sleep they are measured with."""

    stop: Stop
    wait: Callable[[Attempt], float] = wait_fixed(0.5)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep  # its answer is ignored: `threading.Event.wait` sleeps until set
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _pause(self, attempt: Attempt) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        pause = max(0.0, self.wait(attempt))
        if self.stop(replace(attempt, upcoming_sleep=pause)):
            return None
        return pause

    def attempts(self) -> Iterator[Attempt]:
        """Attempt after attempt, the policy's pause between them, until the loop breaks or the budget is spent."""
        started = self.clock()
        number = 1
        while True:
            yield Attempt(number, self.clock() - started)
            pause = self._pause(Attempt(number, self.clock() - started))
            if pause is None:
                return
            self.sleep(pause)
            number += 1

    async def aattempts(self) -> AsyncIterator[Attempt]:
        """`attempts` for a coroutine: the pauses are awaited (`asleep`)."""
        started = self.clock()
        number = 1
        while True:
            yield Attempt(number, self.clock() - started)
            pause = self._pause(Attempt(number, self.clock() - started))
            if pause is None:
                return
            await self.asleep(pause)
            number += 1

    def poll(self, probe: Callable[[], T]) -> T:
        """Call `probe` until its answer is truthy or the budget is spent; its last answer either way."""
        answer = None
        for _attempt in self.attempts():
            answer = probe()
            if answer:
                break
        return answer  # type: ignore[return-value]

    def call(
        self,
        fn: Callable[[], T],
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retry_if: Callable[[BaseException], bool] | None = None,
        before_sleep: Callable[[BaseException, float], None] | None = None,
    ) -> T:
        """`fn()`, called again while it raises one of `retry_on` (and, given `retry_if`, one it accepts); the last error
        is raised when the budget is spent. `before_sleep(error, pause)` runs before each pause (a log line, a reset)."""
        started, number = self.clock(), 1
        while True:
            try:
                return fn()
            except retry_on as error:
                if retry_if is not None and not retry_if(error):
                    raise
                pause = self._pause(Attempt(number, self.clock() - started))
                if pause is None:
                    raise
                if before_sleep is not None:
                    before_sleep(error, pause)
            self.sleep(pause)
            number += 1

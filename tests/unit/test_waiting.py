"""The wait policy (core/waiting.py): budgets, pauses and retries measured on a fake clock, never waited for."""

from __future__ import annotations

import asyncio
import doctest
import importlib

import pytest

from prefect_crisis.core.waiting import (
    Attempt,
    FakeClock,
    Retrying,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    stop_never,
    wait_exponential,
    wait_fixed,
)


def policy(clock: FakeClock, **kwargs) -> Retrying:
    return Retrying(clock=clock, sleep=clock.sleep, asleep=clock.asleep, **kwargs)


def test_poll_gives_up_when_the_delay_is_spent_and_returns_the_last_answer():
    clock = FakeClock()
    answer = policy(clock, stop=stop_after_delay(3), wait=wait_fixed(1)).poll(lambda: None)
    assert answer is None and clock.now == 3.0 and clock.sleeps == [1, 1, 1]


def test_stops_combine_with_or_the_first_to_give_up_wins():
    clock = FakeClock()
    calls = []
    policy(clock, stop=stop_after_delay(100) | stop_after_attempt(2), wait=wait_fixed(5)).poll(lambda: calls.append(1))
    assert len(calls) == 2 and clock.now == 5.0


def test_call_retries_only_the_named_errors_and_reraises_the_last():
    clock = FakeClock()
    failures = iter([OSError("1"), OSError("2"), "done"])

    def flaky():
        outcome = next(failures)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert policy(clock, stop=stop_after_attempt(5), wait=wait_exponential(1, maximum=10)).call(flaky, retry_on=(OSError,)) == "done"
    assert clock.sleeps == [1.0, 2.0]
    with pytest.raises(OSError, match="always"):
        policy(clock, stop=stop_after_attempt(3)).call(lambda: (_ for _ in ()).throw(OSError("always")), retry_on=(OSError,))
    with pytest.raises(ValueError):  # not retried: raised at the first attempt
        policy(FakeClock(), stop=stop_after_attempt(3)).call(lambda: int("x"), retry_on=(OSError,))


def test_call_retries_only_what_retry_if_accepts_and_says_so_before_each_pause():
    clock, notes = FakeClock(), []
    errors = iter([OSError("locked"), OSError("locked"), OSError("refused")])

    def store():
        raise next(errors)

    with pytest.raises(OSError, match="refused"):  # retry_if refuses it: raised at once, no third pause
        policy(clock, stop=stop_after_attempt(9), wait=wait_fixed(1)).call(
            store,
            retry_on=(OSError,),
            retry_if=lambda error: str(error) == "locked",
            before_sleep=lambda error, pause: notes.append((str(error), pause)),
        )
    assert notes == [("locked", 1), ("locked", 1)] and clock.sleeps == [1, 1]


def test_stop_before_delay_never_sleeps_past_the_budget():
    clock = FakeClock()
    with pytest.raises(OSError):
        policy(clock, stop=stop_before_delay(1), wait=wait_exponential(0.2, maximum=2)).call(
            lambda: (_ for _ in ()).throw(OSError("down")), retry_on=(OSError,)
        )
    assert clock.sleeps == [0.2, 0.4] and clock.now <= 1  # a third pause (0.8 s) would have ended at 1.4 s


def test_attempts_number_and_time_each_pass():
    clock = FakeClock()
    seen = [(attempt.number, attempt.elapsed) for attempt in policy(clock, stop=stop_after_attempt(3), wait=wait_fixed(2)).attempts()]
    assert seen == [(1, 0.0), (2, 2.0), (3, 4.0)]


def test_async_attempts_await_the_injected_sleep():
    clock = FakeClock()

    async def run() -> list[int]:
        return [attempt.number async for attempt in policy(clock, stop=stop_after_delay(1), wait=wait_fixed(0.5)).aattempts()]

    assert asyncio.run(run()) == [1, 2, 3] and clock.now == 1.0


def test_exponential_wait_is_capped_and_stop_never_never_stops():
    assert [wait_exponential(0.5, maximum=3)(Attempt(n, 0)) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not stop_never()(Attempt(10**6, 10**9))


@pytest.mark.parametrize(
    "name",
    [
        "prefect_crisis.core.waiting",
        "prefect_crisis.tasks.drills.scenario",
        "prefect_crisis.deployments.process",
        "prefect_crisis.deployments.warm_worker",
        "prefect_crisis.deployments.serve_cli",
    ],
)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

"""The circuit breaker's state machine, on an injected clock (no sleeping)."""

import pytest

from prefect_crisis.core.vocabulary import BreakerState
from prefect_crisis.tasks.serving.breaker import CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_opens_after_n_failures_within_the_window(clock):
    breaker = CircuitBreaker(failure_threshold=3, window_seconds=10, cooldown_seconds=5, clock=clock)
    for _ in range(2):
        breaker.record_failure("boom")
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure("boom")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_failures_spread_beyond_the_window_never_open_it(clock):
    breaker = CircuitBreaker(failure_threshold=3, window_seconds=10, cooldown_seconds=5, clock=clock)
    for _ in range(10):
        breaker.record_failure("slow")
        clock.now += 6  # two failures at most in any 10 s
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_count == 0


def test_half_open_lets_one_trial_through_and_closes_on_success(clock):
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=30, clock=clock)
    breaker.record_failure("boom")
    clock.now = 29.9
    assert not breaker.allow() and breaker.state is BreakerState.OPEN
    clock.now = 30.0
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(), "a second caller must not reach the primary while the trial runs"
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_failed_trial_opens_it_again_for_a_full_cooldown(clock):
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=30, clock=clock)
    breaker.record_failure("boom")
    clock.now = 31
    assert breaker.allow()
    breaker.record_failure("still broken")
    assert breaker.state is BreakerState.OPEN
    clock.now = 60  # 29 s after the failed trial
    assert not breaker.allow()
    clock.now = 61.5
    assert breaker.allow()
    assert breaker.opened_count == 2


def test_old_failures_do_not_count_after_closing(clock):
    breaker = CircuitBreaker(failure_threshold=2, window_seconds=100, cooldown_seconds=1, clock=clock)
    breaker.record_failure("a")
    breaker.record_failure("b")
    clock.now = 2
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure("c")
    assert breaker.state is BreakerState.CLOSED, "failures before the breaker closed must be forgotten"


def test_listeners_hear_every_transition_in_order(clock):
    heard = []
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=clock, listeners=[heard.append])
    breaker.record_failure("timeout")
    clock.now = 5
    breaker.allow()
    breaker.record_success()
    assert [(change.old, change.new) for change in heard] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert "timeout" in heard[0].reason and heard[1].at == 5


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


def test_a_threshold_of_one_opens_on_the_first_failure(clock):
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=clock)
    breaker.record_failure("boom")  # exactly the threshold: open (not only beyond it)
    assert breaker.state is BreakerState.OPEN and breaker.opened_count == 1


def test_a_failure_exactly_window_seconds_old_still_counts(clock):
    breaker = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=5, clock=clock)
    breaker.record_failure("first")
    clock.now = 10.0  # the first failure is exactly window_seconds old: still within the window
    breaker.record_failure("second")
    assert breaker.state is BreakerState.OPEN
    late = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=5, clock=clock)
    clock.now = 0.0
    late.record_failure("first")
    clock.now = 10.001  # just beyond it: the first failure has left the window
    late.record_failure("second")
    assert late.state is BreakerState.CLOSED


def test_half_open_exactly_when_the_cooldown_is_over(clock):
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=30, clock=clock)
    breaker.record_failure("boom")
    clock.now = 29.999
    assert not breaker.allow() and breaker.state is BreakerState.OPEN
    clock.now = 30.0  # exactly the cool-down: one trial call
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # one trial at a time


def test_a_zero_cooldown_lets_a_trial_through_at_once(clock):
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=0, clock=clock)
    breaker.record_failure("boom")
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN


def test_the_defaults_open_at_five_failures_in_a_minute_and_try_again_after_thirty_seconds(clock):
    breaker = CircuitBreaker(clock=clock)
    assert (breaker.failure_threshold, breaker.window_seconds, breaker.cooldown_seconds) == (5, 60.0, 30.0)
    for _ in range(4):
        breaker.record_failure("boom")
    assert breaker.state is BreakerState.CLOSED
    clock.now = 60.0  # the first four are exactly a minute old: still counted
    breaker.record_failure("boom")
    assert breaker.state is BreakerState.OPEN
    clock.now = 89.9
    assert not breaker.allow()
    clock.now = 90.0
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN


def test_failures_while_open_neither_reopen_it_nor_restart_the_cooldown(clock):
    heard = []
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=clock, listeners=[heard.append])
    breaker.record_failure("first")
    clock.now = 3.0
    breaker.record_failure("while open")  # a call that was already in flight
    assert (len(heard), breaker.opened_count) == (1, 1)
    clock.now = 5.0  # five seconds after the first failure, two after the second
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN


def test_a_success_while_closed_changes_nothing(clock):
    heard = []
    breaker = CircuitBreaker(failure_threshold=2, window_seconds=10, cooldown_seconds=5, clock=clock, listeners=[heard.append])
    breaker.record_failure("a")
    breaker.record_success()  # closed: the failure still counts
    breaker.record_failure("b")
    assert breaker.state is BreakerState.OPEN and [change.new for change in heard] == [BreakerState.OPEN]


def test_every_cycle_gets_its_own_trial_call(clock):
    """A trial that answered, and one that failed, both free the next half-open state for a new trial."""
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=clock)
    for cycle in range(3):
        breaker.record_failure(f"cycle {cycle}")
        clock.now += 5
        assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
        breaker.record_success()
        assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_count == 3


def test_listeners_given_and_added_all_hear_each_change_at_the_clocks_time(clock):
    given, added = [], []
    breaker = CircuitBreaker(failure_threshold=1, window_seconds=10, cooldown_seconds=5, clock=clock, listeners=(given.append,))
    breaker.add_listener(added.append)
    clock.now = 7.5
    breaker.record_failure("timeout")
    assert given == added and [(change.old, change.new, change.at) for change in given] == [(BreakerState.CLOSED, BreakerState.OPEN, 7.5)]
    assert given[0].reason == "1 failures within 10 s (last: timeout)"

"""Stop conditions for training, as small composable policies (after tenacity).

Each condition looks at the progress after a mini-batch and either returns a
`StopReason` or None; `a | b` stops when either does. Time comes from an
injected clock, so tests never wait.

    stop = stop_when_flag_set(read_flag) | stop_on_nonfinite_loss() | stop_after_seconds(600)
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_crisis.blocks.training_policy import TrainingPolicy


class StopKind(str, Enum):
    """Why training stopped early."""

    FLAG = "stop-flag"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    CRASHED = "crashed"
    KILLED = "killed"  # the process ended without running any handler (SIGKILL, out of memory); found by the next run
    NON_FINITE_LOSS = "non-finite-loss"
    DIVERGED = "diverged"
    STALLED = "stalled"
    TIME_BUDGET = "time-budget"

    @property
    def is_failure(self) -> bool:
        """A guard caught training going wrong (as opposed to being told to stop, or
        interrupted from outside): its checkpoint holds the failed weights."""
        return self in (StopKind.NON_FINITE_LOSS, StopKind.DIVERGED)


@dataclass(frozen=True)
class StopReason:
    kind: StopKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


@dataclass
class TrainingProgress:
    """Where training is: updated by the loop after every mini-batch.

    Mini-batch losses are noisy, so the guards that compare losses over time
    (divergence, stall) look at an exponential moving average of them
    (`smoothing` is its weight on the newest loss; 1.0 turns smoothing off).
    """

    epoch: int = 0
    batch_index: int = 0
    batches_seen: int = 0
    loss: float = math.nan
    smoothed_loss: float = math.nan
    best_loss: float = math.inf
    batches_since_best: int = 0
    elapsed_seconds: float = 0.0
    smoothing: float = 0.1
    losses: list[float] = field(default_factory=list)

    def record(self, loss: float, min_delta: float = 0.0) -> None:
        self.loss = loss
        self.batches_seen += 1
        self.losses.append(loss)
        if math.isfinite(loss):
            previous = self.smoothed_loss
            self.smoothed_loss = loss if math.isnan(previous) else (1 - self.smoothing) * previous + self.smoothing * loss
        if math.isfinite(self.smoothed_loss) and self.smoothed_loss < self.best_loss - min_delta:
            self.best_loss = self.smoothed_loss
            self.batches_since_best = 0
        else:
            self.batches_since_best += 1


class StopCondition(ABC):
    """Base of the stop policies; compose with `|`."""

    @abstractmethod
    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        """The reason to stop after this mini-batch, or None to go on."""

    def __or__(self, other: StopCondition) -> StopCondition:
        return stop_any(self, other)


class stop_any(StopCondition):
    """Stop when any of the conditions says so (the first one's reason wins)."""

    def __init__(self, *conditions: StopCondition):
        self.conditions: tuple[StopCondition, ...] = tuple(
            part for condition in conditions for part in (condition.conditions if isinstance(condition, stop_any) else (condition,))
        )

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        for condition in self.conditions:
            reason = condition(progress)
            if reason is not None:
                return reason
        return None


class stop_when_flag_set(StopCondition):
    """Stop when an external flag is set (a Prefect Variable, typically).

    `read_flag` returns the flag's reason text or None; it is called at most
    once per `poll_seconds` of the clock, so the loop stays fast.
    """

    def __init__(self, read_flag: Callable[[], str | None], poll_seconds: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.read_flag = read_flag
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._last_read = -math.inf

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        now = self.clock()
        if now - self._last_read < self.poll_seconds:
            return None
        self._last_read = now
        flag = self.read_flag()
        return None if flag is None else StopReason(StopKind.FLAG, flag)


class stop_on_nonfinite_loss(StopCondition):
    """Stop as soon as the loss is NaN or infinite."""

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        if not math.isfinite(progress.loss):
            return StopReason(StopKind.NON_FINITE_LOSS, f"loss became {progress.loss} at epoch {progress.epoch}, batch {progress.batch_index}")
        return None


class stop_on_divergence(StopCondition):
    """Stop when the smoothed loss exceeds `factor` times its best (after a warm-up)."""

    def __init__(self, factor: float = 10.0, warmup_batches: int = 10):
        self.factor = factor
        self.warmup_batches = warmup_batches

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        if progress.batches_seen <= self.warmup_batches or not math.isfinite(progress.best_loss):
            return None
        if progress.smoothed_loss > self.factor * progress.best_loss:
            return StopReason(StopKind.DIVERGED, f"loss {progress.smoothed_loss:.4g} is over {self.factor:g}x the best {progress.best_loss:.4g}")
        return None


class stop_on_stall(StopCondition):
    """Stop when the smoothed loss has not set a new best for `patience_batches` mini-batches."""

    def __init__(self, patience_batches: int):
        self.patience_batches = patience_batches

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        if progress.batches_since_best >= self.patience_batches:
            return StopReason(StopKind.STALLED, f"no improvement in {progress.batches_since_best} mini-batches (best {progress.best_loss:.4g})")
        return None


class stop_after_seconds(StopCondition):
    """Stop when training has run for `seconds` (of the loop's clock)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, progress: TrainingProgress) -> StopReason | None:
        if progress.elapsed_seconds >= self.seconds:
            return StopReason(StopKind.TIME_BUDGET, f"time budget of {self.seconds:g}s used ({progress.elapsed_seconds:.1f}s)")
        return None


def policy_stop_condition(policy: TrainingPolicy, read_flag: Callable[[], str | None], clock: Callable[[], float] = time.monotonic) -> StopCondition:
    """The stop hook a policy asks for: the stop flag (read through `read_flag`), a non-finite loss, and the
    guards the policy sets (divergence, stall, time budget).

    Example:
        >>> from prefect_crisis.blocks.training_policy import TrainingPolicy
        >>> stop = policy_stop_condition(TrainingPolicy(stall_patience_batches=5), lambda: None)
        >>> [type(condition).__name__ for condition in stop.conditions]
        ['stop_when_flag_set', 'stop_on_nonfinite_loss', 'stop_on_divergence', 'stop_on_stall', 'stop_after_seconds']
    """
    stop = stop_when_flag_set(read_flag, policy.flag_poll_seconds, clock) | stop_on_nonfinite_loss()
    if policy.divergence_factor:
        stop = stop | stop_on_divergence(policy.divergence_factor)
    if policy.stall_patience_batches:
        stop = stop | stop_on_stall(policy.stall_patience_batches)
    if policy.time_budget_seconds:
        stop = stop | stop_after_seconds(policy.time_budget_seconds)
    return stop

"""Stop policies, the training loop, resumption and the promotion gate, as plain functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefect_crisis.blocks import TrainingPolicy
from prefect_crisis.core.errors import TrainingError
from prefect_crisis.tasks.training.gate import decide_promotion
from prefect_crisis.tasks.training.loop import Checkpoint, learner_of, make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training.stopping import (
    StopKind,
    TrainingProgress,
    stop_after_seconds,
    stop_any,
    stop_on_divergence,
    stop_on_nonfinite_loss,
    stop_on_stall,
    stop_when_flag_set,
)

CLASSES = np.array([0, 1])


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def data(rows: int = 2_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def progress_with(losses: list[float], smoothing: float = 1.0) -> TrainingProgress:
    progress = TrainingProgress(smoothing=smoothing)
    for loss in losses:
        progress.record(loss)
    return progress


def test_conditions_compose_with_or_and_the_first_reason_wins():
    stop = stop_on_nonfinite_loss() | stop_on_stall(2) | stop_after_seconds(10)
    assert isinstance(stop, stop_any) and len(stop.conditions) == 3
    assert stop(progress_with([0.5])) is None
    assert stop(progress_with([0.5, math.nan])).kind is StopKind.NON_FINITE_LOSS
    assert stop(progress_with([0.5, 0.6, 0.7])).kind is StopKind.STALLED


def test_divergence_waits_for_warmup_then_compares_with_the_best():
    stop = stop_on_divergence(factor=3, warmup_batches=2)
    assert stop(progress_with([0.1, 0.5])) is None  # still warming up
    assert stop(progress_with([0.1, 0.2, 0.25])) is None
    reason = stop(progress_with([0.1, 0.2, 0.31]))
    assert reason.kind is StopKind.DIVERGED and "over 3x the best 0.1" in reason.detail


def test_stall_stops_at_exactly_patience_mini_batches_without_a_new_best():
    stop = stop_on_stall(3)
    assert progress_with([0.5, 0.5]).batches_since_best == 1  # an equal loss is no new best
    assert stop(progress_with([0.5, 0.6, 0.6])) is None  # 2 without a new best
    reason = stop(progress_with([0.5, 0.6, 0.6, 0.5]))  # 3: the window is full
    assert reason.kind is StopKind.STALLED and "no improvement in 3 mini-batches" in reason.detail


def test_divergence_boundaries_first_batch_after_warmup_and_a_loss_at_exactly_factor_times_the_best():
    stop = stop_on_divergence(factor=2, warmup_batches=2)
    assert stop(progress_with([0.25, 0.5])) is None  # the warm-up's last batch
    assert stop(progress_with([0.25, 0.3, 0.5])) is None  # 0.5 is exactly 2x the best: not over it
    assert stop(progress_with([0.25, 0.3, 0.5001])).kind is StopKind.DIVERGED


def test_flag_is_read_at_most_once_per_poll_interval_of_the_clock():
    clock, reads = FakeClock(), []
    stop = stop_when_flag_set(lambda: reads.append(clock.now) or None, poll_seconds=0.5, clock=clock)
    for now in (0.0, 0.1, 0.4, 0.5, 0.6, 1.2):
        clock.now = now
        stop(TrainingProgress())
    assert reads == [0.0, 0.5, 1.2]


def test_divergence_ignores_one_noisy_mini_batch_but_not_a_trend():
    stop = stop_on_divergence(factor=3, warmup_batches=5)
    noisy = progress_with([0.1] * 20 + [1.0], smoothing=0.1)
    assert stop(noisy) is None
    trend = progress_with([0.1] * 20 + [1.0] * 10, smoothing=0.1)
    assert stop(trend).kind is StopKind.DIVERGED


def test_time_budget_uses_elapsed_time_of_the_loop_clock():
    progress = TrainingProgress(elapsed_seconds=9.9)
    assert stop_after_seconds(10)(progress) is None
    progress.elapsed_seconds = 10
    assert stop_after_seconds(10)(progress).kind is StopKind.TIME_BUDGET


def test_flag_stops_training_exactly_at_the_next_check_and_checkpoints_position():
    X, y = data()
    batches_before_flag = 7
    seen = []
    flag = lambda: "operator said stop" if len(seen) >= batches_before_flag else seen.append(1)  # noqa: E731
    saved: list[Checkpoint] = []
    outcome = train_with_stop_hook(
        make_estimator(),
        X,
        y,
        classes=CLASSES,
        epochs=3,
        batch_size=100,
        stop=stop_when_flag_set(flag, poll_seconds=0),
        on_stop=lambda c: saved.append(c) or "uri://checkpoint",
    )
    assert outcome.stop_reason.kind is StopKind.FLAG and outcome.stop_reason.detail == "operator said stop"
    assert outcome.progress.batches_seen == batches_before_flag + 1
    (checkpoint,) = saved
    assert (checkpoint.position.epoch, checkpoint.position.batch_index) == (0, batches_before_flag + 1)
    assert outcome.checkpoint_uri == "uri://checkpoint"


def test_exploding_learning_rate_is_stopped_by_the_nonfinite_loss_guard():
    X, y = data()
    X[::50] *= 1e200  # a few absurd rows make the weights overflow
    estimator = make_estimator("sgd", {"learning_rate": "constant", "eta0": 1e10})
    outcome = train_with_stop_hook(estimator, X, y, classes=CLASSES, epochs=5, batch_size=100, stop=stop_on_nonfinite_loss(), on_stop=lambda c: "ck")
    assert outcome.stop_reason.kind is StopKind.NON_FINITE_LOSS
    assert outcome.progress.batches_seen < 100


def test_resuming_from_a_checkpoint_equals_training_without_the_stop():
    X, y = data()
    uninterrupted = train_with_stop_hook(make_estimator(), X, y, classes=CLASSES, epochs=2, batch_size=100, stop=stop_after_seconds(60))
    saved: list[Checkpoint] = []
    calls = iter(range(1_000))
    stopped = train_with_stop_hook(
        make_estimator(),
        X,
        y,
        classes=CLASSES,
        epochs=2,
        batch_size=100,
        stop=stop_when_flag_set(lambda: "stop" if next(calls) == 24 else None, poll_seconds=0),
        on_stop=lambda c: saved.append(c) or "ck",
    )
    assert not stopped.completed and saved[0].position.epoch == 1 and saved[0].position.batch_index == 5
    resumed = train_with_stop_hook(
        make_estimator(), X, y, classes=CLASSES, epochs=2, batch_size=100, stop=stop_after_seconds(60), resume_from=saved[0]
    )
    assert resumed.completed and resumed.progress.batches_seen == uninterrupted.progress.batches_seen == 40
    np.testing.assert_array_equal(learner_of(resumed.estimator).coef_, learner_of(uninterrupted.estimator).coef_)


def test_mlp_trains_through_the_same_hook():
    X, y = data()
    outcome = train_with_stop_hook(
        make_estimator("mlp", {"learning_rate_init": 0.01}), X, y, classes=CLASSES, epochs=5, batch_size=100, stop=stop_after_seconds(60)
    )
    assert outcome.completed and outcome.estimator.score(X, y) > 0.8


def test_estimators_without_partial_fit_are_refused():
    from sklearn.ensemble import RandomForestClassifier

    X, y = data(100)
    with pytest.raises(TrainingError, match="no partial_fit"):
        train_with_stop_hook(RandomForestClassifier(), X, y, classes=CLASSES, epochs=1, batch_size=10, stop=stop_after_seconds(1))


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "why"),
    [
        ({"accuracy": 0.80}, None, True, "no champion yet"),
        ({"accuracy": 0.90, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, True, "beats the champion"),
        ({"accuracy": 0.885, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, False, "does not beat"),
        ({"accuracy": 0.95, "log_loss": 0.50}, {"accuracy": 0.88, "log_loss": 0.31}, False, "guard log_loss worsens"),
    ],
)
def test_promotion_gate(candidate, champion, promote, why):
    decision = decide_promotion(candidate, champion, TrainingPolicy(promotion_margin=0.01), holdout_rows=1_000)
    assert decision.promote is promote and why in decision.reason


def test_promotion_gate_respects_lower_is_better_primary_metrics():
    policy = TrainingPolicy(primary_metric="log_loss", guard_metrics={})
    assert decide_promotion({"log_loss": 0.2}, {"log_loss": 0.3}, policy, holdout_rows=1_000).promote
    assert not decide_promotion({"log_loss": 0.4}, {"log_loss": 0.3}, policy, holdout_rows=1_000).promote


def test_an_interruption_from_outside_writes_the_checkpoint_then_propagates():
    X, y = data()
    calls = iter(range(1_000))

    def interrupt_at_batch_12(progress):
        if next(calls) == 11:
            raise KeyboardInterrupt  # what a termination signal looks like to the loop
        return None

    saved: list[Checkpoint] = []
    with pytest.raises(KeyboardInterrupt):
        train_with_stop_hook(
            make_estimator(),
            X,
            y,
            classes=CLASSES,
            epochs=2,
            batch_size=100,
            stop=interrupt_at_batch_12,
            on_stop=lambda c: saved.append(c) or "ck",
        )
    (checkpoint,) = saved
    assert (checkpoint.position.epoch, checkpoint.position.batch_index) == (0, 12)  # 12 batches trained
    assert len(checkpoint.losses) == 12

"""Training with a stop hook (seed slide 1), as a plain function.

`train_with_stop_hook` trains any scikit-learn estimator with `partial_fit`
over epochs of shuffled mini-batches. After every mini-batch it records the
loss and asks the stop condition whether to go on; on a stop it hands the
estimator and its position to `on_stop` (which writes the checkpoint) before
returning. With `checkpoint_every_seconds` it also writes the checkpoint while
training goes on (0: after every mini-batch), so a process killed outright
(SIGKILL, out of memory), which runs no handler, loses at most that much work.
Resuming from a checkpoint replays the same shuffles, so a resumed run
continues exactly where the stopped one left off.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.tasks.stopping import StopCondition, StopReason, TrainingProgress


LOGGER = logging.getLogger("prefect_crisis.training")


@dataclass(frozen=True)
class Position:
    """Where training resumes: the next mini-batch to train on."""

    epoch: int
    batch_index: int


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """Everything needed to continue training: estimator state and position."""

    estimator: Any
    position: Position
    fingerprint: str
    losses: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class TrainingOutcome:
    """How training ended: completed, or stopped with a reason (and checkpoint)."""

    estimator: Any
    progress: TrainingProgress
    stop_reason: StopReason | None = None
    checkpoint_uri: str | None = None

    @property
    def completed(self) -> bool:
        return self.stop_reason is None


def make_estimator(kind: str = "sgd", params: dict[str, Any] | None = None, seed: int = 0):
    """A fresh estimator with `partial_fit` and `predict_proba`."""
    params = dict(params or {})
    if kind == "sgd":
        return SGDClassifier(**{"loss": "log_loss", "alpha": 1e-4, "random_state": seed, **params})
    if kind == "mlp":
        return MLPClassifier(**{"hidden_layer_sizes": (32,), "random_state": seed, **params})
    raise TrainingError(f"unknown estimator {kind!r}: use 'sgd' or 'mlp', or pass an estimator with partial_fit")


def batch_loss(estimator, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Log loss of the estimator on one mini-batch; NaN when it cannot be computed
    (weights blown up to inf/NaN make probabilities meaningless)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            probabilities = estimator.predict_proba(X)
        except (ValueError, FloatingPointError, OverflowError):
            return math.nan
        if not np.all(np.isfinite(probabilities)):
            return math.nan
        return float(log_loss(y, probabilities, labels=classes))


def epoch_order(rows: int, epoch: int, seed: int) -> np.ndarray:
    """The shuffle of one epoch: the same for a run and its resumption."""
    return np.random.default_rng([seed, epoch]).permutation(rows)


def train_with_stop_hook(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    *,
    classes: np.ndarray,
    epochs: int,
    batch_size: int,
    stop: StopCondition,
    on_stop: Callable[[Checkpoint], str | None] = lambda checkpoint: None,
    on_epoch: Callable[[TrainingProgress], None] = lambda progress: None,
    resume_from: Checkpoint | None = None,
    fingerprint: str = "",
    seed: int = 0,
    clock: Callable[[], float] = time.monotonic,
    checkpoint_every_seconds: float | None = None,
) -> TrainingOutcome:
    """Train with `partial_fit`, checking `stop` between mini-batches.

    Args:
        estimator: a scikit-learn estimator with `partial_fit` (cloned unless resuming).
        classes: every class label, as `partial_fit` needs on its first call.
        stop: the stop condition, e.g. `stop_when_flag_set(...) | stop_on_nonfinite_loss()`.
        on_stop: writes the checkpoint (when a stop is decided, and every `checkpoint_every_seconds`); returns its URI.
        on_epoch: called after each epoch (progress reporting).
        resume_from: a checkpoint to continue from (its estimator is used as is).
        checkpoint_every_seconds: also write the checkpoint after a mini-batch once this long has passed since the
            last one (0: after every mini-batch, so a killed process loses only the mini-batch in flight); None:
            only when training stops.

    Returns:
        A `TrainingOutcome`; `stop_reason` is None when every epoch ran.

    Example:
        >>> from prefect_crisis.tasks.stopping import stop_after_seconds
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(2_000, 4)); y = (X[:, 0] > 0).astype(int)
        >>> outcome = train_with_stop_hook(make_estimator(), X, y, classes=np.array([0, 1]),
        ...     epochs=3, batch_size=100, stop=stop_after_seconds(60))
        >>> outcome.completed, outcome.progress.batches_seen, outcome.progress.loss < 0.3
        (True, 60, True)
    """
    if not hasattr(estimator, "partial_fit"):
        raise TrainingError(f"{type(estimator).__name__} has no partial_fit: it cannot be trained in stoppable mini-batches")
    if batch_size < 1 or epochs < 1:
        raise TrainingError(f"epochs ({epochs}) and batch_size ({batch_size}) must be at least 1")
    start = resume_from.position if resume_from else Position(0, 0)
    model = resume_from.estimator if resume_from else clone(estimator)
    progress = TrainingProgress(epoch=start.epoch, batch_index=start.batch_index)
    for loss in resume_from.losses if resume_from else ():
        progress.record(loss)
    batches = math.ceil(len(X) / batch_size)
    done = start  # the next mini-batch to train: everything before it is in `model`
    saved: dict[str, Any] = {"position": None, "uri": None, "at": clock()}

    def checkpoint() -> str | None:
        if saved["position"] != done:  # the same position is never written twice
            saved["uri"] = on_stop(Checkpoint(model, done, fingerprint, tuple(progress.losses)))
            saved["position"] = done
        saved["at"] = clock()
        return saved["uri"]

    started = clock()
    try:
        for epoch in range(start.epoch, epochs):
            order = epoch_order(len(X), epoch, seed)
            for batch_index in range(start.batch_index if epoch == start.epoch else 0, batches):
                rows = order[batch_index * batch_size : (batch_index + 1) * batch_size]
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    try:
                        model.partial_fit(X[rows], y[rows], classes=classes)
                        loss = batch_loss(model, X[rows], y[rows], classes)
                    except (ValueError, FloatingPointError, OverflowError):
                        loss = math.nan  # blown-up weights: the non-finite-loss guard stops training
                done = Position(epoch, batch_index + 1) if batch_index + 1 < batches else Position(epoch + 1, 0)
                progress.epoch, progress.batch_index = epoch, batch_index
                progress.record(loss)
                progress.elapsed_seconds = clock() - started
                if checkpoint_every_seconds is not None and clock() - saved["at"] >= checkpoint_every_seconds:
                    try:
                        checkpoint()  # before the stop hook: whatever it reports has been written
                    except Exception as error:  # noqa: BLE001 - a periodic write is best effort: training goes on
                        saved["at"] = clock()  # tried again after the interval
                        LOGGER.warning("periodic checkpoint not written (%s: %s); training goes on", type(error).__name__, error)
                reason = stop(progress)
                if reason is not None:
                    return TrainingOutcome(model, progress, reason, checkpoint())
            on_epoch(progress)
    except BaseException:
        # Interrupted from outside (Prefect's TerminationSignal on a cancel,
        # Ctrl-C): keep the work done. A mini-batch in flight is trained again on resume.
        checkpoint()
        raise
    return TrainingOutcome(model, progress)

"""Training with a stop hook (seed slide 1), as a plain function.

`train_with_stop_hook` trains any scikit-learn estimator with `partial_fit`
over epochs of shuffled mini-batches, or a pipeline whose last step has one:
the steps before it (imputation, scaling) are fitted once on the whole training
part, then the last step learns from transformed mini-batches. The default
primary is such a pipeline (`make_estimator`): real columns sit on scales from
1e-3 to 1e3, and an SGD on raw values scored near chance on them.

After every mini-batch it records the loss and asks the stop condition
whether to go on; on a stop it hands the estimator and its position to
`on_stop` (which writes the checkpoint) before returning. With `checkpoint_every_seconds` it also writes the checkpoint while
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
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.tasks.training.stopping import StopCondition, StopReason, TrainingProgress

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


# The SGD's step size falls slowly (eta0 / t^0.25) instead of scikit-learn's "optimal" schedule, whose large early
# steps left the probabilities overconfident (log loss 0.6-1.4 where a logistic regression has 0.1-0.3 on the same rows).
SGD_DEFAULTS = {"loss": "log_loss", "alpha": 1e-4, "learning_rate": "invscaling", "eta0": 0.1, "power_t": 0.25}
MLP_DEFAULTS = {
    "hidden_layer_sizes": (32,),
    "learning_rate_init": 0.03,
}  # a few epochs of mini-batches: adam's 0.001 barely moves (0.40-0.67 on the real sets)


def preprocessing_name(scale: bool = True, impute: bool = False) -> str:
    """The steps `make_estimator` puts before the learner, as one name (part of a checkpoint's resume key).

    Example:
        >>> preprocessing_name(), preprocessing_name(scale=True, impute=True), preprocessing_name(scale=False)
        ('standard-scaler', 'median-imputer+standard-scaler', 'none')
    """
    steps = (["median-imputer"] if impute else []) + (["standard-scaler"] if scale else [])
    return "+".join(steps) or "none"


def make_estimator(kind: str = "sgd", params: dict[str, Any] | None = None, seed: int = 0, *, scale: bool = True, impute: bool = False):
    """A fresh estimator that trains in mini-batches and has `predict_proba`.

    By default a pipeline: standard scaling, then the learner (`sgd`: a log-loss SGDClassifier; `mlp`: an
    MLPClassifier; `nb`: a Gaussian naive Bayes); with `impute`, missing values are first filled with the training part's medians (only where
    the data contract allows missing values). `params` go to the learner.

    Example:
        >>> [name for name, _ in make_estimator().steps]
        ['scale', 'sgd']
        >>> [name for name, _ in make_estimator("mlp", impute=True).steps]
        ['impute', 'scale', 'mlp']
        >>> type(make_estimator(scale=False)).__name__
        'SGDClassifier'
    """
    params = dict(params or {})
    if kind == "sgd":
        learner = SGDClassifier(**{**SGD_DEFAULTS, "random_state": seed, **params})
    elif kind == "mlp":
        learner = MLPClassifier(**{**MLP_DEFAULTS, "random_state": seed, **params})
    elif kind == "nb":
        learner = GaussianNB(**params)
    else:
        raise TrainingError(f"unknown estimator {kind!r}: use 'sgd', 'mlp' or 'nb', or pass an estimator with partial_fit")
    steps = ([("impute", SimpleImputer(strategy="median", keep_empty_features=True))] if impute else []) + (
        [("scale", StandardScaler())] if scale else []
    )
    return Pipeline([*steps, (kind, learner)]) if steps else learner


def learner_of(estimator):
    """The part that learns in mini-batches: a pipeline's last step, or the estimator itself.

    Example:
        >>> type(learner_of(make_estimator())).__name__
        'SGDClassifier'
    """
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def trains_in_mini_batches(estimator) -> bool:
    """Whether `train_with_stop_hook` can train it: it, or a pipeline's last step, has `partial_fit`."""
    return hasattr(learner_of(estimator), "partial_fit")


def _fit_preprocessing(estimator, X: np.ndarray) -> None:
    """Fit a pipeline's steps before its learner on the whole training part (in place)."""
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps[:-1]:
            if step is not None and step != "passthrough":
                X = step.fit_transform(X)


def _preprocessed(estimator, X: np.ndarray) -> np.ndarray:
    """`X` as the learner sees it: through a pipeline's fitted steps before it."""
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps[:-1]:
            if step is not None and step != "passthrough":
                X = step.transform(X)
    return X


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

    A pipeline's steps before its learner are fitted once on all of `X` before the first mini-batch (a resumed
    run keeps the checkpoint's fitted steps), so a resumed run sees the very numbers the stopped one did.

    Args:
        estimator: a scikit-learn estimator with `partial_fit`, or a pipeline whose last step has one
            (cloned unless resuming).
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
        >>> from prefect_crisis.tasks.training.stopping import stop_after_seconds
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(2_000, 4)); y = (X[:, 0] > 0).astype(int)
        >>> outcome = train_with_stop_hook(make_estimator(), X, y, classes=np.array([0, 1]),
        ...     epochs=3, batch_size=100, stop=stop_after_seconds(60))
        >>> outcome.completed, outcome.progress.batches_seen, outcome.progress.loss < 0.3
        (True, 60, True)
        >>> type(outcome.estimator).__name__, float(outcome.estimator.score(X, y)) > 0.95
        ('Pipeline', True)
    """
    if not trains_in_mini_batches(estimator):
        raise TrainingError(f"{type(learner_of(estimator)).__name__} has no partial_fit: it cannot be trained in stoppable mini-batches")
    if batch_size < 1 or epochs < 1:
        raise TrainingError(f"epochs ({epochs}) and batch_size ({batch_size}) must be at least 1")
    start = resume_from.position if resume_from else Position(0, 0)
    model = resume_from.estimator if resume_from else clone(estimator)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # absurd values overflow the scaler: the non-finite-loss guard reports them
        if resume_from is None:
            _fit_preprocessing(model, X)
        learner, X = learner_of(model), _preprocessed(model, X)
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
                        learner.partial_fit(X[rows], y[rows], classes=classes)
                        loss = batch_loss(learner, X[rows], y[rows], classes)
                    except (ValueError, FloatingPointError, OverflowError):
                        loss = math.nan  # blown-up weights: the non-finite-loss guard stops training
                done = Position(epoch, batch_index + 1) if batch_index + 1 < batches else Position(epoch + 1, 0)
                progress.epoch, progress.batch_index = epoch, batch_index
                progress.record(loss)
                progress.elapsed_seconds = clock() - started
                if checkpoint_every_seconds is not None and clock() - saved["at"] >= checkpoint_every_seconds:
                    try:
                        checkpoint()  # before the stop hook: whatever it reports has been written
                    except Exception as error:
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

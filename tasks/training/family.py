"""Choosing the learner's family by cross-validated accuracy (`TrainingPolicy(estimator="auto")`), as a value.

Each family in `AUTO_FAMILIES` is trained the way the run will train it (the same preprocessing, epochs,
mini-batches and stop condition) on k-1 folds of the training part and scored on the fold left out; the
holdout stays untouched for the promotion gate. The choice takes the one-standard-error rule: the first
family, in order of preference, whose mean accuracy is within one standard error of the best mean, so a
bigger model must win by more than the folds' noise to be chosen.

    choice = choose_family(X_train, y_train, classes, policy=policy, stop=stop, impute=False)
    str(choice)  # 'mlp by 3-fold accuracy on the training part: sgd 0.912±0.010, mlp 0.951±0.006, nb 0.874±0.012'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from prefect_crisis.tasks.training.loop import learner_of, make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training.stopping import StopCondition, StopReason

AUTO_FAMILIES = ("sgd", "mlp", "nb")  # in order of preference: the simplest that is as good is chosen
FOLDS = 3
FAMILY_OF_LEARNER = {"SGDClassifier": "sgd", "MLPClassifier": "mlp", "GaussianNB": "nb"}


@dataclass(frozen=True)
class FamilyChoice:
    """The family chosen, each family's fold accuracies, and why."""

    family: str
    fold_scores: dict[str, tuple[float, ...]]
    reason: str = ""

    def mean(self, family: str) -> float:
        return float(np.mean(self.fold_scores[family]))

    def standard_error(self, family: str) -> float:
        scores = self.fold_scores[family]
        return float(np.std(scores, ddof=1) / math.sqrt(len(scores))) if len(scores) > 1 else 0.0

    def __str__(self) -> str:
        if not self.fold_scores:
            return f"{self.family}: {self.reason}"
        folds = len(next(iter(self.fold_scores.values())))
        scores = ", ".join(f"{family} {self.mean(family):.3f}±{self.standard_error(family):.3f}" for family in self.fold_scores)
        return f"{self.family} by {folds}-fold accuracy on the training part: {scores}"


def pick_family(fold_scores: dict[str, tuple[float, ...]]) -> FamilyChoice:
    """The one-standard-error rule over `fold_scores` (families in order of preference).

    Example:
        >>> str(pick_family({"sgd": (0.90, 0.91, 0.92), "mlp": (0.95, 0.96, 0.97), "nb": (0.80, 0.81, 0.82)}).family)
        'mlp'
        >>> pick_family({"sgd": (0.95, 0.96, 0.95), "mlp": (0.96, 0.96, 0.96)}).family  # within the noise: the simpler
        'sgd'
    """
    choice = FamilyChoice("", fold_scores)
    best = max(fold_scores, key=choice.mean)
    bar = choice.mean(best) - choice.standard_error(best)
    chosen = next(family for family in fold_scores if choice.mean(family) >= bar)
    return FamilyChoice(chosen, fold_scores)


def choose_family(
    X: np.ndarray,
    y: np.ndarray,
    classes: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    scale: bool,
    impute: bool,
    stop: StopCondition,
    families: tuple[str, ...] = AUTO_FAMILIES,
) -> FamilyChoice | StopReason:
    """The family to train on `X`, `y`, or the stop reason when `stop` fired while the families were tried."""
    smallest_class = int(np.bincount(np.searchsorted(classes, y), minlength=len(classes)).min())
    folds = min(FOLDS, smallest_class)
    if folds < 2:
        return FamilyChoice(families[0], {}, f"a class has {smallest_class} row in the training part: too few to compare families")
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    fold_scores: dict[str, tuple[float, ...]] = {}
    for family in families:
        scores = []
        for train_rows, test_rows in splits:
            estimator = make_estimator(family, None, seed, scale=scale, impute=impute)
            outcome = train_with_stop_hook(
                estimator, X[train_rows], y[train_rows], classes=classes, epochs=epochs, batch_size=batch_size, stop=stop, seed=seed
            )
            if outcome.stop_reason is not None and not outcome.stop_reason.kind.is_failure:
                return outcome.stop_reason  # the stop flag, a time budget: the run stops, as in its training
            if outcome.stop_reason is not None:  # diverged, non-finite loss: this family is out, the others go on
                break
            scores.append(float(np.mean(outcome.estimator.predict(X[test_rows]) == y[test_rows])))
        else:
            fold_scores[family] = tuple(scores)
    if not fold_scores:
        return FamilyChoice(families[0], {}, "every family failed on the folds (diverged or non-finite loss)")
    return pick_family(fold_scores)


def family_of(estimator) -> str:
    """The family name of a (fitted or not) estimator, or its learner's class name.

    Example:
        >>> family_of(make_estimator("nb")), family_of(make_estimator())
        ('nb', 'sgd')
    """
    name = type(learner_of(estimator)).__name__
    return FAMILY_OF_LEARNER.get(name, name)

"""Fitting the fallback model on the training split and judging it on the holdout: the estimator of a kind, the
fewest top-ranked columns that reach the policy's bar, the fitted `FallbackModel`, why a batch cannot give one
worth keeping, and what training did about it (`FallbackResult`). Plain scikit-learn; `fallback_model`
registers the result."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.tasks.serving.fallback_columns import feature_counts, ranked_columns
from prefect_crisis.tasks.training.data import TrainingData
from prefect_crisis.tasks.training.gate import evaluate

if TYPE_CHECKING:
    from prefect_crisis.blocks.training_policy import TrainingPolicy


def make_fallback_estimator(kind: str, impute: bool = False):
    """The unfitted estimator of a fallback kind: `logistic` or `prior` (`impute`: fill missing values with medians first).

    Example:
        >>> make_fallback_estimator("prior")
        DummyClassifier()
        >>> [name for name, _ in make_fallback_estimator("logistic").steps]
        ['scale', 'logistic']
    """
    if kind == "prior":
        return DummyClassifier(strategy="prior")
    if kind == "logistic":
        imputer = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))] if impute else []
        return Pipeline([*imputer, ("scale", StandardScaler()), ("logistic", LogisticRegression(max_iter=1_000))])
    raise TrainingError(f"unknown fallback model {kind!r}: use 'logistic' or 'prior' in the TrainingPolicy")


def _cross_validated_accuracy(estimator, X: np.ndarray, y: np.ndarray, seed: int) -> float | None:
    """Mean accuracy over 3 stratified folds of the training split; None when a class has fewer than 2 rows."""
    _, counts = np.unique(y, return_counts=True)
    folds = min(3, int(counts.min()))
    if folds < 2:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(cross_val_score(estimator, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean())


def _fit_on(data: TrainingData, policy: TrainingPolicy, names: list[str]):
    """The policy's fallback fitted on the training split's `names` columns, and its holdout metrics."""
    columns = [data.features.index(name) for name in names]
    imputes = any(name in data.nullable_features for name in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a solver that needs more iterations on a hard batch still gives a usable model
        estimator = make_fallback_estimator(policy.fallback_model, imputes).fit(data.X_train[:, columns], data.y_train)
    return estimator, evaluate(estimator, data.X_holdout[:, columns], data.y_holdout, data.classes)


def grow_fallback_features(data: TrainingData, policy: TrainingPolicy, primary_accuracy: float | None):
    """The fewest top-ranked columns (`feature_counts` of them, in turn) whose logistic fallback reaches
    `fallback_min_ratio` x `primary_accuracy` in 3-fold cross-validation on the training split and then on the
    holdout; the most `fallback_max_features` allows when none does; `fallback_min_features` when the primary's
    figure is unknown. Returns (column names in the batch's order, fitted estimator, holdout metrics).
    """
    ranked = ranked_columns(data.X_train, data.y_train)
    start, most = min(policy.fallback_min_features, len(ranked)), min(policy.fallback_max_features, len(ranked))
    counts = feature_counts(start, most) if primary_accuracy is not None else [min(start, most)]
    bar = policy.fallback_min_ratio * (primary_accuracy or 0.0)
    for count in counts[:-1]:  # the last count is kept whatever it scores
        columns = sorted(ranked[:count])
        names = [data.features[index] for index in columns]
        estimator = make_fallback_estimator(policy.fallback_model, any(name in data.nullable_features for name in names))
        accuracy = _cross_validated_accuracy(estimator, data.X_train[:, columns], data.y_train, policy.seed)
        if accuracy is not None and accuracy < bar:
            continue  # the training split says it falls short: the holdout is not asked
        estimator, metrics = _fit_on(data, policy, names)
        if metrics["accuracy"] >= bar:
            return names, estimator, metrics
    widest = [data.features[index] for index in sorted(ranked[: counts[-1]])]
    return (widest, *_fit_on(data, policy, widest))


@dataclass(frozen=True, eq=False)
class FallbackModel:
    """A fitted fallback, the columns it reads, its holdout metrics and how it compares with the primary."""

    kind: str
    estimator: object
    features: tuple[str, ...]
    metrics: dict[str, float]
    primary_accuracy: float | None = None
    min_ratio: float = 0.0

    @property
    def ratio(self) -> float | None:
        """Its holdout accuracy as a share of the primary's; None when the primary's is unknown."""
        if not self.primary_accuracy:
            return None
        return self.metrics["accuracy"] / self.primary_accuracy

    @property
    def meets_bar(self) -> bool | None:
        """Whether its holdout accuracy reaches `min_ratio` of the primary's; None when the primary's is unknown."""
        return None if self.ratio is None else self.ratio >= self.min_ratio

    def describe(self) -> str:
        """`logistic on f00, f01, f02`, `logistic on 12 columns (f00, f01, f02, ...)`, or `prior` (which reads no column)."""
        if self.kind == "prior":
            return self.kind
        if len(self.features) <= 6:
            return f"{self.kind} on {', '.join(self.features)}"
        return f"{self.kind} on {len(self.features)} columns ({', '.join(self.features[:3])}, ...)"

    def shortfall(self) -> str:
        """The figures of a missed bar, one line; empty when the bar is met or cannot be judged.

        Example:
            >>> FallbackModel("logistic", None, ("a",), {"accuracy": 0.43}, 0.92, 0.85).shortfall()
            "accuracy 0.430 is 0.47 of the primary's 0.920, below the bar 0.85, with 1 column"
        """
        if self.meets_bar is not False:
            return ""
        columns = f"{len(self.features)} column{'s' if len(self.features) > 1 else ''}"
        return (
            f"accuracy {self.metrics['accuracy']:.3f} is {self.ratio:.2f} of the primary's {self.primary_accuracy:.3f}, "
            f"below the bar {self.min_ratio:g}, with {columns}"
        )


def fit_fallback(data: TrainingData, policy: TrainingPolicy, primary_accuracy: float | None = None) -> FallbackModel:
    """Fit the policy's fallback on the training split and evaluate it on the holdout, both on its own columns.

    A `logistic` fallback without named `fallback_features` grows its columns toward `fallback_min_ratio` of
    `primary_accuracy` (the primary's holdout accuracy; without it, `fallback_min_features` columns). A `prior`
    model reads no column, but is registered with all of them, as any version of the model is.
    """
    if policy.fallback_model == "prior":
        names = list(data.features)
    elif policy.fallback_features:
        unknown = [name for name in policy.fallback_features if name not in data.features]
        if unknown:
            raise TrainingError(f"fallback_features {unknown} are not feature columns of the batch: pick from {data.features}")
        names = list(dict.fromkeys(policy.fallback_features))
    else:
        names, estimator, metrics = grow_fallback_features(data, policy, primary_accuracy)
        return FallbackModel(policy.fallback_model, estimator, tuple(names), metrics, primary_accuracy, policy.fallback_min_ratio)
    estimator, metrics = _fit_on(data, policy, names)
    return FallbackModel(policy.fallback_model, estimator, tuple(names), metrics, primary_accuracy, policy.fallback_min_ratio)


@dataclass(frozen=True)
class FallbackResult:
    """What training did about the fallback: registered a new version, or kept the one the alias names."""

    version: str | None
    registered: bool
    detail: str = ""

    def message(self) -> str:
        """The clause the training run's message ends with: registered, none at all (and why), or empty when one is kept.

        Example:
            >>> FallbackResult("2", True, "logistic on f00, f01, f02").message()
            '; fallback v2 registered (logistic on f00, f01, f02)'
        """
        if self.registered:
            return f"; fallback v{self.version} registered ({self.detail})"
        return f"; no fallback registered ({self.detail})" if self.version is None else ""


def fallback_refusal(data: TrainingData, policy: TrainingPolicy) -> str | None:
    """Why the batch cannot give a fallback worth keeping, or None when it can.

    Example:
        >>> from prefect_crisis.blocks.training_policy import TrainingPolicy
        >>> tiny = TrainingData(np.zeros((8, 1)), np.array([0, 1] * 4), np.zeros((2, 1)), np.array([0, 1]), np.array([0, 1]), ["x"], "fp")
        >>> fallback_refusal(tiny, TrainingPolicy())
        'holdout of 2 rows is below min_holdout_rows 50'
    """
    if len(data.y_holdout) < policy.min_holdout_rows:
        return f"holdout of {len(data.y_holdout)} rows is below min_holdout_rows {policy.min_holdout_rows}"  # its metrics would be noise
    if len(np.unique(data.y_train)) < 2:
        return "the training split holds one class only"
    return None

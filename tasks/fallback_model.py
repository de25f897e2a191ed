"""The fallback model: a simple, robust version kept under the registry's
`fallback` alias, so a FALLBACK recovery always has somewhere to go.

A completed training also fits, on the training split of the same validated
batch, the model the TrainingPolicy names: `logistic` (standardised logistic
regression on a few columns) or `prior` (the training label shares, whatever
the input). It is registered as a version of the same registered model, tagged
`crisis.role=fallback` with the columns it reads in `crisis.features` (so the
crisis response scores and verifies it like any version), logged with its
holdout metrics in an MLflow run of its own, and pointed at by the fallback
alias with a plain audited MOVE: `ml.fallback.engaged` means serving switched
to it, which registering it does not.

Only when the model has no fallback yet, or the policy says `replace_fallback`:
a fallback a user registered and pointed the alias at is kept. It is never
promoted, never a challenger and never a rollback target (the registry and
`prefect_crisis.tasks.rollback` refuse it).

Columns are picked by the F statistic of the label on each column's *ranks*
(the ordering of the Kruskal-Wallis test), not on raw values and not by mutual
information: means and variances of a heavy-tailed or log-normal column are
ruled by a few extreme rows, while ranks are unmoved by any monotone transform
and bound each row's influence; ties (counts, mostly-zero columns) get average
ranks; and unlike scikit-learn's mutual information, which adds random noise
and k-nearest-neighbour estimates that need each column declared discrete or
not, the score is deterministic and linear-time after a sort. It measures how
far the classes are shifted against each other, which is what a linear model
can use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from scipy.stats import rankdata
from sklearn.dummy import DummyClassifier
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import TrainingError
from prefect_crisis.core.paths import ensure_experiment
from prefect_crisis.core.vocabulary import AliasAction, TagKey, VersionRole
from prefect_crisis.tasks.promotion import evaluate, log_candidate
from prefect_crisis.tasks.training_run import TrainingData


def rank_scores(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How strongly each column separates the classes: the F statistic of the label on the column's ranks.

    A constant column scores 0. One extreme row does not hide a real shift, as it does on raw values:

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 500)
        >>> shifted = rng.standard_normal(500) + y  # the classes differ by one standard deviation
        >>> shifted[0] = -1e6  # one broken row (y[0] is 1)
        >>> X = np.column_stack([shifted, rng.standard_normal(500)])
        >>> [round(float(score)) for score in rank_scores(X, y)], [round(float(score)) for score in f_classif(X, y)[0]]
        ([87, 0], [1, 0])
    """
    ranks = np.apply_along_axis(rankdata, 0, X)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a constant column: scikit-learn warns and gives nan
        scores, _ = f_classif(ranks, y)
    return np.nan_to_num(scores, nan=0.0, posinf=0.0)


def select_fallback_features(X: np.ndarray, y: np.ndarray, features: list[str], most: int) -> list[str]:
    """Up to `most` columns with the highest rank score, in the batch's column order; constant columns never.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> y = rng.integers(0, 2, 1_000)
        >>> X = np.column_stack([rng.standard_normal(1_000), rng.poisson(1 + 2 * y), rng.standard_t(3, 1_000) + y])
        >>> select_fallback_features(X, y, ["noise", "visits", "score"], 2)
        ['visits', 'score']
    """
    scores = rank_scores(X, y)
    ranked = [index for index in np.argsort(-scores, kind="stable") if scores[index] > 0][:most]
    if not ranked:
        raise TrainingError("no column separates the classes for the fallback model: set fallback_features or fallback_model='prior'")
    return [features[index] for index in sorted(ranked)]


def make_fallback_estimator(kind: str):
    """The unfitted estimator of a fallback kind: `logistic` or `prior`.

    Example:
        >>> make_fallback_estimator("prior")
        DummyClassifier()
        >>> [name for name, _ in make_fallback_estimator("logistic").steps]
        ['scale', 'logistic']
    """
    if kind == "prior":
        return DummyClassifier(strategy="prior")
    if kind == "logistic":
        return Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(max_iter=1_000))])
    raise TrainingError(f"unknown fallback model {kind!r}: use 'logistic' or 'prior' in the TrainingPolicy")


@dataclass(frozen=True, eq=False)
class FallbackModel:
    """A fitted fallback, the columns it reads and its holdout metrics."""

    kind: str
    estimator: object
    features: tuple[str, ...]
    metrics: dict[str, float]

    def describe(self) -> str:
        """`logistic on f00, f01, f02`, or `prior` (which reads no column)."""
        return f"{self.kind} on {', '.join(self.features)}" if self.kind != "prior" else self.kind


def fit_fallback(data: TrainingData, policy: TrainingPolicy) -> FallbackModel:
    """Fit the policy's fallback on the training split and evaluate it on the holdout, both on its own columns.

    A `prior` model reads no column, but is registered with all of them, as any version of the model is.
    """
    if policy.fallback_model == "prior":
        names = list(data.features)
    elif policy.fallback_features:
        unknown = [name for name in policy.fallback_features if name not in data.features]
        if unknown:
            raise TrainingError(f"fallback_features {unknown} are not feature columns of the batch: pick from {data.features}")
        names = list(dict.fromkeys(policy.fallback_features))
    else:
        names = select_fallback_features(data.X_train, data.y_train, data.features, policy.fallback_max_features)
    columns = [data.features.index(name) for name in names]
    estimator = make_fallback_estimator(policy.fallback_model).fit(data.X_train[:, columns], data.y_train)
    metrics = evaluate(estimator, data.X_holdout[:, columns], data.y_holdout, data.classes)
    return FallbackModel(policy.fallback_model, estimator, tuple(names), metrics)


@dataclass(frozen=True)
class FallbackResult:
    """What training did about the fallback: registered a new version, or kept the one the alias names."""

    version: str | None
    registered: bool
    detail: str = ""

    def message(self) -> str:
        """The clause the training run's message ends with: registered, none at all (and why), or empty when one is kept."""
        if self.registered:
            return f"; fallback v{self.version} registered ({self.detail})"
        return f"; no fallback registered ({self.detail})" if self.version is None else ""


def fallback_refusal(data: TrainingData, policy: TrainingPolicy) -> str | None:
    """Why the batch cannot give a fallback worth keeping, or None when it can.

    Example:
        >>> tiny = TrainingData(np.zeros((8, 1)), np.array([0, 1] * 4), np.zeros((2, 1)), np.array([0, 1]), np.array([0, 1]), ["x"], "fp")
        >>> fallback_refusal(tiny, TrainingPolicy())
        'holdout of 2 rows is below min_holdout_rows 200'
    """
    if len(data.y_holdout) < policy.min_holdout_rows:
        return f"holdout of {len(data.y_holdout)} rows is below min_holdout_rows {policy.min_holdout_rows}"  # its metrics would be noise
    if len(np.unique(data.y_train)) < 2:
        return "the training split holds one class only"
    return None


def keep_fallback(registry: ModelRegistry, data: TrainingData, policy: TrainingPolicy, flow_run_id: str = "") -> FallbackResult:
    """Register the policy's fallback and point the fallback alias at it, unless one is there and may stay,
    or the batch cannot give one worth keeping (`fallback_refusal`).

    Args:
        registry: the model's registry; the fallback is a version of the same registered model.
        data: the validated batch the candidate was trained on (training split and holdout).
        flow_run_id: the training's flow run, as a tag of the version and its run.
    """
    current = registry.version_by_alias(registry.fallback_alias)
    if current is not None and not policy.replace_fallback:
        return FallbackResult(current.version, False, "kept: replace_fallback is off")
    refusal = fallback_refusal(data, policy)
    if refusal is not None:
        return FallbackResult(current.version if current else None, False, f"not replaced: {refusal}" if current else refusal)
    fallback = fit_fallback(data, policy)
    client = registry.client
    tags = {TagKey.ROLE: VersionRole.FALLBACK.value, TagKey.FINGERPRINT: data.fingerprint, TagKey.FLOW_RUN_ID: flow_run_id}
    # A run of its own: the version's metrics are its run's, and the training experiment stays the resume history.
    experiment = ensure_experiment(client, f"crisis-fallback-{registry.model_name}", {TagKey.MODEL: registry.model_name})
    run_id = client.create_run(experiment, tags={TagKey.MODEL: registry.model_name, **tags}, run_name=f"fallback-{registry.model_name}").info.run_id
    client.log_param(run_id, "fallback_model", fallback.kind)
    client.log_param(run_id, "fallback_features", ",".join(fallback.features)[:500])
    for name, value in fallback.metrics.items():
        client.log_metric(run_id, name, value)
    columns = [data.features.index(name) for name in fallback.features]
    info = log_candidate(fallback.estimator, data.X_holdout[:, columns], run_id, client)
    client.set_terminated(run_id, "FINISHED")
    version = registry.register_version(info.model_uri, run_id, info.model_id, {**tags, TagKey.FEATURES: ",".join(fallback.features)})
    replaces = f"; replaces v{current.version} (replace_fallback)" if current is not None else ""
    # A plain MOVE: FALLBACK would emit ml.fallback.engaged, which means serving switched to it.
    registry.move_alias(
        registry.fallback_alias, version.version, f"fallback model: {fallback.describe()}{replaces}", action=AliasAction.MOVE, current=current
    )
    return FallbackResult(version.version, True, fallback.describe())


@task(name="keep-fallback-model", cache_policy=NO_CACHE)
def keep_fallback_model(registry: ModelRegistry, data: TrainingData, policy: TrainingPolicy) -> FallbackResult:
    """Register the fallback model when the model has none (or the policy replaces it); see `keep_fallback`."""
    result = keep_fallback(registry, data, policy, flow_run.get_id() or "")
    get_run_logger().info("fallback v%s %s", result.version, f"registered ({result.detail})" if result.registered else result.detail)
    return result

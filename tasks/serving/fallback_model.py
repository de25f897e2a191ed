"""The fallback model: a simple, robust version kept under the registry's
`fallback` alias, so a FALLBACK recovery always has somewhere to go.

A completed training also fits, on the training split of the same validated
batch, the model the TrainingPolicy names: `logistic` (standardised logistic
regression on the fewest columns that do the job) or `prior` (the training
label shares, whatever the input).

A few columns serve a binary label well; ten classes are not told apart by
three pixels (0.43 against the primary's 0.92 on digits). So the logistic
fallback starts from `fallback_min_features` columns and adds the next ones by
rank score (3, 5, 8, 12, 18, ...) until its accuracy reaches
`fallback_min_ratio` of the primary's holdout accuracy, in 3-fold
cross-validation on the training split first and then on the holdout (a count
the training split already rules out is never tried on the holdout), or
`fallback_max_features` is reached. Its holdout accuracy, the primary's and
their ratio are metrics of its run (so of its version), and the version's tag
`crisis.fallback.meets_bar` says whether the bar was met on the holdout, with
the figures in `crisis.fallback.bar` when not. It is registered as a version of the same registered model, tagged
`crisis.role=fallback` with the columns it reads in `crisis.features` (so the
crisis response scores and verifies it like any version), logged with its
holdout metrics in an MLflow run of its own, and pointed at by the fallback
alias with a plain audited MOVE: `ml.fallback.engaged` means serving switched
to it, which registering it does not.

Only when the model has no fallback yet, or the policy says `replace_fallback`:
a fallback a user registered and pointed the alias at is kept. It is never
promoted, never a challenger and never a rollback target (the registry and
`prefect_crisis.tasks.response.rollback` refuse it).

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

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from scipy.stats import rankdata
from sklearn.dummy import DummyClassifier
from sklearn.feature_selection import f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import RegistryError, TrainingError
from prefect_crisis.core.paths import ensure_experiment
from prefect_crisis.core.vocabulary import AliasAction, TagKey, VersionRole
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.training.data import TrainingData
from prefect_crisis.tasks.training.gate import CandidateResult, columns_of, evaluate
from prefect_crisis.tasks.training.promotion import log_candidate

if TYPE_CHECKING:
    from prefect_crisis.tasks.serving.confidence_routing import RoutingCalibration

# Tags of a fallback version (to join TagKey): whether it reaches fallback_min_ratio of the primary, and the figures when not.
MEETS_BAR_TAG = TagKey.FALLBACK_MEETS_BAR
BAR_TAG = TagKey.FALLBACK_BAR


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


def ranked_columns(X: np.ndarray, y: np.ndarray) -> list[int]:
    """Column indexes by falling rank score, constant (score 0) columns left out.

    Raises:
        TrainingError: no column separates the classes.
    """
    scores = rank_scores(X, y)
    ranked = [int(index) for index in np.argsort(-scores, kind="stable") if scores[index] > 0]
    if not ranked:
        raise TrainingError("no column separates the classes for the fallback model: set fallback_features or fallback_model='prior'")
    return ranked


def select_fallback_features(X: np.ndarray, y: np.ndarray, features: list[str], most: int) -> list[str]:
    """Up to `most` columns with the highest rank score, in the batch's column order; constant columns never.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> y = rng.integers(0, 2, 1_000)
        >>> X = np.column_stack([rng.standard_normal(1_000), rng.poisson(1 + 2 * y), rng.standard_t(3, 1_000) + y])
        >>> select_fallback_features(X, y, ["noise", "visits", "score"], 2)
        ['visits', 'score']
    """
    return [features[index] for index in sorted(ranked_columns(X, y)[:most])]


def feature_counts(start: int, most: int) -> list[int]:
    """How many columns the fallback tries, in turn: from `start`, about half as many more each step, up to `most`.

    Example:
        >>> feature_counts(3, 24), feature_counts(3, 3), feature_counts(5, 4)
        ([3, 5, 8, 12, 18, 24], [3], [4])
    """
    counts, count = [], min(start, most)
    while count < most:
        counts.append(count)
        count = max(count + 1, math.ceil(count * 1.5))
    return [*counts, most]


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
        >>> tiny = TrainingData(np.zeros((8, 1)), np.array([0, 1] * 4), np.zeros((2, 1)), np.array([0, 1]), np.array([0, 1]), ["x"], "fp")
        >>> fallback_refusal(tiny, TrainingPolicy())
        'holdout of 2 rows is below min_holdout_rows 50'
    """
    if len(data.y_holdout) < policy.min_holdout_rows:
        return f"holdout of {len(data.y_holdout)} rows is below min_holdout_rows {policy.min_holdout_rows}"  # its metrics would be noise
    if len(np.unique(data.y_train)) < 2:
        return "the training split holds one class only"
    return None


def keep_fallback(
    registry: ModelRegistry,
    data: TrainingData,
    policy: TrainingPolicy,
    flow_run_id: str = "",
    primary_metrics: dict[str, float] | None = None,
    label_finding: str | None = None,
) -> FallbackResult:
    """Register the policy's fallback and point the fallback alias at it, unless one is there and may stay,
    the batch's labels are in doubt, or the batch cannot give one worth keeping (`fallback_refusal`).

    Args:
        registry: the model's registry; the fallback is a version of the same registered model.
        data: the validated batch the candidate was trained on (training split and holdout).
        flow_run_id: the training's flow run, as a tag of the version and its run.
        primary_metrics: the candidate's holdout metrics: its accuracy sets the fallback's bar.
        label_finding: the promotion gate's label-quality finding on this batch: no fallback is learnt from it.
    """
    current = registry.version_by_alias(registry.fallback_alias)
    if current is not None and not policy.replace_fallback:
        return FallbackResult(current.version, False, "kept: replace_fallback is off")
    refusal = fallback_refusal(data, policy)
    if refusal is None and label_finding:
        refusal = "the batch's labels are in doubt (label-quality finding)"
    if refusal is not None:
        return FallbackResult(current.version if current else None, False, f"not replaced: {refusal}" if current else refusal)
    fallback = fit_fallback(data, policy, (primary_metrics or {}).get("accuracy"))
    client = registry.client
    tags: dict[str, str] = {TagKey.ROLE: VersionRole.FALLBACK.value, TagKey.FINGERPRINT: data.fingerprint, TagKey.FLOW_RUN_ID: flow_run_id}
    if fallback.meets_bar is not None:
        tags[MEETS_BAR_TAG] = str(fallback.meets_bar).lower()
    if fallback.shortfall():
        tags[BAR_TAG] = fallback.shortfall()
    # A run of its own: the version's metrics are its run's, and the training experiment stays the resume history.
    experiment = ensure_experiment(client, f"crisis-fallback-{registry.model_name}", {TagKey.MODEL: registry.model_name})
    run_id = client.create_run(experiment, tags={TagKey.MODEL: registry.model_name, **tags}, run_name=f"fallback-{registry.model_name}").info.run_id
    client.log_param(run_id, "fallback_model", fallback.kind)
    client.log_param(run_id, "fallback_features", ",".join(fallback.features)[:500])
    ratio = fallback.ratio  # not None: the primary's accuracy is known (and not 0)
    known = {"primary_accuracy": fallback.primary_accuracy, "accuracy_ratio": ratio} if ratio and fallback.primary_accuracy else {}
    figures: dict[str, float] = {**fallback.metrics, **known}
    for name, value in figures.items():
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
    missed = f"; misses the bar: {fallback.shortfall()}" if fallback.shortfall() else ""
    return FallbackResult(version.version, True, f"{fallback.describe()}{missed}")


@task(name="keep-fallback-model", cache_policy=NO_CACHE)
def keep_fallback_model(
    registry: ModelRegistry, data: TrainingData, policy: TrainingPolicy, candidate: CandidateResult | None = None
) -> FallbackResult:
    """Register the fallback model when the model has none (or the policy replaces it); see `keep_fallback`.

    Args:
        candidate: the promotion gate's result: the primary's accuracy sets the bar, a label-quality finding forbids one.
    """
    primary, finding = (candidate.metrics, candidate.label_finding) if candidate is not None else (None, None)
    result = keep_fallback(registry, data, policy, flow_run.get_id() or "", primary, finding)
    get_run_logger().info("fallback v%s %s", result.version, f"registered ({result.detail})" if result.registered else result.detail)
    return result


# -- routing between the candidate and its fallback ---------------------------------------------


def calibrate_candidate_routing(
    registry: ModelRegistry, run_id: str, primary, data: TrainingData, fallback_version: str | None, seed: int = 0
) -> RoutingCalibration:
    """Fit the candidate's confidence routing to the fallback on the holdout (`prefect_crisis.tasks.serving.confidence_routing.fit_routing`)
    and log it as `routing.json` to the candidate's run; returns the `RoutingCalibration`.

    Args:
        run_id: the candidate's training run.
        primary: the candidate's fitted estimator (reads every feature column of `data`).
        fallback_version: the fallback version serving would route to (None: routing off, and stored so).

    Raises:
        RegistryError: the fallback version cannot be loaded, or reads a column the holdout lacks.
    """
    from prefect_crisis.tasks.serving.confidence_routing import fit_routing
    from prefect_crisis.tasks.serving.routing_artifact import log_routing

    fallback, X_fallback = None, None
    if fallback_version is not None:
        info = registry.version(fallback_version)
        columns = columns_of(info.tags.get(TagKey.FEATURES, ""), data.features)
        if columns is None:
            raise RegistryError(f"fallback v{fallback_version} reads columns the holdout lacks ({info.tags.get(TagKey.FEATURES)!r})")
        fallback = load_sklearn_model(registry.client, registry.model_name, fallback_version)
        X_fallback = data.X_holdout[:, columns]
    calibration = fit_routing(primary, fallback, data.X_holdout, X_fallback, data.y_holdout, fallback_version=fallback_version, seed=seed)
    log_routing(registry.client, run_id, calibration)
    return calibration


@task(name="calibrate-routing", cache_policy=NO_CACHE)
def calibrate_routing(
    registry: ModelRegistry, training, data: TrainingData, fallback: FallbackResult, policy: TrainingPolicy
) -> RoutingCalibration | None:
    """After the candidate and its fallback are trained: fit and log the candidate's `routing.json`
    (see `calibrate_candidate_routing`). A failure is logged, never fails the training: serving then routes
    without a calibration (no confidence routing)."""
    logger = get_run_logger()
    try:
        calibration = calibrate_candidate_routing(registry, training.run_id, training.outcome.estimator, data, fallback.version, policy.seed)
    except (RegistryError, OSError, ValueError) as error:
        logger.warning("routing not calibrated for run %s (%s: %s): serving routes without it", training.run_id, type(error).__name__, error)
        return None
    logger.info("routing: %s", calibration.reason)
    return calibration

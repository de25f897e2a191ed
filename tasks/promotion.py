"""Evaluate a candidate, register it fast, and decide promotion by the policy's gate."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import mlflow.sklearn
import numpy as np
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score, log_loss

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from prefect_crisis.blocks.training_policy import LOWER_IS_BETTER, TrainingPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import CrisisEvent, TagKey
from prefect_crisis.tasks.models import load_sklearn_model, log_sklearn_model

# Explicit requirements: MLflow otherwise spends seconds inferring them in a subprocess.
PIP_REQUIREMENTS = [*mlflow.sklearn.get_default_pip_requirements(include_skops=True), f"numpy=={np.__version__}"]


def evaluate(estimator, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Holdout metrics: accuracy, macro F1, log loss."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = estimator.predict(X)
        probabilities = estimator.predict_proba(X)
    metrics = {"accuracy": float(accuracy_score(y, predicted)), "f1": float(f1_score(y, predicted, average="macro"))}
    if np.all(np.isfinite(probabilities)):
        metrics["log_loss"] = float(log_loss(y, probabilities, labels=classes))
    return metrics


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def _better(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is (positive) in the metric's direction."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def decide_promotion(
    candidate: dict[str, float], champion: dict[str, float] | None, policy: TrainingPolicy, *, holdout_rows: int
) -> PromotionDecision:
    """The promotion gate: a holdout large enough to judge, beat the champion by
    the margin, break no guard.

    Example:
        >>> policy = TrainingPolicy(promotion_margin=0.01)
        >>> decide_promotion({"accuracy": 0.90, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, policy, holdout_rows=1_000).promote
        True
        >>> decide_promotion({"accuracy": 0.885, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, policy, holdout_rows=1_000).reason
        'accuracy 0.8850 does not beat the champion 0.8800 by 0.01'
        >>> decide_promotion({"accuracy": 1.0}, {"accuracy": 0.0}, policy, holdout_rows=2).reason
        'holdout of 2 rows is below min_holdout_rows 200: train on a larger batch or lower the policy minimum'
    """
    if holdout_rows < policy.min_holdout_rows:
        return PromotionDecision(
            False,
            f"holdout of {holdout_rows} rows is below min_holdout_rows {policy.min_holdout_rows}: "
            "train on a larger batch or lower the policy minimum",
        )
    metric = policy.primary_metric
    if metric not in candidate:
        return PromotionDecision(False, f"candidate has no {metric}")
    if champion is None or metric not in champion:
        if policy.min_primary_metric is not None and _better(metric, candidate[metric], policy.min_primary_metric) < 0:
            return PromotionDecision(False, f"first model's {metric} {candidate[metric]:.4f} misses the minimum {policy.min_primary_metric}")
        return PromotionDecision(True, f"no champion yet; {metric} {candidate[metric]:.4f}")
    gain = _better(metric, candidate[metric], champion[metric])
    if gain < policy.promotion_margin or (policy.promotion_margin == 0 and gain <= 0):
        margin = f" by {policy.promotion_margin:g}" if policy.promotion_margin else ""
        return PromotionDecision(
            False, f"{metric} {candidate[metric]:.4f} does not beat the champion {champion[metric]:.4f}{margin}"
        )
    for guard, allowed in policy.guard_metrics.items():
        if guard in candidate and guard in champion and -_better(guard, candidate[guard], champion[guard]) > allowed:
            return PromotionDecision(
                False, f"guard {guard} worsens from {champion[guard]:.4f} to {candidate[guard]:.4f} (allowed {allowed:g})"
            )
    return PromotionDecision(True, f"{metric} {candidate[metric]:.4f} beats the champion {champion[metric]:.4f}")


def log_candidate(estimator, X_example: np.ndarray, run_id: str, client: MlflowClient):
    """Log the estimator as an MLflow model of the run, in `client`'s store
    (fast: explicit requirements; no process-global MLflow state)."""
    return log_sklearn_model(client, estimator, X_example, run_id, PIP_REQUIREMENTS)


@dataclass(frozen=True)
class CandidateResult:
    version: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    champion_version: str | None
    decision: PromotionDecision


def columns_of(version_features: str, features: list[str]) -> list[int] | None:
    """Indexes into `features` of the columns a version uses (its `crisis.features` tag), or None when
    it uses a column `features` lacks.

    Example:
        >>> columns_of("f03,f00", ["f00", "f01", "f02", "f03"])
        [3, 0]
        >>> columns_of("f00,tenure", ["f00", "f01"]) is None
        True
    """
    names = version_features.split(",")
    position = {name: index for index, name in enumerate(features)}
    return [position[name] for name in names] if all(name in position for name in names) else None


def champion_metrics_on(
    registry, X: np.ndarray, y: np.ndarray, classes: np.ndarray, features: list[str] | None = None
) -> tuple[str | None, dict[str, float] | None]:
    """The champion evaluated on the candidate's holdout, so both are judged on
    the same rows; its recorded metrics when its model cannot be loaded or
    needs columns the holdout lacks.

    Args:
        features: the names of `X`'s columns; the champion is scored on the columns
            its `crisis.features` tag names (a fallback model uses a few of them).
    """
    champion = registry.champion()
    if champion is None:
        return None, None
    used, columns = champion.tags.get(TagKey.FEATURES), None
    if used and features is not None:
        columns = columns_of(used, features)
        if columns is None:  # it reads a column the candidate's holdout lacks: not the same rows to judge on
            return champion.version, dict(champion.metrics)
    try:
        model = load_sklearn_model(registry.client, registry.model_name, champion.version)
        return champion.version, evaluate(model, X if columns is None else X[:, columns], y, classes)
    except (RegistryError, OSError, ValueError):
        return champion.version, dict(champion.metrics)


@task(name="register-and-gate", cache_policy=NO_CACHE)
def register_and_gate(training, data, registry, policy: TrainingPolicy, validation: dict | None = None) -> CandidateResult:
    """Evaluate on the holdout, register the version as challenger, promote it
    to champion if the policy's gate holds. Emits completed; the registry emits registered/promoted."""
    logger = get_run_logger()
    model = registry.model_name
    estimator = training.outcome.estimator
    metrics = evaluate(estimator, data.X_holdout, data.y_holdout, data.classes)
    for name, value in metrics.items():
        registry.client.log_metric(training.run_id, name, value)
    registry.timeline().emit(CrisisEvent.TRAINING_COMPLETED, model, {"run_id": training.run_id, "metrics": metrics, "batches": training.outcome.progress.batches_seen})

    info = log_candidate(estimator, data.X_holdout, training.run_id, registry.client)
    tags = {
        TagKey.FINGERPRINT: data.fingerprint,
        TagKey.FLOW_RUN_ID: flow_run.get_id() or "",
        TagKey.FEATURES: ",".join(data.features),
        TagKey.VALIDATION: json.dumps(validation or {})[:4_000],
    }
    version = registry.register_version(info.model_uri, training.run_id, info.model_id, tags)
    registry.move_alias(registry.challenger_alias, version.version, "new candidate")  # emits ml.model.registered and the move

    champion_version, champion_metrics = champion_metrics_on(registry, data.X_holdout, data.y_holdout, data.classes, data.features)
    decision = decide_promotion(metrics, champion_metrics, policy, holdout_rows=len(data.y_holdout))
    if decision.promote:
        registry.promote(version.version, decision.reason)  # emits ml.model.promoted
    logger.info("v%s: %s (%s)", version.version, "promoted to champion" if decision.promote else "kept as challenger", decision.reason)
    registry.client.set_terminated(training.run_id, "FINISHED")
    return CandidateResult(version.version, metrics, champion_metrics, champion_version, decision)

"""Routing between a trained candidate and its fallback: fit the candidate's confidence routing on the holdout and
log it as `routing.json` to its run (MLflow), and the training flow's task that does it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.serving.fallback_fit import FallbackResult
from prefect_crisis.tasks.training.data import TrainingData
from prefect_crisis.tasks.training.gate import columns_of

if TYPE_CHECKING:
    from prefect_crisis.tasks.serving.confidence_routing import RoutingCalibration


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

"""The promotion gate against the registry: register a candidate, score the champion on the same rows, promote.

The decision itself is a value (`prefect_crisis.tasks.training.gate`); this module reads
what it compares from MLflow and writes what it decides. Every promotion also freezes
the promoted version's holdout (features and label) as the model's golden set,
`golden/golden.parquet` among the artifacts of that version's run, named by the
registered model's tag `crisis.golden_version`; the next gate scores both models on it
too, so wrong labels on a batch are found (`label_quality_finding`) before they promote.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import CrisisEvent, TagKey
from prefect_crisis.tasks.models import load_sklearn_model, log_sklearn_model
from prefect_crisis.tasks.training.family import family_of
from prefect_crisis.tasks.training.gate import (
    CandidateResult,
    PromotionDecision,
    TrustedFigures,
    accuracy_on,
    columns_of,
    decide_promotion,
    evaluate,
    label_quality_finding,
)

LOGGER = logging.getLogger("prefect_crisis.promotion")
GOLDEN_DIR, GOLDEN_FILE = "golden", "golden.parquet"
# Tags this module writes (to join TagKey): the registered model's golden set, a version's label-quality finding.
GOLDEN_VERSION_TAG = TagKey.GOLDEN_VERSION
LABEL_FINDING_TAG = TagKey.LABEL_FINDING

# Explicit requirements: MLflow otherwise spends seconds inferring them in a subprocess.
PIP_REQUIREMENTS = [*mlflow.sklearn.get_default_pip_requirements(include_skops=True), f"numpy=={np.__version__}"]


# -- trusted labels: the golden set ------------------------------------------------------------


def freeze_golden_set(client: MlflowClient, model: str, version: str, run_id: str, frame: pd.DataFrame) -> str:
    """Store `frame` (features and label) as the model's golden set: `golden/golden.parquet` of the version's run,
    named by the registered model's tag; returns its URI."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / GOLDEN_FILE
        frame.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), artifact_path=GOLDEN_DIR)
    client.set_registered_model_tag(model, GOLDEN_VERSION_TAG, str(version))
    return f"runs:/{run_id}/{GOLDEN_DIR}/{GOLDEN_FILE}"


def read_golden_set(client: MlflowClient, model: str) -> tuple[str | None, pd.DataFrame | None]:
    """The model's golden set and the version it was frozen with; (None, None) when none was ever frozen.

    Raises:
        RegistryError: one is recorded but cannot be read (the gate then promotes nothing).
    """
    try:
        version = client.get_registered_model(model).tags.get(GOLDEN_VERSION_TAG)
    except MlflowException:
        return None, None  # no registered model yet: nothing was ever promoted
    if not version:
        return None, None
    try:
        run_id = client.get_model_version(model, version).run_id
        if run_id is None:
            raise RegistryError(f"the golden set of v{version} of {model!r} cannot be read (the version has no run)")
        with tempfile.TemporaryDirectory() as folder:
            local = client.download_artifacts(run_id, f"{GOLDEN_DIR}/{GOLDEN_FILE}", folder)
            return version, pd.read_parquet(local)
    except (MlflowException, OSError, ValueError) as error:
        raise RegistryError(f"the golden set of v{version} of {model!r} cannot be read ({type(error).__name__}: {str(error)[:200]})") from error


def log_candidate(estimator, X_example: np.ndarray, run_id: str, client: MlflowClient):
    """Log the estimator as an MLflow model of the run, in `client`'s store
    (fast: explicit requirements; no process-global MLflow state)."""
    return log_sklearn_model(client, estimator, X_example, run_id, PIP_REQUIREMENTS)


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
    metrics, _, _ = _champion_on(registry, champion, X, y, classes, features)
    return champion.version, metrics


def _champion_on(registry, champion, X, y, classes, features):
    """(metrics on the rows, or its record; the loaded model or None; the columns it reads or None for all)."""
    used = champion.tags.get(TagKey.FEATURES)
    names = used.split(",") if used else None
    columns = None
    if names and features is not None:
        columns = columns_of(used, features)
        if columns is None:  # it reads a column the candidate's holdout lacks: not the same rows to judge on
            return dict(champion.metrics), None, names
    try:
        model = load_sklearn_model(registry.client, registry.model_name, champion.version)
        return evaluate(model, X if columns is None else X[:, columns], y, classes), model, names
    except (RegistryError, OSError, ValueError):
        return dict(champion.metrics), None, names


def gate_candidate(
    registry, run_id: str, estimator, data, policy: TrainingPolicy, *, validation: dict | None = None, flow_run_id: str = "", batches: int = 0
) -> CandidateResult:
    """Evaluate on the holdout (and the golden set), register the version as challenger, promote it to champion if
    the policy's gate holds, and then freeze its holdout as the model's golden set. Emits completed; the registry
    emits registered/promoted.

    Args:
        run_id: the candidate's training run (its metrics, model and, once promoted, the golden set go there).
        data: the `TrainingData` it was trained on.
    """
    model = registry.model_name
    client = registry.client
    metrics = evaluate(estimator, data.X_holdout, data.y_holdout, data.classes)
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    registry.timeline().emit(CrisisEvent.TRAINING_COMPLETED, model, {"run_id": run_id, "metrics": metrics, "batches": batches})

    info = log_candidate(estimator, data.X_holdout, run_id, client)
    tags = {
        TagKey.FINGERPRINT: data.fingerprint,
        TagKey.FLOW_RUN_ID: flow_run_id,
        TagKey.FEATURES: ",".join(data.features),
        TagKey.VALIDATION: json.dumps(validation or {})[:4_000],
        TagKey.FAMILY: family_of(estimator),
    }
    if choice := client.get_run(run_id).data.tags.get(TagKey.FAMILY_CHOICE):  # estimator="auto": why this family
        tags[TagKey.FAMILY_CHOICE] = choice
    version = registry.register_version(info.model_uri, run_id, info.model_id, tags)
    registry.move_alias(registry.challenger_alias, version.version, "new candidate")  # emits ml.model.registered and the move

    champion = registry.champion()
    champion_metrics, champion_model, champion_features = (
        _champion_on(registry, champion, data.X_holdout, data.y_holdout, data.classes, data.features) if champion else (None, None, None)
    )
    try:
        _, golden = read_golden_set(client, model)
    except RegistryError as error:
        decision = PromotionDecision(False, f"{error}: not promoted; train again once the store answers")
        return _finish(client, run_id, version.version, metrics, champion_metrics, champion, decision)
    figures = None
    if golden is not None:
        candidate_on_golden = accuracy_on(estimator, golden, data.features, data.label_column)
        if candidate_on_golden is not None:
            client.log_metric(run_id, "golden_accuracy", candidate_on_golden)
        figures = _trusted_figures(champion, champion_metrics, champion_model, champion_features, golden, data, metrics, candidate_on_golden)
    finding = label_quality_finding(figures, policy.label_collapse_margin)
    if finding:
        client.set_model_version_tag(model, version.version, LABEL_FINDING_TAG, finding[:5_000])
    decision = decide_promotion(
        metrics,
        champion_metrics,
        policy,
        holdout_rows=len(data.y_holdout),
        champion_is_fallback=bool(champion and champion.is_fallback),
        label_finding=finding,
    )
    if decision.promote:
        registry.promote(version.version, decision.reason)  # emits ml.model.promoted
        try:
            freeze_golden_set(client, model, version.version, run_id, data.holdout_frame())
        except (MlflowException, OSError, ValueError) as error:  # promoted all the same: the earlier golden set stays
            LOGGER.warning("v%s promoted, but its golden set was not stored (%s: %s)", version.version, type(error).__name__, error)
    return _finish(client, run_id, version.version, metrics, champion_metrics, champion, decision, finding)


def _trusted_figures(champion, on_batch, champion_model, champion_features, golden, data, metrics, candidate_on_golden) -> TrustedFigures | None:
    """What the label-quality check compares, when the champion could be scored on both sets and has a record."""
    if champion_model is None or "accuracy" not in champion.metrics:
        return None
    on_golden = accuracy_on(champion_model, golden, champion_features or data.features, data.label_column)
    if on_golden is None:
        return None
    return TrustedFigures(
        champion.version,
        on_batch["accuracy"],
        len(data.y_holdout),
        float(champion.metrics["accuracy"]),
        on_golden,
        len(golden),
        metrics["accuracy"],
        candidate_on_golden,
    )


def _finish(client, run_id, version, metrics, champion_metrics, champion, decision, finding=None) -> CandidateResult:
    client.set_terminated(run_id, "FINISHED")
    return CandidateResult(version, metrics, champion_metrics, champion.version if champion else None, decision, finding)

"""Evaluate a candidate, register it fast, and decide promotion by the policy's gate.

The gate judges candidate and champion on the same rows: the new batch's holdout.
Those rows carry the batch's labels, which may be wrong: a retrain on poisoned
labels scored 0.97 on its own holdout, where the champion fell from 0.905 to 0.146,
and was promoted. So every promotion also freezes the promoted version's holdout
(features and label) as the model's golden set, `golden/golden.parquet` among
the artifacts of that version's run, named by the registered model's tag
`crisis.golden_version`. The next gate scores both models on it too; a champion
that collapses on the batch's holdout beyond doubt (the upper end of the 95 %
Wilson interval of its accuracy there is more than `label_collapse_margin` below
its registered figure) yet holds that figure on the golden set is a
label-quality finding: promotion is blocked and the decision gives both figures.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import accuracy_score, f1_score, log_loss

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from prefect_crisis.blocks.training_policy import LOWER_IS_BETTER, TrainingPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import CrisisEvent, TagKey
from prefect_crisis.tasks.models import load_sklearn_model, log_sklearn_model
from prefect_crisis.tasks.response.rollback import wilson_interval
from prefect_crisis.tasks.training.run import smallest_judged_batch

LOGGER = logging.getLogger("prefect_crisis.promotion")
GOLDEN_DIR, GOLDEN_FILE = "golden", "golden.parquet"
# Tags this module writes (to join TagKey): the registered model's golden set, a version's label-quality finding.
GOLDEN_VERSION_TAG = TagKey.GOLDEN_VERSION
LABEL_FINDING_TAG = TagKey.LABEL_FINDING
LABEL_CHECK_CONFIDENCE = 0.95

# Explicit requirements: MLflow otherwise spends seconds inferring them in a subprocess.
PIP_REQUIREMENTS = [*mlflow.sklearn.get_default_pip_requirements(include_skops=True), f"numpy=={np.__version__}"]


def evaluate(estimator, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Holdout metrics: accuracy, macro F1, and log loss when the estimator gives finite probabilities.

    Example:
        >>> from sklearn.linear_model import RidgeClassifier
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> sorted(evaluate(RidgeClassifier().fit(X, y), X, y, np.array([0, 1])))  # no predict_proba: no log loss
        ['accuracy', 'f1']
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = estimator.predict(X)
        probabilities = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None
    metrics = {"accuracy": float(accuracy_score(y, predicted)), "f1": float(f1_score(y, predicted, average="macro"))}
    if probabilities is not None and np.all(np.isfinite(probabilities)) and set(np.unique(y)) <= set(classes):
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
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    policy: TrainingPolicy,
    *,
    holdout_rows: int,
    champion_is_fallback: bool = False,
    label_finding: str | None = None,
) -> PromotionDecision:
    """The promotion gate: a holdout large enough to judge, labels not in doubt, beat the
    champion by the margin, break no guard.

    Guards (a log loss that may not worsen, say) compare like with like: against the
    fallback model as champion, a simpler and differently calibrated family, they are not
    applied, or an SGD candidate that beats it could never replace it.

    Args:
        champion_is_fallback: the champion is the fallback model (tag `crisis.role=fallback`).
        label_finding: a label-quality finding on the batch (`label_quality_finding`): blocks promotion.

    Example:
        >>> policy = TrainingPolicy(promotion_margin=0.01)
        >>> decide_promotion({"accuracy": 0.90, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, policy, holdout_rows=1_000).promote
        True
        >>> decide_promotion({"accuracy": 0.885, "log_loss": 0.30}, {"accuracy": 0.88, "log_loss": 0.31}, policy, holdout_rows=1_000).reason
        'accuracy 0.8850 does not beat the champion 0.8800 by 0.01'
        >>> decide_promotion({"accuracy": 1.0}, {"accuracy": 0.0}, policy, holdout_rows=2).reason
        'holdout of 2 rows is below min_holdout_rows 50: train on a batch of 100 rows or more, or lower min_holdout_rows in the TrainingPolicy'
        >>> decide_promotion({"accuracy": 0.90, "log_loss": 0.60}, {"accuracy": 0.86, "log_loss": 0.30}, policy, holdout_rows=1_000,
        ...                  champion_is_fallback=True).reason
        'accuracy 0.9000 beats the fallback champion 0.8600 (guards are not applied against the fallback model)'
    """
    if holdout_rows < policy.min_holdout_rows:
        return PromotionDecision(False, holdout_refusal(holdout_rows, policy))
    if label_finding:
        return PromotionDecision(False, label_finding)
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
    if champion_is_fallback:
        return PromotionDecision(
            True, f"{metric} {candidate[metric]:.4f} beats the fallback champion {champion[metric]:.4f} (guards are not applied against the fallback model)"
        )
    for guard, allowed in policy.guard_metrics.items():
        if guard in candidate and guard in champion and -_better(guard, candidate[guard], champion[guard]) > allowed:
            return PromotionDecision(
                False, f"guard {guard} worsens from {champion[guard]:.4f} to {candidate[guard]:.4f} (allowed {allowed:g})"
            )
    return PromotionDecision(True, f"{metric} {candidate[metric]:.4f} beats the champion {champion[metric]:.4f}")


def holdout_refusal(holdout_rows: int, policy: TrainingPolicy) -> str:
    """Why nothing is promoted (and no fallback kept) on a holdout below the floor: one line naming the setting
    and the smallest batch whose holdout reaches it."""
    return (
        f"holdout of {holdout_rows} rows is below min_holdout_rows {policy.min_holdout_rows}: train on a batch of "
        f"{smallest_judged_batch(policy)} rows or more, or lower min_holdout_rows in the TrainingPolicy"
    )


# -- trusted labels: the golden set ------------------------------------------------------------


@dataclass(frozen=True)
class TrustedFigures:
    """Accuracies the label-quality check compares: the champion's on the batch's holdout, as registered and on
    the golden set, and the candidate's on both sets (None: not scored)."""

    champion_version: str
    champion_on_batch: float
    batch_rows: int
    champion_registered: float
    champion_on_golden: float
    golden_rows: int
    candidate_on_batch: float
    candidate_on_golden: float | None = None


def label_quality_finding(figures: TrustedFigures | None, margin: float | None, confidence: float = LABEL_CHECK_CONFIDENCE) -> str | None:
    """A label-quality finding, or None: the champion collapses on the batch's holdout beyond doubt (the upper end of
    the Wilson interval of its accuracy there is more than `margin` below its registered figure) while on the golden
    set it holds that figure within `margin`. Both collapsing is a changed world, not (only) wrong labels.

    Example:
        >>> poisoned = TrustedFigures("1", 0.146, 400, 0.905, 0.91, 200, 0.97, 0.08)
        >>> print(label_quality_finding(poisoned, 0.15))
        label-quality finding: champion v1 scores 0.146 on this batch's holdout (400 rows, at most 0.183 at 95 %) against 0.905 registered and 0.910 on the golden set (200 rows): the batch's labels look wrong; the candidate scores 0.970 on the batch, 0.080 on the golden set
        >>> label_quality_finding(TrustedFigures("1", 0.80, 400, 0.905, 0.91, 200, 0.97), 0.15) is None  # within the margin
        True
        >>> label_quality_finding(TrustedFigures("1", 0.146, 400, 0.905, 0.30, 200, 0.97), 0.15) is None  # collapses on both
        True
    """
    if figures is None or margin is None or figures.batch_rows == 0:
        return None
    bar = figures.champion_registered - margin
    _, batch_high = wilson_interval(round(figures.champion_on_batch * figures.batch_rows), figures.batch_rows, confidence)
    if batch_high >= bar or figures.champion_on_golden < bar:
        return None
    on_golden = f", {figures.candidate_on_golden:.3f} on the golden set" if figures.candidate_on_golden is not None else ""
    return (
        f"label-quality finding: champion v{figures.champion_version} scores {figures.champion_on_batch:.3f} on this batch's holdout "
        f"({figures.batch_rows} rows, at most {batch_high:.3f} at {confidence * 100:g} %) against {figures.champion_registered:.3f} "
        f"registered and {figures.champion_on_golden:.3f} on the golden set ({figures.golden_rows} rows): the batch's labels "
        f"look wrong; the candidate scores {figures.candidate_on_batch:.3f} on the batch{on_golden}"
    )


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
        with tempfile.TemporaryDirectory() as folder:
            local = client.download_artifacts(run_id, f"{GOLDEN_DIR}/{GOLDEN_FILE}", folder)
            return version, pd.read_parquet(local)
    except (MlflowException, OSError, ValueError) as error:
        raise RegistryError(f"the golden set of v{version} of {model!r} cannot be read ({type(error).__name__}: {str(error)[:200]})") from error


def accuracy_on(estimator, frame: pd.DataFrame, features: list[str], label_column: str) -> float | None:
    """The estimator's accuracy on a frame's rows, through the named columns; None when the frame lacks one."""
    if label_column not in frame.columns or any(name not in frame.columns for name in features) or frame.empty:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = estimator.predict(frame[features].to_numpy(dtype=np.float64))
    return float(np.mean(predicted == frame[label_column].to_numpy()))


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
    label_finding: str | None = None  # the batch's labels are in doubt: no promotion, and no fallback from it


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
    }
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
        metrics, champion_metrics, policy, holdout_rows=len(data.y_holdout),
        champion_is_fallback=bool(champion and champion.is_fallback), label_finding=finding,
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
        champion.version, on_batch["accuracy"], len(data.y_holdout), float(champion.metrics["accuracy"]),
        on_golden, len(golden), metrics["accuracy"], candidate_on_golden,
    )


def _finish(client, run_id, version, metrics, champion_metrics, champion, decision, finding=None) -> CandidateResult:
    client.set_terminated(run_id, "FINISHED")
    return CandidateResult(version, metrics, champion_metrics, champion.version if champion else None, decision, finding)


@task(name="register-and-gate", cache_policy=NO_CACHE)
def register_and_gate(training, data, registry, policy: TrainingPolicy, validation: dict | None = None) -> CandidateResult:
    """Evaluate on the holdout and the golden set, register the version as challenger, promote it to champion if
    the policy's gate holds (see `gate_candidate`)."""
    result = gate_candidate(
        registry, training.run_id, training.outcome.estimator, data, policy,
        validation=validation, flow_run_id=flow_run.get_id() or "", batches=training.outcome.progress.batches_seen,
    )
    promoted = "promoted to champion" if result.decision.promote else "kept as challenger"
    get_run_logger().info("v%s: %s (%s)", result.version, promoted, result.decision.reason)
    return result

"""The promotion gate as values: metrics on a holdout, the promotion decision, the label-quality finding.

Plain functions over plain data (no Prefect, no MLflow): `prefect_crisis.tasks.training.promotion`
scores the champion from the registry, calls these, and writes what they decide.

The gate judges candidate and champion on the same rows: the new batch's holdout.
Those rows carry the batch's labels, which may be wrong: a retrain on poisoned
labels scored 0.97 on its own holdout, where the champion fell from 0.905 to 0.146,
and was promoted. So the gate also compares both on the model's golden set (the
holdout frozen by the last promotion): a champion that collapses on the batch's
holdout beyond doubt (the upper end of the 95 % Wilson interval of its accuracy
there is more than `label_collapse_margin` below its registered figure) yet holds
that figure on the golden set is a label-quality finding: promotion is blocked and
the decision gives both figures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss

from prefect_crisis.tasks.response.rules import wilson_interval
from prefect_crisis.tasks.training.holdout import smallest_judged_batch

if TYPE_CHECKING:
    from prefect_crisis.blocks.training_policy import TrainingPolicy

# The metrics whose smaller value is better; the rest are better larger. The same set as
# `prefect_crisis.blocks.training_policy.LOWER_IS_BETTER` (a test pins them equal): that module is a Block's,
# which imports Prefect.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "error_rate", "mae", "rmse"})
LABEL_CHECK_CONFIDENCE = 0.95


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
        >>> from prefect_crisis.blocks.training_policy import TrainingPolicy
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
        return PromotionDecision(False, f"{metric} {candidate[metric]:.4f} does not beat the champion {champion[metric]:.4f}{margin}")
    if champion_is_fallback:
        return PromotionDecision(
            True,
            f"{metric} {candidate[metric]:.4f} beats the fallback champion {champion[metric]:.4f} (guards are not applied against the fallback model)",
        )
    for guard, allowed in policy.guard_metrics.items():
        if guard in candidate and guard in champion and -_better(guard, candidate[guard], champion[guard]) > allowed:
            return PromotionDecision(False, f"guard {guard} worsens from {champion[guard]:.4f} to {candidate[guard]:.4f} (allowed {allowed:g})")
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
    # Imported here: prefect_crisis.tasks.response.rollback still imports its policy Block (and so Prefect) at its top.

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


def accuracy_on(estimator, frame: pd.DataFrame, features: list[str], label_column: str) -> float | None:
    """The estimator's accuracy on a frame's rows, through the named columns; None when the frame lacks one."""
    if label_column not in frame.columns or any(name not in frame.columns for name in features) or frame.empty:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = estimator.predict(frame[features].to_numpy(dtype=np.float64))
    return float(np.mean(predicted == frame[label_column].to_numpy()))


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

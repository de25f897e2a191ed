"""Confidence routing that never costs accuracy: which rows the primary answers and
which go to the fallback, fitted on a holdout (plain numpy and scikit-learn).

A model's raw confidence says little: a linear model on unscaled features gives
1.00 on every row, and routing its "low-confidence" rows to the fallback at a
fixed threshold lowered served accuracy (95.5 % -> 88.0 % on digits). So:

1. `fit_routing` maps a raw per-row score of the primary (its top class
   probability, or its decision margin, which does not saturate) to the
   probability that the primary is right on the row, with the isotonic or
   sigmoid map that scores best out of fold (Brier score of "right": calibration
   and sharpness together; a map that is calibrated but constant cannot route),
   or no map at all when the raw probability does as well.
2. It routes rows under a confidence threshold to the fallback only when that
   gains accuracy beyond noise: the whole procedure (fit the map, pick the
   threshold that maximises served accuracy) is cross-validated on the holdout,
   and the rows it routes must be won by the fallback more often than lost, by
   more than `z` standard errors (a one-sided sign test). Otherwise routing is
   off, with the reason.
3. The result is a `RoutingCalibration`, a frozen JSON-safe value stored as
   `routing.json` in the primary version's MLflow run (`log_routing`), read
   by serving (`load_routing`; both in `routing_artifact`, the MLflow side),
   and turned into a `RoutingPlan` for one primary/fallback pair (`plan_routing`).

Without a calibration, serving does no confidence routing (unless the policy
sets a threshold explicitly); invalid input and a failing primary still go to
the fallback.

The parts: the raw scores and the confidence map in `confidence`, the stored value in `routing_calibration`,
serving's plan in `routing_plan`, the fitting here; every name still imports from this module.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from prefect_crisis.tasks.serving.confidence import (
    DECISION,
    ISOTONIC,
    METHODS,
    PROBABILITY,
    SIGMOID,
    UNCALIBRATED,
    ConfidenceMap,
    available_scores,
    raw_confidence,
    score_output,
    top_two,
)
from prefect_crisis.tasks.serving.routing_calibration import FORMAT, ROUTING_ARTIFACT, RoutingCalibration
from prefect_crisis.tasks.serving.routing_plan import RoutingPlan, plan_routing

__all__ = [
    "DECISION",
    "FORMAT",
    "ISOTONIC",
    "METHODS",
    "PROBABILITY",
    "ROUTING_ARTIFACT",
    "SIGMOID",
    "UNCALIBRATED",
    "ConfidenceMap",
    "RoutingCalibration",
    "RoutingPlan",
    "available_scores",
    "best_threshold",
    "expected_calibration_error",
    "fit_map",
    "fit_routing",
    "plan_routing",
    "raw_confidence",
    "score_output",
    "top_two",
]

# tests/unit/test_routing.py runs this module's examples; those of the modules split out of it run with them.
__test__ = {
    "split_out": """
>>> import doctest
>>> from prefect_crisis.tasks.serving import confidence, routing_calibration, routing_plan
>>> [doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS).failed for module in (confidence, routing_calibration, routing_plan)]
[0, 0, 0]
"""
}


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |accuracy - mean confidence| over equal-width confidence bins (NaN rows left out).

    Example:
        >>> expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([True, True, True, False]))
        0.1
    """
    finite = np.isfinite(confidence)
    confidence, right = np.clip(confidence[finite], 0.0, 1.0), right[finite].astype(np.float64)
    if not len(confidence):
        return math.nan
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gaps = np.abs(np.bincount(which, right, bins) - np.bincount(which, confidence, bins))
    return round(float(gaps.sum() / counts.sum()), 12)


def fit_map(score: str, method: str, raw: np.ndarray, right: np.ndarray) -> ConfidenceMap:
    """Fit one confidence map on finite raw scores and whether the primary was right on each row."""
    if method == UNCALIBRATED:
        return ConfidenceMap(score, UNCALIBRATED)
    rate = float(np.mean(right)) if len(right) else 0.5
    if method == ISOTONIC:
        from sklearn.isotonic import IsotonicRegression

        if not len(raw):
            return ConfidenceMap(score, ISOTONIC, (0.0,), (rate,))
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, right.astype(np.float64))
        return ConfidenceMap(score, ISOTONIC, tuple(map(float, fitted.X_thresholds_)), tuple(map(float, fitted.y_thresholds_)))
    # sigmoid (Platt) on the raw score, standardised for the solver, then folded back into one slope and intercept
    clipped = min(max(rate, 1e-6), 1 - 1e-6)
    spread = float(np.std(raw)) if len(raw) else 0.0
    if spread == 0.0 or right.all() or not right.any():
        return ConfidenceMap(score, SIGMOID, slope=0.0, intercept=math.log(clipped / (1 - clipped)))
    from sklearn.linear_model import LogisticRegression

    centre = float(np.mean(raw))
    fitted = LogisticRegression(C=1e4).fit(((raw - centre) / spread)[:, None], right)
    slope = float(fitted.coef_[0, 0]) / spread
    return ConfidenceMap(score, SIGMOID, slope=slope, intercept=float(fitted.intercept_[0]) - slope * centre)


def best_threshold(confidence: np.ndarray, gain: np.ndarray) -> float | None:
    """The threshold that maximises the net rows won by routing the rows under it (`gain`: +1 where only the
    fallback is right, -1 where only the primary is), or None when no threshold wins a row.

    Example:
        >>> best_threshold(np.array([0.2, 0.4, 0.6, 0.8]), np.array([1, 1, -1, 0]))
        0.5
        >>> best_threshold(np.array([0.2, 0.4]), np.array([-1, 0])) is None
        True
    """
    order = np.argsort(confidence, kind="stable")
    ordered, won = confidence[order], np.cumsum(gain[order])
    # a cut can only fall between distinct confidences: the last row of each run of ties
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    if not len(ends) or won[ends].max() <= 0:
        return None
    end = ends[int(np.argmax(won[ends]))]
    if end + 1 < len(ordered):
        return float((ordered[end] + ordered[end + 1]) / 2)
    return float(np.nextafter(ordered[end], np.inf))


def _folds(rows: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(rows) % folds)


def _out_of_fold(score: str, method: str, raw: np.ndarray, right: np.ndarray, fold: np.ndarray, folds: int) -> np.ndarray:
    confidence = np.empty(len(raw))
    for k in range(folds):
        train = fold != k
        confidence[~train] = fit_map(score, method, raw[train], right[train])(raw[~train])
    return confidence


def fit_routing(
    primary: Any,
    fallback: Any | None,
    X_primary: np.ndarray,
    X_fallback: np.ndarray | None,
    y: np.ndarray,
    *,
    fallback_version: str | None = None,
    folds: int = 5,
    z: float = 2.0,
    min_rows: int = 20,
    seed: int = 0,
) -> RoutingCalibration:
    """Calibrate the primary's confidence on a holdout and pick the threshold under which rows go to the fallback,
    only when that gains accuracy beyond noise.

    Args:
        primary: the fitted primary (any classifier; its confidence comes from predict_proba or decision_function).
        fallback: the fitted fallback it routes to, or None (routing off).
        X_primary: holdout rows in the primary's columns (never rows it was trained on).
        X_fallback: the same rows in the fallback's columns.
        y: their labels.
        fallback_version: the registered fallback version; serving another one turns routing off.
        folds: cross-validation folds on the holdout.
        z: how many standard errors the routed rows' net gain must exceed.
        min_rows: fewer holdout rows: no routing.

    Example:
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> primary = LogisticRegression(max_iter=5_000).fit(X[::2], y[::2])
        >>> fallback = LogisticRegression().fit(X[::2, :2], y[::2])
        >>> routing = fit_routing(primary, fallback, X[1::2], X[1::2, :2], y[1::2])
        >>> routing.threshold is None, routing.reason.startswith("off:"), routing.rows
        (True, True, 284)
    """
    y = np.asarray(y)
    rows = len(y)
    primary_right = np.asarray(primary.predict(X_primary)) == y
    primary_accuracy = float(primary_right.mean()) if rows else math.nan
    fallback_right = np.asarray(fallback.predict(X_fallback)) == y if fallback is not None else None
    fallback_accuracy = float(fallback_right.mean()) if fallback_right is not None and rows else None

    def calibration(confidence_map, threshold, reason, served=primary_accuracy, ece_raw=None, ece=None) -> RoutingCalibration:
        return RoutingCalibration(
            confidence_map, threshold, reason, rows, primary_accuracy, fallback_accuracy, served, ece_raw, ece, fallback_version
        )

    scores = available_scores(primary)
    if not scores:
        return calibration(None, None, "off: the primary has neither predict_proba nor decision_function, so no confidence to route on")
    raws = {score: raw_confidence(score_output(primary, X_primary, score), score) for score in scores}
    finite = np.logical_and.reduce([np.isfinite(raw) for raw in raws.values()])
    if not finite.any():
        return calibration(None, None, f"off: the primary's scores are not finite on any of the {rows} holdout rows")
    fold = _folds(int(finite.sum()), folds, seed)
    right = primary_right[finite]
    # Brier score out of fold: a map is kept only when it beats the raw probability on unseen rows.
    candidates = [(score, method) for score in scores for method in METHODS if method != UNCALIBRATED or score == PROBABILITY]
    out_of_fold = {candidate: _out_of_fold(*candidate, raws[candidate[0]][finite], right, fold, folds) for candidate in candidates}
    brier = {candidate: float(np.mean((confidence - right) ** 2)) for candidate, confidence in out_of_fold.items()}
    score, method = min(candidates, key=lambda candidate: (round(brier[candidate], 9), candidates.index(candidate)))
    confidence_map = fit_map(score, method, raws[score][finite], right)
    ece_raw = expected_calibration_error(raws[PROBABILITY][finite], right) if PROBABILITY in raws else None
    ece = expected_calibration_error(out_of_fold[(score, method)], right)
    fitted = functools.partial(calibration, confidence_map, ece_raw=ece_raw, ece=ece)

    if fallback_right is None:
        return fitted(None, "off: no fallback to route to")
    if rows < min_rows:
        return fitted(None, f"off: {rows} holdout rows are under min_rows {min_rows}, too few to show a gain")
    gain = fallback_right[finite].astype(np.int64) - right.astype(np.int64)
    raw = raws[score][finite]
    # The whole procedure (map, then threshold) out of fold: what routing would have won on rows it never saw.
    routed = np.zeros(len(raw), dtype=bool)
    for k in range(folds):
        train = fold != k
        fold_map = fit_map(score, method, raw[train], right[train])
        threshold = best_threshold(fold_map(raw[train]), gain[train])
        if threshold is not None:
            routed[~train] = fold_map(raw[~train]) < threshold
    won, lost = int(np.sum(routed & (gain > 0))), int(np.sum(routed & (gain < 0)))
    net = won - lost
    if net <= 0 or net <= z * math.sqrt(won + lost):
        return fitted(
            None,
            f"off: cross-validated on {rows} holdout rows, the rows routing would send to the fallback were won "
            f"{won} and lost {lost}: no gain beyond noise ({z:g} standard errors)",
        )
    threshold = best_threshold(confidence_map(raw), gain)
    if threshold is None:
        return fitted(None, "off: on the whole holdout no threshold wins a row")
    served = float((primary_right.sum() + net) / rows)
    return fitted(
        threshold,
        f"on: rows under calibrated confidence {threshold:.4g} go to the fallback; cross-validated holdout "
        f"accuracy {primary_accuracy:.4f} -> {served:.4f} ({won} rows won, {lost} lost)",
        served=served,
    )

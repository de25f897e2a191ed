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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefect_crisis.core.errors import ServingError

ROUTING_ARTIFACT = "routing.json"
FORMAT = 1
PROBABILITY, DECISION = "probability", "decision"  # the primary output a confidence is read from
UNCALIBRATED, ISOTONIC, SIGMOID = "none", "isotonic", "sigmoid"  # how a raw score becomes a confidence
METHODS = (UNCALIBRATED, ISOTONIC, SIGMOID)


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest and second largest value of a (rows, classes) matrix (NaN propagates).

    Column by column: numpy's reductions along rows of 2-10 classes are far slower than
    elementwise passes over the columns, and serving runs this on every request.

    Example:
        >>> top, second = top_two(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
        >>> top.tolist(), second.tolist()
        ([0.5, 0.6], [0.3, 0.3])
    """
    top = scores[:, 0].astype(np.float64, copy=True)
    second = np.full(len(scores), -np.inf)
    for j in range(1, scores.shape[1]):
        column = scores[:, j]
        np.maximum(second, np.minimum(top, column), out=second)
        np.maximum(top, column, out=top)
    return top, second


def raw_confidence(output: np.ndarray, score: str) -> np.ndarray:
    """The raw per-row score a confidence map reads: the top probability of `predict_proba`'s output, or the
    decision margin of `decision_function`'s (|d| for two classes, top minus second otherwise); NaN where not finite.

    Example:
        >>> raw_confidence(np.array([[0.9, 0.1], [np.nan, 0.5]]), "probability").tolist()
        [0.9, nan]
        >>> raw_confidence(np.array([-3.0, 0.5]), "decision").tolist(), raw_confidence(np.array([[4.0, 1.0, -2.0]]), "decision").tolist()
        ([3.0, 0.5], [3.0])
    """
    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 1:
        raw = np.abs(output)
    elif score == PROBABILITY:
        raw, _ = top_two(output)
    else:
        top, second = top_two(output)
        raw = top - second if output.shape[1] > 1 else np.abs(top)
    raw = np.where(np.isfinite(raw), raw, np.nan)
    if output.ndim == 2 and output.shape[1] > 1:  # a NaN beside a finite top: the row is not finite either
        raw[~np.isfinite(output).all(axis=1)] = np.nan
    return raw


def score_output(estimator: Any, X: np.ndarray, score: str) -> np.ndarray:
    """The estimator's output a score reads: `predict_proba` for probability, `decision_function` for decision."""
    return estimator.predict_proba(X) if score == PROBABILITY else estimator.decision_function(X)


def available_scores(estimator: Any) -> tuple[str, ...]:
    """The scores an estimator offers (a Pipeline offers its last step's; SGD with hinge loss has no probability)."""
    return tuple(score for score, method in ((PROBABILITY, "predict_proba"), (DECISION, "decision_function")) if hasattr(estimator, method))


@dataclass(frozen=True)
class ConfidenceMap:
    """A monotone map from a raw score of the primary to the probability that it is right on the row.

    `none` passes a probability through; `isotonic` interpolates its knots `x` -> `y`; `sigmoid` is
    1 / (1 + exp(-(slope * raw + intercept))).

    Example:
        >>> ConfidenceMap("decision", "isotonic", x=(0.0, 2.0), y=(0.5, 0.9))(np.array([1.0, 5.0, np.nan])).tolist()
        [0.7, 0.9, nan]
    """

    score: str
    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 0.0
    intercept: float = 0.0

    @functools.cached_property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == ISOTONIC:
            return np.interp(raw, *self._knots)  # NaN stays NaN; beyond the knots: the end values
        if self.method == SIGMOID:
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-(self.slope * raw + self.intercept)))
        return raw

    def to_dict(self) -> dict[str, Any]:
        parameters = (
            {"x": list(self.x), "y": list(self.y)}
            if self.method == ISOTONIC
            else ({"slope": self.slope, "intercept": self.intercept} if self.method == SIGMOID else {})
        )
        return {"score": self.score, "method": self.method, **parameters}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceMap:
        method, score = data.get("method"), data.get("score")
        if method not in METHODS or score not in (PROBABILITY, DECISION) or (method == UNCALIBRATED and score != PROBABILITY):
            raise ValueError(f"unknown confidence map {method!r} on {score!r}")
        x, y = tuple(float(v) for v in data.get("x", ())), tuple(float(v) for v in data.get("y", ()))
        if method == ISOTONIC and (not x or len(x) != len(y)):
            raise ValueError("an isotonic map needs as many x as y knots, at least one")
        return cls(score, method, x, y, float(data.get("slope", 0.0)), float(data.get("intercept", 0.0)))


@dataclass(frozen=True)
class RoutingCalibration:
    """How one primary version's rows are routed, fitted on a holdout (`fit_routing`); stored as `routing.json`.

    Attributes:
        confidence_map: raw score -> calibrated confidence, or None when the primary offers no score.
        threshold: rows whose calibrated confidence is under it go to the fallback; None: routing off.
        reason: why routing is on or off, in one line.
        rows: holdout rows it was fitted on.
        primary_accuracy, fallback_accuracy, served_accuracy: on the holdout (served: cross-validated, with routing).
        ece_raw, ece: expected calibration error of the raw top probability and of the map (out of fold).
        fallback_version: the fallback the threshold was chosen against; serving another one turns routing off.

    Example:
        >>> calibration = RoutingCalibration(ConfidenceMap("probability", "none"), None, "no gain", 300, 0.95, 0.6, 0.95)
        >>> import json
        >>> RoutingCalibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration, calibration.method
        (True, 'none')
    """

    confidence_map: ConfidenceMap | None
    threshold: float | None
    reason: str
    rows: int
    primary_accuracy: float
    fallback_accuracy: float | None
    served_accuracy: float
    ece_raw: float | None = None
    ece: float | None = None
    fallback_version: str | None = None

    @property
    def method(self) -> str:
        return self.confidence_map.method if self.confidence_map else UNCALIBRATED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (no NaN: unknown figures are None)."""

        def number(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else round(float(value), 6)

        return {
            "format": FORMAT,
            "confidence_map": self.confidence_map.to_dict() if self.confidence_map else None,
            "threshold": number(self.threshold),
            "reason": self.reason,
            "holdout": {
                "rows": int(self.rows),
                "primary_accuracy": number(self.primary_accuracy),
                "fallback_accuracy": number(self.fallback_accuracy),
                "served_accuracy": number(self.served_accuracy),
                "ece_raw": number(self.ece_raw),
                "ece": number(self.ece),
            },
            "fallback_version": self.fallback_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingCalibration:
        """The value back from `to_dict`'s output.

        Raises:
            ServingError: not a routing calibration this version of prefect-crisis reads.
        """
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            holdout = data["holdout"]
            mapping = data.get("confidence_map")

            def optional(value: Any) -> float | None:
                return None if value is None else float(value)

            return cls(
                ConfidenceMap.from_dict(mapping) if mapping else None,
                optional(data.get("threshold")),
                str(data.get("reason", "")),
                int(holdout["rows"]),
                float(holdout["primary_accuracy"]),
                optional(holdout.get("fallback_accuracy")),
                float(holdout["served_accuracy"]),
                optional(holdout.get("ece_raw")),
                optional(holdout.get("ece")),
                None if data.get("fallback_version") is None else str(data["fallback_version"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ServingError(f"unreadable {ROUTING_ARTIFACT} ({error}): fit it again with fit_routing and log_routing") from None


# -- fitting ---------------------------------------------------------------------------------


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


# -- serving's plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingPlan:
    """How serving routes one primary's rows on confidence: which output it reads, the map, the threshold (None: no
    confidence routing) and why, in one line (logged once per primary/fallback pair)."""

    score: str | None
    confidence_map: ConfidenceMap | None
    threshold: float | None
    note: str


def plan_routing(
    estimator: Any,
    calibration: RoutingCalibration | None,
    *,
    version: str,
    explicit_threshold: float | None = None,
    fallback_version: str | None = None,
    missing: str = f"no {ROUTING_ARTIFACT} in its run",
) -> RoutingPlan:
    """Decide how to route a primary's rows: its fitted calibration, else no confidence routing (never lower accuracy),
    unless the policy sets a threshold explicitly.

    Example:
        >>> from sklearn.linear_model import SGDClassifier
        >>> hinge = SGDClassifier(loss="hinge").fit([[0.0], [1.0]], [0, 1])
        >>> plan_routing(hinge, None, version="3").note
        'v3 has no predict_proba and no routing calibration: served without confidence routing'
        >>> plan_routing(SGDClassifier(loss="log_loss").fit([[0.0], [1.0]], [0, 1]), None, version="4").threshold is None
        True
    """
    scores = available_scores(estimator)
    confidence_map = calibration.confidence_map if calibration is not None else None
    if calibration is not None and confidence_map is not None and confidence_map.score in scores:  # usable
        if explicit_threshold is not None:
            return RoutingPlan(
                confidence_map.score,
                confidence_map,
                explicit_threshold,
                f"v{version}: the policy's confidence_threshold {explicit_threshold:g} on the calibrated confidence "
                f"(the fitted one: {calibration.threshold if calibration.threshold is not None else 'off'})",
            )
        if calibration.threshold is None:
            return RoutingPlan(confidence_map.score, confidence_map, None, f"v{version}: confidence routing {calibration.reason}")
        if calibration.fallback_version is not None and fallback_version != calibration.fallback_version:
            return RoutingPlan(
                confidence_map.score,
                confidence_map,
                None,
                f"v{version}: confidence routing off: its threshold was fitted against fallback v{calibration.fallback_version}, "
                f"the fallback served is {'v' + fallback_version if fallback_version else 'none'}",
            )
        return RoutingPlan(confidence_map.score, confidence_map, calibration.threshold, f"v{version}: confidence routing {calibration.reason}")
    why = (
        missing
        if calibration is None
        else f"its {ROUTING_ARTIFACT} reads {calibration.confidence_map.score if calibration.confidence_map else 'no'} score"
    )
    if PROBABILITY not in scores:
        return RoutingPlan(None, None, None, f"v{version} has no predict_proba and no routing calibration: served without confidence routing")
    if explicit_threshold is not None:
        return RoutingPlan(
            PROBABILITY,
            None,
            explicit_threshold,
            f"v{version}: no usable routing calibration ({why}); the policy's confidence_threshold {explicit_threshold:g} on raw confidence",
        )
    return RoutingPlan(
        PROBABILITY,
        None,
        None,
        f"v{version}: confidence routing off: no usable routing calibration ({why}); fit_routing + log_routing at training "
        "turn it on (or set FallbackPolicy.confidence_threshold)",
    )

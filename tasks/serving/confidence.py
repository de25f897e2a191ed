"""A primary's confidence on a row: the raw per-row score it offers (its top class probability, or its decision
margin, which does not saturate) and the monotone map from that score to the probability that it is right.
Plain numpy; `confidence_routing` fits the map, serving reads it on every request."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

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

"""The served models' answers: the primary's exactly as its own `predict()` gives them, read off the output its
confidence comes from so it is called once; the fallback's with its probabilities; per-row confidence.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from prefect_crisis.tasks.serving.confidence_routing import DECISION, PROBABILITY, score_output, top_two


def confidence_of(probabilities: np.ndarray, measure: str = "max_probability") -> np.ndarray:
    """Per-row confidence: the largest class probability, or its margin over the second; NaN where not finite.

    Example:
        >>> confidence_of(np.array([[0.9, 0.1], [0.55, 0.45]])).round(2).tolist()
        [0.9, 0.55]
        >>> confidence_of(np.array([[0.9, 0.1], [0.55, 0.45]]), "margin").round(2).tolist()
        [0.8, 0.1]
    """
    # Column by column: numpy's reductions along a row of 2-10 classes are ~30x slower than
    # elementwise passes over the columns, and this runs on every request.
    columns = [probabilities[:, j] for j in range(probabilities.shape[1])]
    top, total = columns[0].copy(), columns[0].copy()
    for column in columns[1:]:
        np.maximum(top, column, out=top)  # NaN propagates
        np.add(total, column, out=total)  # so does +-inf
    if measure == "margin" and len(columns) > 1:
        if len(columns) == 2:
            top = np.abs(columns[0] - columns[1])
        else:
            ranked = np.sort(probabilities, axis=1)
            top = ranked[:, -1] - ranked[:, -2]
    top[~np.isfinite(total)] = np.nan
    return top


def primary_outputs(estimator: Any, X: np.ndarray, score: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The primary's answers, exactly its `predict()`, and the output its confidence is read from (None: no score)."""
    if score is None:
        return np.asarray(estimator.predict(X)), None
    output = score_output(estimator, X, score)
    return predicted(estimator, X, output, score), output


@functools.cache
def _argmax_rules() -> tuple[frozenset, frozenset, Any, Any]:
    """scikit-learn's `predict` methods that are the argmax of predict_proba even on ties (trees, forests, calibrated
    classifiers), those that are its argmax where it is strict (a monotone map of the same scores: linear models,
    naive Bayes, MLPs), the linear models' `predict` (the sign or argmax of decision_function), and Pipeline.predict."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble._forest import ForestClassifier
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.naive_bayes import _BaseNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import BaseDecisionTree

    exact = frozenset({BaseDecisionTree.predict, ForestClassifier.predict, CalibratedClassifierCV.predict})
    strict = frozenset({LinearClassifierMixin.predict, _BaseNB.predict, MLPClassifier.predict})
    return exact, strict, LinearClassifierMixin.predict, Pipeline.predict


def predicted(estimator: Any, X: np.ndarray, output: np.ndarray, score: str) -> np.ndarray:
    """Exactly the estimator's `predict(X)`, read off `output` (its predict_proba or decision_function on X) where that
    is how its `predict` computes the answer, so the model is called once; `predict` itself answers the rest: rows
    whose top probabilities tie (saturated probabilities of a linear model), and models this does not know.

    Example:
        >>> from sklearn.linear_model import SGDClassifier
        >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
        >>> model = SGDClassifier(loss="log_loss", random_state=0).fit(X[:2], ["b", "a"])
        >>> model.coef_ *= 1e6  # probabilities saturate: [0., 1.] and [1., 0.]
        >>> predicted(model, X, model.predict_proba(X), "probability").tolist() == model.predict(X).tolist()
        True
    """
    exact, strict, linear_predict, pipeline_predict = _argmax_rules()
    final = estimator
    while type(final).predict is pipeline_predict:  # a Pipeline's predict is its last step's on the transformed rows
        final = final.steps[-1][1]
    method, classes, output = getattr(type(final), "predict", None), getattr(final, "classes_", None), np.asarray(output)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        if score == DECISION and method is linear_predict:
            return classes.take((output > 0).astype(np.intp) if output.ndim == 1 else np.argmax(output, axis=1), axis=0)
        if score == PROBABILITY and (method in exact or method in strict) and output.ndim == 2 and output.shape[1] == len(classes):
            answers = classes.take(np.argmax(output, axis=1), axis=0)
            if method in strict:
                top, second = top_two(output)
                tied = np.flatnonzero(~(top > second) & np.isfinite(top))  # not finite: routed, not answered
                if len(tied):
                    answers[tied] = np.asarray(estimator.predict(X[tied]))
            return answers
    return np.asarray(estimator.predict(X))


def fallback_outputs(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The fallback's answers (its `predict()`) and probabilities (None without predict_proba).

    Raises:
        ValueError: its probabilities are not finite (its answers would not be either).
    """
    if not hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict(X)), None
    probabilities = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    if not np.isfinite(probabilities).all():
        raise ValueError("non-finite probabilities")
    return predicted(estimator, X, probabilities, PROBABILITY), probabilities

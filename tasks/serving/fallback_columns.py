"""Which columns the fallback model reads: ranked by how strongly each separates the classes, and how many it
tries in turn. Plain numpy and scipy.

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

import numpy as np
from scipy.stats import rankdata
from sklearn.feature_selection import f_classif

from prefect_crisis.core.errors import TrainingError


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

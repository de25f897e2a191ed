"""The two-sample statistics behind drift: PSI on the reference's quantile bins (or the categories of both sides),
the chi-square homogeneity test on the same bins (by random splits on small samples), the two-sample KS test on a
deterministic sample, and the p-values combined (Bonferroni over a feature's tests, Holm over a batch's features).
Plain numpy and scipy; `drift` judges features with them."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

# Floor for an empty bin's share, so PSI stays finite (a common convention).
_PSI_EPSILON = 1e-4
# Expected values of the smaller side per bin that the chi-square approximation needs.
_MIN_EXPECTED_PER_BIN = 5
# Below this many rows on a side, the chi-square test's p-value comes from
# random splits of the pooled counts rather than the chi-square curve.
_PERMUTATION_BELOW = 500
# Sequential draws: stop after this many splits reach the statistic, or at the cap.
_PERMUTATION_HITS = 20
_PERMUTATION_FIRST = 400
_PERMUTATION_CHUNK = 10_000
_PERMUTATION_DRAWS = 50_000
# Above this many rows per side the KS p-value's asymptotic form is exact enough.
_EXACT_KS_LIMIT = 2_000


def _psi_from_shares(reference_share: np.ndarray, current_share: np.ndarray) -> float:
    reference_share = np.maximum(reference_share, _PSI_EPSILON)
    current_share = np.maximum(current_share, _PSI_EPSILON)
    return float(np.sum((current_share - reference_share) * np.log(current_share / reference_share)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates merged)."""
    quantiles = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(quantiles)


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # A few full-array comparisons beat a binary search per value when the
    # edges are few (10 bins: about 3x faster than np.searchsorted here).
    below = np.array([np.count_nonzero(values < edge) for edge in edges], dtype=np.int64)
    return np.diff(np.concatenate(([0], below, [len(values)])))


def usable_bins(bins: int, reference_rows: int, current_rows: int) -> int:
    """At most `bins`, and few enough that each holds five expected values of the smaller side.

    Example:
        >>> usable_bins(10, 100_000, 30), usable_bins(10, 100_000, 89), usable_bins(10, 500, 500)
        (6, 10, 10)
    """
    return int(max(2, min(bins, min(reference_rows, current_rows) // _MIN_EXPECTED_PER_BIN)))


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of a numeric feature, binned on reference quantiles.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> psi_numeric(rng.normal(size=50_000), rng.normal(size=50_000)) < 0.01
        True
        >>> psi_numeric(rng.normal(size=50_000), rng.normal(1.0, size=50_000)) > 0.2
        True
    """
    edges = quantile_edges(reference, bins)
    return _psi_from_shares(_bin_counts(reference, edges) / len(reference), _bin_counts(current, edges) / len(current))


def psi_categorical(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index over the union of both sides' categories.

    Example:
        >>> ref = pd.Series(["a"] * 50 + ["b"] * 50)
        >>> psi_categorical(ref, ref)
        0.0
        >>> psi_categorical(ref, pd.Series(["a"] * 90 + ["b"] * 10)) > 0.2
        True
    """
    reference_counts, current_counts = _category_counts(reference, current)
    return _psi_from_shares(reference_counts / reference_counts.sum(), current_counts / current_counts.sum())


def _category_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    reference_counts = reference.value_counts(dropna=True)
    current_counts = current.value_counts(dropna=True)
    categories = reference_counts.index.union(current_counts.index)
    return (
        reference_counts.reindex(categories, fill_value=0).to_numpy(dtype=float),
        current_counts.reindex(categories, fill_value=0).to_numpy(dtype=float),
    )


def homogeneity_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray, max_draws: int | None = None) -> float:
    """P-value of the chi-square test that two samples share one distribution over bins.

    Bins whose expected count on the smaller side is under five are pooled
    into one, and below 500 rows on a side the p-value comes from random
    splits of the pooled counts, so small batches and sparse categories do not
    make the test too liberal. `max_draws` caps those splits (default 50,000),
    for a caller that needs no p-value finer than 1 / max_draws.

    Example:
        >>> homogeneity_pvalue(np.array([50, 50]), np.array([50, 50]))
        1.0
        >>> homogeneity_pvalue(np.array([500, 500]), np.array([900, 100])) < 1e-6
        True
        >>> homogeneity_pvalue(np.array([50, 50]), np.array([90, 10])) < 0.001
        True
    """
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    pooled_share = table.sum(axis=0) / table.sum()
    sparse = pooled_share * table.sum(axis=1).min() < _MIN_EXPECTED_PER_BIN
    if sparse.any():
        table = np.column_stack([table[:, ~sparse], table[:, sparse].sum(axis=1)]) if (~sparse).any() else table[:, sparse].sum(axis=1, keepdims=True)
    if table.shape[1] < 2:
        return 1.0
    if table.sum(axis=1).min() < _PERMUTATION_BELOW:
        return _permutation_pvalue(table, float(_chi_square(table[np.newaxis])[0]), max_draws or _PERMUTATION_DRAWS)
    _, pvalue, _, _ = stats.chi2_contingency(table, correction=False)
    return float(pvalue)


def _chi_square(tables: np.ndarray) -> np.ndarray:
    """Pearson's statistic of many 2 x B tables at once (shape: draws x 2 x B)."""
    expected = tables.sum(axis=1, keepdims=True) * tables.sum(axis=2, keepdims=True) / tables.sum(axis=(1, 2), keepdims=True)
    return ((tables - expected) ** 2 / expected).sum(axis=(1, 2))


def _permutation_pvalue(table: np.ndarray, statistic: float, max_draws: int = _PERMUTATION_DRAWS) -> float:
    """The chi-square statistic's p-value over random splits of the pooled counts.

    Exact in distribution (up to the draws), where the chi-square curve is
    too liberal: few rows per side, a few sparse categories. Sequential
    (Besag and Clifford): draws stop once 20 splits reach the statistic, so a
    same-population pair costs a few hundred draws, and a real difference gets
    up to 50,000, enough to pass a Holm-corrected level over a hundred
    features. Seeded, so the same batch always gets the same verdict.
    """
    pooled = table.sum(axis=0).astype(np.int64)
    first = int(table[0].sum())
    rng = np.random.default_rng(0)
    drawn = exceed = 0
    while drawn < max_draws:
        size = min(_PERMUTATION_CHUNK if drawn else _PERMUTATION_FIRST, max_draws - drawn)
        draws = rng.multivariate_hypergeometric(pooled, first, size=size)
        tables = np.stack([draws, pooled - draws], axis=1).astype(float)
        reached = np.flatnonzero(_chi_square(tables) >= statistic * (1 - 1e-9))
        if exceed + len(reached) >= _PERMUTATION_HITS:
            # Stopped at the h-th hit on draw l: the p-value is h / l.
            return float(_PERMUTATION_HITS / (drawn + reached[_PERMUTATION_HITS - exceed - 1] + 1))
        exceed += len(reached)
        drawn += size
    return float((1 + exceed) / (1 + drawn))


def binned_homogeneity_pvalue(reference: np.ndarray, current: np.ndarray, bins: int, max_draws: int | None = None) -> float:
    """The chi-square test of one distribution, on bins at the quantiles of both sides pooled.

    Pooled bins treat the two sides alike: bins cut at the reference's own
    quantiles leave its counts fixed and the current side's more variable
    than the test assumes, which flags 30-row batches three times too often.
    """
    edges = quantile_edges(np.concatenate([reference, current]), bins)
    return homogeneity_pvalue(_bin_counts(reference, edges), _bin_counts(current, edges), max_draws)


def deterministic_sample(values: np.ndarray, size: int | None, seed: int = 0) -> np.ndarray:
    """At most `size` values, chosen with a fixed seed so reruns agree."""
    if size is None or len(values) <= size:
        return values
    rng = np.random.default_rng(seed)
    return values[rng.choice(len(values), size=size, replace=False)]


def ks_two_sample(reference: np.ndarray, current: np.ndarray, sample_size: int | None) -> tuple[float, float]:
    """KS distance and p-value (scipy) on deterministic samples of both sides (None: all rows).

    Small samples get the exact p-value: the asymptotic one is off below a few
    hundred rows.
    """
    reference = deterministic_sample(reference, sample_size, seed=1)
    current = deterministic_sample(current, sample_size, seed=2)
    method = "exact" if max(len(reference), len(current)) <= _EXACT_KS_LIMIT else "asymp"
    with warnings.catch_warnings():
        # With ties the exact algorithm may give up and fall back to the asymptotic one, which is all we need.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ks_2samp(reference, current, method=method)
    return float(result.statistic), float(result.pvalue)


def feature_pvalue(tests: list[tuple[float | None, bool]]) -> float:
    """One p-value for a feature from its tests' (p-value, large enough) pairs: Bonferroni over
    the tests, counting only those whose difference is large enough to matter.

    Example:
        >>> feature_pvalue([(0.004, True), (0.3, True)]), feature_pvalue([(0.004, False), (0.3, True)])
        (0.008, 0.6)
    """
    large = [pvalue for pvalue, big in tests if big and pvalue is not None]
    return min(1.0, len(tests) * min(large)) if large else 1.0


def holm_adjusted(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: a feature is flagged when
    its adjusted p-value is under the level, and the chance that any of a same-population
    batch's features is flagged stays under the level, whatever their dependence.

    Example:
        >>> [round(p, 6) for p in holm_adjusted([0.01, 0.04, 0.03, 0.5])]
        [0.04, 0.09, 0.09, 0.5]
    """
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, position in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[position]))
        adjusted[position] = running
    return adjusted.tolist()

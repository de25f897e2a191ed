"""Drift of live features against a reference: PSI, a chi-square test on the
same bins, and the two-sample KS test.

Plain functions over arrays and Series, shared by validation and diagnostics.

A feature counts as drifted only when a test says the two samples differ at
the contract's significance level *and* the difference is large enough to
matter (PSI above its threshold, or the KS distance above its threshold). PSI
alone cannot decide on small batches: under no drift it behaves like
(1/n + 1/m) times a chi-square with B - 1 degrees of freedom, so at 90 rows per
side a same-population pair passes 0.2 about half the time. The significance
level is split between the two tests (Bonferroni): a feature's p-value is
twice the smaller p-value of a test whose difference is large enough.

A batch is judged on all its features at once: `frame_drift` applies Holm's
step-down correction to the features' p-values, so a batch from the
reference's population has any feature flagged at most at the significance
level, however many features it has (64 pixel columns judged each at 1% would
flag every second batch). Holm holds under any dependence between features.

Bins are the reference's quantiles, at most as many as keep five expected
values of the smaller side in each bin, so the chi-square approximation holds
on 30-row batches. Discrete columns (counts, pixel intensities) tie on many
values; bins are cut between distinct values, and a tie-laden KS test is only
conservative. The KS test sorts, so it runs on a deterministic sample of at
most `sample_size` rows per side: at 100,000 rows the standard error of the
KS distance is about 0.003, far below any threshold worth alerting on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from prefect_crisis.core.parallel import parallel_map

DriftKind = Literal["numeric", "categorical"]  # how a column's drift is measured
# Floor for an empty bin's share, so PSI stays finite (a common convention).
_PSI_EPSILON = 1e-4
# Expected values of the smaller side per bin that the chi-square approximation needs.
_MIN_EXPECTED_PER_BIN = 5
# Fewer rows than this on either side: too few to test, the feature is not judged.
MIN_DRIFT_ROWS = 30
# Below this many rows on a side, the chi-square test's p-value comes from
# random splits of the pooled counts rather than the chi-square curve.
_PERMUTATION_BELOW = 500
# Sequential draws: stop after this many splits reach the statistic, or at the cap.
_PERMUTATION_HITS = 20
_PERMUTATION_FIRST = 400
_PERMUTATION_CHUNK = 10_000
_PERMUTATION_DRAWS = 50_000
# Columns of fewer rows are not worth a thread each.
_PARALLEL_ROWS = 20_000
# Above this many rows per side the KS p-value's asymptotic form is exact enough.
_EXACT_KS_LIMIT = 2_000


@dataclass(frozen=True)
class FeatureDrift:
    """Drift figures of one feature.

    `psi` and `ks_statistic` say how large the difference is; `pvalue` is the
    chi-square test's on the PSI bins (categories for a categorical feature),
    `ks_pvalue` the KS test's. `feature_pvalue` combines the tests whose
    difference is large enough (1.0: none is); `adjusted_pvalue` is it after
    Holm's correction over the batch's features (the feature alone: the same).
    `drifted` is `adjusted_pvalue` under the significance level; `bins` is how
    many bins PSI and the chi-square test used.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    ks_statistic: float | None
    ks_pvalue: float | None
    drifted: bool
    reference_rows: int
    current_rows: int
    pvalue: float | None = None
    bins: int = 0
    feature_pvalue: float | None = None
    adjusted_pvalue: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds of the drift tests (a DataContract carries the same fields).

    `significance` is the chance that a batch from the reference's population
    has any feature flagged (Holm over its features; one feature alone: the
    chance it is flagged); PSI's chi-square test and the KS test of a numeric
    feature share it (Bonferroni).
    """

    bins: int = 10
    psi_threshold: float = 0.2
    significance: float = 0.01
    ks_statistic_threshold: float = 0.1
    sample_size: int | None = 100_000

    @classmethod
    def from_contract(cls, contract) -> DriftSettings:
        return cls(
            contract.psi_bins,
            contract.psi_threshold,
            contract.drift_significance,
            contract.ks_statistic_threshold,
            contract.drift_sample_size,
        )

    @property
    def per_test_level(self) -> float:
        return self.significance / 2


def _untested(feature: str, kind: Literal["numeric", "categorical"], reference_rows: int, current_rows: int) -> FeatureDrift:
    return FeatureDrift(feature, kind, 0.0, None, None, False, reference_rows, current_rows)


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


def numeric_drift(feature: str, reference: np.ndarray, current: np.ndarray, settings: DriftSettings) -> FeatureDrift:
    """Drift of one numeric feature; NaN and inf are left out of both sides.

    Example:
        >>> rng = np.random.default_rng(7)
        >>> numeric_drift("x", rng.normal(size=90), rng.normal(size=90), DriftSettings()).drifted
        False
        >>> numeric_drift("x", rng.normal(size=500), rng.normal(0.5, size=500), DriftSettings()).drifted
        True
    """
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if min(len(reference), len(current)) < MIN_DRIFT_ROWS:
        return _untested(feature, "numeric", len(reference), len(current))
    bins = usable_bins(settings.bins, len(reference), len(current))
    edges = quantile_edges(reference, bins)
    psi = _psi_from_shares(_bin_counts(reference, edges) / len(reference), _bin_counts(current, edges) / len(current))
    reference_sample = deterministic_sample(reference, settings.sample_size, seed=1)
    current_sample = deterministic_sample(current, settings.sample_size, seed=2)
    ks_statistic, ks_pvalue = ks_two_sample(reference_sample, current_sample, None)
    ks_decides = ks_statistic > settings.ks_statistic_threshold and ks_pvalue * _PERMUTATION_DRAWS < 1
    # A KS p-value below the finest the splits can give decides the feature alone: a few splits do.
    pvalue = binned_homogeneity_pvalue(reference_sample, current_sample, bins, _PERMUTATION_FIRST if ks_decides else None)
    combined = feature_pvalue([(pvalue, psi > settings.psi_threshold), (ks_pvalue, ks_statistic > settings.ks_statistic_threshold)])
    return FeatureDrift(
        feature,
        "numeric",
        psi,
        ks_statistic,
        ks_pvalue,
        combined < settings.significance,
        len(reference),
        len(current),
        pvalue,
        len(edges) + 1,
        combined,
        combined,
    )


def categorical_drift(feature: str, reference: pd.Series, current: pd.Series, settings: DriftSettings) -> FeatureDrift:
    """Drift of one categorical feature: PSI over the categories of both sides, and
    the chi-square test at the full significance level (it is the only test)."""
    reference = reference.dropna()
    current = current.dropna()
    if min(len(reference), len(current)) < MIN_DRIFT_ROWS:
        return _untested(feature, "categorical", len(reference), len(current))
    reference_counts, current_counts = _category_counts(reference.astype(str), current.astype(str))
    psi = _psi_from_shares(reference_counts / reference_counts.sum(), current_counts / current_counts.sum())
    pvalue = homogeneity_pvalue(reference_counts, current_counts)
    combined = feature_pvalue([(pvalue, psi > settings.psi_threshold)])
    return FeatureDrift(
        feature,
        "categorical",
        psi,
        None,
        None,
        combined < settings.significance,
        len(reference),
        len(current),
        pvalue,
        len(reference_counts),
        combined,
        combined,
    )


def holm_drift(figures: list[FeatureDrift], settings: DriftSettings) -> list[FeatureDrift]:
    """The features judged together: each tested feature's `adjusted_pvalue` and `drifted` after Holm's correction."""
    tested = [index for index, feature in enumerate(figures) if feature.feature_pvalue is not None]
    adjusted = holm_adjusted([p for feature in figures if (p := feature.feature_pvalue) is not None])  # those of `tested`
    judged = list(figures)
    for index, pvalue in zip(tested, adjusted, strict=True):
        judged[index] = replace(figures[index], adjusted_pvalue=pvalue, drifted=pvalue < settings.significance)
    return judged


def _as_float(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def frame_drift(
    reference: pd.DataFrame,
    current: Mapping[str, Callable[[], np.ndarray | pd.Series]],
    kinds: Mapping[str, DriftKind],
    settings: DriftSettings,
) -> dict[str, FeatureDrift]:
    """Drift of every feature in `kinds`, the features on a few threads, judged together (Holm).

    `current` maps a feature to a function returning its live values, so a
    caller holding columns in another form (validation's coerced arrays) does
    not build a frame for this.
    """
    reference = reference.iloc[deterministic_sample(np.arange(len(reference)), settings.sample_size, seed=3)]

    def one(feature: str) -> FeatureDrift:
        if kinds[feature] == "numeric":
            return numeric_drift(feature, _as_float(reference[feature]), _as_float(current[feature]()), settings)
        return categorical_drift(feature, reference[feature], pd.Series(current[feature]()), settings)

    large = len(reference) >= _PARALLEL_ROWS
    judged = holm_drift(parallel_map(one, list(kinds), parallel=large), settings)
    return {figures.feature: figures for figures in judged}


def dataframe_drift(reference: pd.DataFrame, current: pd.DataFrame, settings: DriftSettings | None = None) -> dict[str, FeatureDrift]:
    """Drift of every column the two frames share: numeric or categorical by dtype."""
    shared = [name for name in current.columns if name in reference.columns]
    kinds: dict[str, DriftKind] = {
        name: "numeric" if pd.api.types.is_numeric_dtype(current[name]) and not pd.api.types.is_bool_dtype(current[name]) else "categorical"
        for name in shared
    }
    columns: dict[str, Callable[[], pd.Series]] = {name: functools.partial(current.__getitem__, name) for name in shared}
    return frame_drift(reference, columns, kinds, settings or DriftSettings())

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

The statistics (PSI, the chi-square and KS tests, Bonferroni and Holm) are in `drift_statistics`; this module
judges features and frames with them. Every name still imports from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from prefect_crisis.core.parallel import parallel_map
from prefect_crisis.tasks.validation.drift_statistics import (  # noqa: F401 (the private names still import from here)
    _EXACT_KS_LIMIT,
    _MIN_EXPECTED_PER_BIN,
    _PERMUTATION_BELOW,
    _PERMUTATION_CHUNK,
    _PERMUTATION_DRAWS,
    _PERMUTATION_FIRST,
    _PERMUTATION_HITS,
    _PSI_EPSILON,
    _bin_counts,
    _category_counts,
    _chi_square,
    _permutation_pvalue,
    _psi_from_shares,
    binned_homogeneity_pvalue,
    deterministic_sample,
    feature_pvalue,
    holm_adjusted,
    homogeneity_pvalue,
    ks_two_sample,
    psi_categorical,
    psi_numeric,
    quantile_edges,
    usable_bins,
)

__all__ = [
    "MIN_DRIFT_ROWS",
    "DriftKind",
    "DriftSettings",
    "FeatureDrift",
    "binned_homogeneity_pvalue",
    "categorical_drift",
    "dataframe_drift",
    "deterministic_sample",
    "feature_pvalue",
    "frame_drift",
    "holm_adjusted",
    "holm_drift",
    "homogeneity_pvalue",
    "ks_two_sample",
    "numeric_drift",
    "psi_categorical",
    "psi_numeric",
    "quantile_edges",
    "usable_bins",
]

# tests/unit/test_docstrings.py runs this module's examples; those of drift_statistics run with them.
__test__ = {
    "split_out": """
>>> import doctest
>>> from prefect_crisis.tasks.validation import drift_statistics
>>> doctest.testmod(drift_statistics, verbose=False, optionflags=doctest.ELLIPSIS).failed
0
"""
}

DriftKind = Literal["numeric", "categorical"]  # how a column's drift is measured
# Fewer rows than this on either side: too few to test, the feature is not judged.
MIN_DRIFT_ROWS = 30
# Columns of fewer rows are not worth a thread each.
_PARALLEL_ROWS = 20_000


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

"""Drift of live features against a reference: PSI and the two-sample KS test.

Plain functions over arrays and Series, shared by validation and diagnostics.
PSI uses every row (binning is cheap); the KS test sorts, so it runs on a
deterministic sample of at most `sample_size` rows per side: at 100,000 rows
the standard error of the KS distance is about 0.003, far below any threshold
worth alerting on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

_T = TypeVar("_T")
_R = TypeVar("_R")

# Floor for an empty bin's share, so PSI stays finite (a common convention).
_PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """Drift figures of one feature."""

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    ks_statistic: float | None
    ks_pvalue: float | None
    drifted: bool
    reference_rows: int
    current_rows: int

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


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # A few full-array comparisons beat a binary search per value when the
    # edges are few (10 bins: about 3x faster than np.searchsorted here).
    below = np.array([np.count_nonzero(values < edge) for edge in edges], dtype=np.int64)
    counts = np.diff(np.concatenate(([0], below, [len(values)])))
    return counts / len(values)


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
    return _psi_from_shares(_bin_shares(reference, edges), _bin_shares(current, edges))


def psi_categorical(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index over the union of both sides' categories.

    Example:
        >>> ref = pd.Series(["a"] * 50 + ["b"] * 50)
        >>> psi_categorical(ref, ref)
        0.0
        >>> psi_categorical(ref, pd.Series(["a"] * 90 + ["b"] * 10)) > 0.2
        True
    """
    ref_share = reference.value_counts(normalize=True, dropna=True)
    cur_share = current.value_counts(normalize=True, dropna=True)
    categories = ref_share.index.union(cur_share.index)
    return _psi_from_shares(
        ref_share.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
        cur_share.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
    )


def deterministic_sample(values: np.ndarray, size: int | None, seed: int = 0) -> np.ndarray:
    """At most `size` values, chosen with a fixed seed so reruns agree."""
    if size is None or len(values) <= size:
        return values
    rng = np.random.default_rng(seed)
    return values[rng.choice(len(values), size=size, replace=False)]


def ks_two_sample(reference: np.ndarray, current: np.ndarray, sample_size: int | None) -> tuple[float, float]:
    """KS distance and p-value (scipy) on deterministic samples of both sides."""
    result = stats.ks_2samp(
        deterministic_sample(reference, sample_size, seed=1),
        deterministic_sample(current, sample_size, seed=2),
        method="asymp",
    )
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds of the drift tests (a DataContract carries the same fields)."""

    bins: int = 10
    psi_threshold: float = 0.2
    ks_pvalue_threshold: float = 0.01
    ks_statistic_threshold: float = 0.1
    sample_size: int | None = 100_000

    @classmethod
    def from_contract(cls, contract) -> "DriftSettings":
        return cls(
            contract.psi_bins,
            contract.psi_threshold,
            contract.ks_pvalue_threshold,
            contract.ks_statistic_threshold,
            contract.drift_sample_size,
        )


def numeric_drift(feature: str, reference: np.ndarray, current: np.ndarray, settings: DriftSettings) -> FeatureDrift:
    """Drift of one numeric feature; NaN and inf are left out of both sides."""
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if len(reference) == 0 or len(current) == 0:
        return FeatureDrift(feature, "numeric", 0.0, None, None, False, len(reference), len(current))
    psi = psi_numeric(reference, current, settings.bins)
    ks_statistic, ks_pvalue = ks_two_sample(reference, current, settings.sample_size)
    drifted = psi > settings.psi_threshold or (
        ks_pvalue < settings.ks_pvalue_threshold and ks_statistic > settings.ks_statistic_threshold
    )
    return FeatureDrift(feature, "numeric", psi, ks_statistic, ks_pvalue, bool(drifted), len(reference), len(current))


def categorical_drift(feature: str, reference: pd.Series, current: pd.Series, settings: DriftSettings) -> FeatureDrift:
    """Drift of one categorical feature by PSI over the categories of both sides."""
    reference = reference.dropna()
    current = current.dropna()
    if len(reference) == 0 or len(current) == 0:
        return FeatureDrift(feature, "categorical", 0.0, None, None, False, len(reference), len(current))
    psi = psi_categorical(reference.astype(str), current.astype(str))
    return FeatureDrift(feature, "categorical", psi, None, None, psi > settings.psi_threshold, len(reference), len(current))


def _as_float(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def frame_drift(
    reference: pd.DataFrame,
    current: Mapping[str, Callable[[], np.ndarray | pd.Series]],
    kinds: Mapping[str, Literal["numeric", "categorical"]],
    settings: DriftSettings,
) -> dict[str, FeatureDrift]:
    """Drift of every feature in `kinds`, the features on a few threads.

    `current` maps a feature to a function returning its live values, so a
    caller holding columns in another form (validation's coerced arrays) does
    not build a frame for this.
    """
    reference = reference.iloc[deterministic_sample(np.arange(len(reference)), settings.sample_size, seed=3)]

    def one(feature: str) -> FeatureDrift:
        if kinds[feature] == "numeric":
            return numeric_drift(feature, _as_float(reference[feature]), _as_float(current[feature]()), settings)
        return categorical_drift(feature, reference[feature], pd.Series(current[feature]()), settings)

    return {figures.feature: figures for figures in parallel_map(one, list(kinds))}


def dataframe_drift(reference: pd.DataFrame, current: pd.DataFrame, settings: DriftSettings | None = None) -> dict[str, FeatureDrift]:
    """Drift of every column the two frames share: numeric or categorical by dtype."""
    shared = [name for name in current.columns if name in reference.columns]
    kinds = {name: "numeric" if pd.api.types.is_numeric_dtype(current[name]) and not pd.api.types.is_bool_dtype(current[name]) else "categorical" for name in shared}
    return frame_drift(reference, {name: (lambda name=name: current[name]) for name in shared}, kinds, settings or DriftSettings())


def parallel_map(function: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """Map over columns on a few threads: numpy releases the GIL in the
    partitions, comparisons and sorts that dominate, so columns overlap."""
    items = list(items)
    workers = min(len(items), os.cpu_count() or 1, 8)
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crisis-columns") as pool:
        return list(pool.map(function, items))

"""Outlier fences per numeric column, and the rows outside them.

An outlier is a value the contract's range allows but the column's own
population makes implausible. The check has a budget: on clean data from the
reference's population it may flag `outlier_rate` of the rows in total
(1% by default), split evenly over the columns it checks and the two sides of
each column. Thirty columns each judged at 1% would flag a quarter of the rows.

Fences come from the reference when there is one (the contract stores them,
see `DataContract.from_reference`). They are extrapolated in quantile space
from two order statistics of the reference's tail, so they follow the column's
own shape (skewed, heavy-tailed, discrete):

    base  = the k-th most extreme value, k = max(1, rate * (n + 1))
    inner = the 10k-th most extreme value
    fence = base + (base - inner)

A new value beyond the k-th most extreme of n has probability k / (n + 1)
whatever the distribution; the extension beyond `base` absorbs the noise of
estimating an extreme quantile from a finite reference.

Without a reference the batch is all there is, and its own extremes cannot
set the fences: a share of extreme values would hide itself (masking, as it
does for mean/std). The fences then come from the quartiles, which a quarter
of the rows cannot move, extrapolated as an exponential tail would be, twice
over:

    upper = Q3 + 2 * (Q3 - median) * log2(0.25 / rate)

(a side squeezed to nothing by ties borrows half the interquartile range).

on the log scale for a column with no negative values (amounts, counts,
durations: a log-normal or Pareto tail turns light there). That is exact for
an exponential tail at half the rate and generous for a normal one; a column
with heavy tails on both sides needs a reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# How far apart the two tail order statistics of a reference fence are.
_INNER_FACTOR = 10
# The batch-only fences' safety factor over an exponential tail.
_BATCH_SAFETY = 2.0


@dataclass(frozen=True)
class Fences:
    """Values below `low` or above `high` are outliers (either may be None: no fence on that side)."""

    low: float | None
    high: float | None

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Mask of finite values beyond a fence."""
        mask = np.zeros(len(values), dtype=bool)
        with np.errstate(invalid="ignore"):
            if self.low is not None:
                mask |= values < self.low
            if self.high is not None:
                mask |= values > self.high
        return mask & np.isfinite(values)


def rate_per_side(total_rate: float, columns: int) -> float:
    """The false-flag budget of one side of one column.

    Example:
        >>> round(rate_per_side(0.01, 30), 6)
        0.000167
    """
    return total_rate / (2 * max(1, columns))


def reference_fences(reference: np.ndarray, rate: float) -> Fences | None:
    """Fences that a value from the reference's population crosses with probability about `rate` per side, at most.

    Returns None when the reference has fewer than 20 finite values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fences = reference_fences(rng.lognormal(size=5_000), rate=0.0005)
        >>> float(np.mean(fences.outside(rng.lognormal(size=200_000)))) < 0.001
        True
    """
    values = reference[np.isfinite(reference)]
    n = len(values)
    if n < 20:
        return None
    k = max(1, int(rate * (n + 1)))
    inner_rank = min(_INNER_FACTOR * k, n // 2)
    # Four order statistics need a partition, not a sort (linear on a million rows).
    positions = [k - 1, inner_rank - 1, n - inner_rank, n - k]
    low_base, low_inner, high_inner, high_base = np.partition(values, positions)[positions]
    return Fences(
        low=float(low_base - (low_inner - low_base)),
        high=float(high_base + (high_base - high_inner)),
    )


def batch_fences(values: np.ndarray, rate: float, min_rows: int) -> Fences | None:
    """Fences from the batch itself, set by its quartiles so that extremes cannot mask themselves.

    Returns None when fewer than `min_rows` values are finite.

    Example:
        >>> values = np.r_[np.random.default_rng(1).normal(size=950), np.full(50, 1e6)]
        >>> int(batch_fences(values, rate=0.0005, min_rows=20).outside(values).sum())
        50
    """
    finite = values[np.isfinite(values)]
    if len(finite) < max(min_rows, 4):
        return None
    if finite.min() >= 0:
        # Amounts, counts and durations are skewed to the right, often log-normally:
        # their fences are set on the log scale, where such a tail is light.
        fences = _quartile_fences(np.log1p(finite), rate)
        return Fences(
            low=float(np.expm1(fences.low)) if fences.low is not None else None,
            high=float(np.expm1(fences.high)) if fences.high is not None else None,
        )
    return _quartile_fences(finite, rate)


def _quartile_fences(finite: np.ndarray, rate: float) -> Fences:
    q1, median, q3 = np.quantile(finite, [0.25, 0.5, 0.75])
    reach = _BATCH_SAFETY * math.log2(0.25 / rate)
    # A side squeezed by ties (a discrete column) borrows half the IQR; a
    # column whose quartiles are all equal has nothing to scale by: no fence.
    half_iqr = (q3 - q1) / 2
    low_spread, high_spread = max(median - q1, half_iqr), max(q3 - median, half_iqr)
    return Fences(
        low=float(q1 - low_spread * reach) if low_spread > 0 else None,
        high=float(q3 + high_spread * reach) if high_spread > 0 else None,
    )

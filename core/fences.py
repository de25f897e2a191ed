"""Tolerance bands per numeric column, and the rows outside them.

An outlier is a value the contract's hard range allows but the column's own
population makes implausible. The check has a budget: on clean data from the
reference's population it may flag `outlier_rate` of the rows in total
(1% by default), split evenly over the columns it checks and the two sides of
each column. Thirty columns each judged at 1% would flag a quarter of the rows.

Bands come from the reference when there is one (the contract stores them,
see `DataContract.from_reference`). A reference of a few hundred rows cannot
place a 1-in-60,000 quantile, so each side extrapolates the reference's tail
in quantile space, as an exponential tail would run:

    base    = the k-th most extreme value, k = max(rate * (n + 1), 5)
    inner   = the 10k-th most extreme value (at most the quartile)
    spacing = (base - inner) / ln(10k / k)      # value per e-fold of tail probability
    band    = base + spacing * (ln(k / (n + 1) / rate) + ln(10) * (1 + 1 / sqrt(k)))

(the spacing at least the one from the most extreme value to `inner`), that
is: from the k-th extreme on to the budget's rate, and one decade of tail
probability further, widened more when k is small, for the noise of a tail
estimated from few rows and for tails heavier than exponential. The five-row
floor keeps the base out of the single most extreme value. A side squeezed to
nothing by ties (a discrete or mostly-zero column) takes the reference's
extreme as base, then the median, then the other extreme as inner. A
right-skewed column with no negative values (amounts, areas, counts of
events) is banded on the log scale when that makes it more symmetric: a
log-normal or Pareto tail turns light there. A constant reference has no
spread: its band is its value +- `CONSTANT_REACH` times its magnitude (at
least 1), so a far value is still caught and a near one is left to a finding.
When the budget is finer than the reference can resolve, the band never cuts
inside the reference's own extremes.

Without a reference the batch is all there is, and its own extremes cannot
set the fences: a share of extreme values would hide itself (masking, as it
does for mean/std). The fences then come from the quartiles, which a quarter
of the rows cannot move, extrapolated as an exponential tail would be, twice
over:

    upper = Q3 + 2 * (Q3 - median) * log2(0.25 / rate)

(a side squeezed to nothing by ties borrows half the interquartile range),
on the log scale for a column with no negative values. That is exact for an
exponential tail at half the rate and generous for a normal one; a column
with heavy tails on both sides needs a reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# How far apart the two tail order statistics of a reference band are (in rows).
_INNER_FACTOR = 10
# The base of a reference band is at least the 5th most extreme value: the most
# extreme one alone says more about one row than about the tail.
_MIN_TAIL_ROWS = 5
# Decades of tail probability a reference band reaches beyond its budget.
_EXTRA_DECADES = 1.0
# A constant reference column's band, in multiples of its magnitude (at least 1).
CONSTANT_REACH = 100.0
# The batch-only fences' safety factor over an exponential tail.
_BATCH_SAFETY = 2.0
# Fewer finite reference values than this: no band.
MIN_BAND_VALUES = 20


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


def _quantile_skew(values: np.ndarray) -> float:
    """Kelly's skewness from the 10th, 50th and 90th percentiles (0 when they coincide)."""
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    return float((q90 + q10 - 2 * q50) / (q90 - q10)) if q90 > q10 else 0.0


def _tail_band(ascending: np.ndarray, rate: float) -> float:
    """The band of the upper tail of sorted values (see the module's formula)."""
    n = len(ascending)
    k = max(rate * (n + 1), float(_MIN_TAIL_ROWS))
    inner_k = min(_INNER_FACTOR * k, (n + 1) / 4)

    def extreme(rank: float) -> float:  # the rank-th largest value, rank counted from 1
        return float(ascending[max(0, min(n - 1, n - round(rank)))])

    base, inner = extreme(k), extreme(inner_k)
    if base <= inner:  # ties: the tail is a few repeated values
        k, base = 1.0, float(ascending[-1])
    if base <= inner:
        inner_k, inner = (n + 1) / 2, float(np.median(ascending))
    if base <= inner:  # more than half the values sit at the extreme: a ceiling
        inner_k, inner = float(n), float(ascending[0])
    spacing = (base - inner) / math.log(inner_k / k)
    if k > 1:  # a sparse tail (a few scattered extremes) is wider than its k-th value says
        spacing = max(spacing, (float(ascending[-1]) - inner) / math.log(inner_k))
    reach = math.log(k / (n + 1) / rate) + _EXTRA_DECADES * math.log(10) * (1 + 1 / math.sqrt(k))
    band = base + spacing * max(reach, 0.0)
    if rate < 1 / (n + 1):
        band = max(band, float(ascending[-1]))
    return band


def reference_fences(reference: np.ndarray, rate: float) -> Fences | None:
    """Tolerance bands that a value from the reference's population crosses with probability about `rate` per side, at most.

    Returns None when the reference has fewer than 20 finite values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fences = reference_fences(rng.lognormal(size=5_000), rate=0.0005)
        >>> float(np.mean(fences.outside(rng.lognormal(size=200_000)))) < 0.001
        True
        >>> reference_fences(np.zeros(100), rate=0.0005)
        Fences(low=-100.0, high=100.0)
    """
    values = np.sort(reference[np.isfinite(reference)].astype(float))
    if len(values) < MIN_BAND_VALUES:
        return None
    if values[0] == values[-1]:
        reach = CONSTANT_REACH * max(abs(float(values[0])), 1.0)
        return Fences(low=float(values[0]) - reach, high=float(values[0]) + reach)
    if values[0] >= 0 and values[-1] > 0:
        offset = float(values[values > 0][0])  # the smallest positive value: zeros stay finite, units cancel
        logged = np.log(values + offset)
        skew = _quantile_skew(values)
        if skew > 0 and abs(_quantile_skew(logged)) < skew:
            low = math.exp(-_tail_band(-logged[::-1], rate)) - offset
            high = math.exp(min(_tail_band(logged, rate), 700.0)) - offset
            return Fences(low=low if low > 0 else None, high=high)
    return Fences(low=-_tail_band(-values[::-1], rate), high=_tail_band(values, rate))


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

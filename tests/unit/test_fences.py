"""The outlier fences against the formulas of `core.fences`' docstring, on inputs small enough to work out by hand.

Each expected band is the docstring's formula with the order statistics of the input written out, so a constant,
a rank or a comparison changed in the code moves the band away from it. Pure functions, called directly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefect_crisis.core.fences import CONSTANT_REACH, Fences, _quantile_skew, _tail_band, batch_fences, rate_per_side, reference_fences

RATE = 0.01
ONE_TO_HUNDRED = np.arange(1.0, 101.0)  # n = 100: the k-th largest value is 101 - k


def reach(k: float, n: int = 100, rate: float = RATE) -> float:
    """ln(k / (n + 1) / rate) + ln(10) * (1 + 1 / sqrt(k)): from the k-th extreme to the budget, and a decade on."""
    return math.log(k / (n + 1) / rate) + math.log(10) * (1 + 1 / math.sqrt(k))


# -- the budget --------------------------------------------------------------------------------


def test_the_budget_is_split_over_the_columns_and_their_two_sides():
    assert rate_per_side(0.01, 30) == pytest.approx(0.01 / 60)
    assert rate_per_side(0.01, 1) == pytest.approx(0.005)
    assert rate_per_side(0.01, 0) == pytest.approx(0.005)  # no column checked yet: one column's share


def test_kellys_skewness_reads_the_10th_50th_and_90th_percentiles():
    # eleven values: the percentiles are the 2nd, 6th and 10th: 1, 5 and 17, so (17 + 1 - 10) / 16
    assert _quantile_skew(np.array([0, 1, 2, 3, 4, 5, 8, 11, 14, 17, 20.0])) == pytest.approx(0.5)
    assert _quantile_skew(ONE_TO_HUNDRED) == pytest.approx(0.0)
    assert _quantile_skew(np.r_[np.zeros(95), np.ones(5)]) == 0.0  # the 10th and 90th coincide: no spread to scale by


# -- one tail of a reference -------------------------------------------------------------------


def test_a_tail_band_extrapolates_from_the_fifth_to_the_twenty_fifth_largest_value():
    """k = max(0.01 * 101, 5) = 5 (the 5th largest, 96); inner k = min(10 * 5, 101 / 4) = 25.25 (the 25th, 76)."""
    expected = 96 + (96 - 76) / math.log(25.25 / 5) * reach(5)
    assert _tail_band(ONE_TO_HUNDRED, RATE) == pytest.approx(expected, rel=1e-12)


def test_a_sparse_tail_is_as_wide_as_its_single_most_extreme_value_says():
    """One value of 1000 above the rest: the spacing from the maximum to the 25th largest (924 over ln 25.25) wins."""
    sparse = ONE_TO_HUNDRED.copy()
    sparse[-1] = 1000.0
    assert _tail_band(sparse, RATE) == pytest.approx(96 + (1000 - 76) / math.log(25.25) * reach(5), rel=1e-12)


def test_a_tail_of_ties_takes_the_maximum_as_its_base():
    """The 5th and the 25th largest are both 80: the base is the maximum (200) with k = 1."""
    ties = np.r_[np.arange(74.0), np.full(25, 80.0), [200.0]]
    assert _tail_band(ties, RATE) == pytest.approx(200 + (200 - 80) / math.log(25.25) * reach(1), rel=1e-12)


def test_a_tail_of_ties_up_to_the_maximum_reaches_in_from_the_median():
    """The top quarter all 80: the inner value is the median (49.5), half the rows in."""
    ties = np.r_[np.arange(75.0), np.full(25, 80.0)]
    assert _tail_band(ties, RATE) == pytest.approx(80 + (80 - 49.5) / math.log(50.5) * reach(1), rel=1e-12)


def test_a_ceiling_held_by_most_rows_reaches_in_from_the_other_extreme():
    """Sixty of a hundred rows at 80, the median too: the inner value is the minimum (0), all n rows in."""
    ceiling = np.r_[np.arange(40.0), np.full(60, 80.0)]
    assert _tail_band(ceiling, RATE) == pytest.approx(80 + 80 / math.log(100) * reach(1), rel=1e-12)


def test_a_finer_budget_reaches_further():
    assert _tail_band(ONE_TO_HUNDRED, 0.001) == pytest.approx(96 + 20 / math.log(25.25 / 5) * reach(5, rate=0.001), rel=1e-12)
    assert _tail_band(ONE_TO_HUNDRED, 0.001) > _tail_band(ONE_TO_HUNDRED, RATE) > 100


# -- reference bands ---------------------------------------------------------------------------


def test_a_symmetric_reference_gets_mirrored_bands_on_its_own_scale():
    """1..100 has no skew: banded as it is, each side the tail formula (the low side mirrored around 101)."""
    high = 96 + 20 / math.log(25.25 / 5) * reach(5)
    fences = reference_fences(ONE_TO_HUNDRED, RATE)
    assert fences.high == pytest.approx(high, rel=1e-12)
    assert fences.low == pytest.approx(101 - high, rel=1e-12)
    centred = reference_fences(ONE_TO_HUNDRED - 50.5, RATE)
    assert (centred.low, centred.high) == pytest.approx((50.5 - high, high - 50.5), rel=1e-12)


def test_non_finite_reference_values_are_left_out():
    noisy = np.r_[ONE_TO_HUNDRED, np.nan, np.inf, -np.inf]
    assert reference_fences(noisy, RATE) == reference_fences(ONE_TO_HUNDRED, RATE)
    assert reference_fences(np.r_[np.arange(19.0), np.full(5, np.nan)], RATE) is None  # 19 finite values: no band


@pytest.mark.parametrize(("value", "expected"), [(7.0, Fences(-693.0, 707.0)), (-0.5, Fences(-100.5, 99.5)), (0.0, Fences(-100.0, 100.0))])
def test_a_constant_reference_reaches_a_hundred_times_its_magnitude_at_least_one(value, expected):
    assert CONSTANT_REACH == 100.0
    assert reference_fences(np.full(50, value), RATE) == expected


def log_scale(values: np.ndarray, rate: float = RATE) -> Fences:
    """The docstring's log-scale band: ln(x + smallest positive value), tails banded there and brought back."""
    offset = float(values[values > 0].min())
    logged = np.log(np.sort(values) + offset)
    low = math.exp(-_tail_band(-logged[::-1], rate)) - offset
    return Fences(low=low if low > 0 else None, high=math.exp(_tail_band(logged, rate)) - offset)


def linear_scale(values: np.ndarray, rate: float = RATE) -> Fences:
    ordered = np.sort(values)
    return Fences(low=-_tail_band(-ordered[::-1], rate), high=_tail_band(ordered, rate))


def test_a_right_skewed_positive_reference_is_banded_on_the_log_scale():
    """exp(0..5) is skewed right (Kelly 0.76) and about symmetric in logs (0.09): its band comes back from there,
    far wider above than the linear band, and with no low fence (the log band's low end is below zero)."""
    skewed = np.exp(np.linspace(0.0, 5.0, 200))
    fences = reference_fences(skewed, RATE)
    assert fences == log_scale(skewed)
    assert fences.low is None and fences.high == pytest.approx(1055.091, rel=1e-6)
    assert fences != linear_scale(skewed)


def test_a_log_band_keeps_a_low_fence_above_zero():
    """A narrow log-normal column (sigma 0.2 around e^3 = 20): the low end comes back positive and is kept."""
    narrow = np.exp(np.random.default_rng(0).normal(3.0, 0.2, 2_000))
    fences = reference_fences(narrow, RATE)
    assert fences == log_scale(narrow)
    assert fences.low == pytest.approx(9.1328, rel=1e-4) and fences.high == pytest.approx(40.068, rel=1e-4)


def test_zeros_in_a_skewed_reference_are_offset_by_the_smallest_positive_value():
    """The logarithm of 0 + the smallest positive value (1) is finite: the zeros stay in the band's rows."""
    with_zeros = np.r_[np.zeros(10), np.exp(np.linspace(0.0, 5.0, 190))]
    fences = reference_fences(with_zeros, RATE)
    assert fences == log_scale(with_zeros)
    assert math.isfinite(fences.high) and fences.high == pytest.approx(1168.792, rel=1e-6)


def test_a_positive_reference_stays_linear_when_logs_skew_it_more():
    """x^1.1 over 1..100: barely skewed (0.04), skewed the other way in logs (-0.44): banded as it is."""
    mild = np.linspace(1.0, 100.0, 100) ** 1.1
    assert reference_fences(mild, RATE) == linear_scale(mild)
    assert reference_fences(ONE_TO_HUNDRED, RATE) == linear_scale(ONE_TO_HUNDRED)  # no skew at all: linear too


def test_a_left_skewed_positive_reference_stays_linear():
    left = 200.0 - np.exp(np.linspace(0.0, 5.0, 200))
    assert left.min() > 0
    assert reference_fences(left, RATE) == linear_scale(left)


def test_a_reference_with_a_negative_value_stays_linear():
    skewed = np.r_[[-1.0], np.exp(np.linspace(0.0, 5.0, 199))]
    assert reference_fences(skewed, RATE) == linear_scale(skewed)


def test_a_log_band_beyond_floats_is_capped_at_e_to_the_700():
    """Values up to 1e300: the log band would reach past e^709, the largest float; it stops at e^700."""
    huge = 10.0 ** np.linspace(0.0, 300.0, 100)
    fences = reference_fences(huge, RATE)
    assert fences.high == math.exp(700.0) - 1.0


# -- batch fences ------------------------------------------------------------------------------


def test_batch_fences_extrapolate_the_quartiles_twice_over():
    """Quartiles -25, 0, 25 and a rate of 0.25 / 2^4: upper = 25 + 2 * 25 * 4 = 225."""
    fences = batch_fences(np.arange(-50.0, 51.0), rate=0.25 / 16, min_rows=20)
    assert fences == Fences(-225.0, 225.0)
    wider = batch_fences(np.arange(-50.0, 51.0), rate=0.25 / 256, min_rows=20)  # log2 = 8: twice the reach
    assert (wider.low, wider.high) == pytest.approx((-425.0, 425.0))


def test_batch_fences_of_a_non_negative_column_are_set_on_the_log_scale():
    """log1p of the values is 0..4 (quartiles 1, 2, 3): fences at 1 - 8 and 3 + 8 there, expm1 back. A zero counts as
    non-negative."""
    values = np.expm1(np.linspace(0.0, 4.0, 101))
    assert values.min() == 0.0
    fences = batch_fences(values, rate=0.25 / 16, min_rows=20)
    assert (fences.low, fences.high) == pytest.approx((math.expm1(-7.0), math.expm1(11.0)), rel=1e-9)


def test_a_side_squeezed_by_ties_borrows_half_the_interquartile_range():
    """Fifty rows at -10 then -9..40: quartiles -10, -9.5, 15.25. Below the median 0.5 < half the IQR 12.625."""
    values = np.r_[np.full(50, -10.0), np.arange(-9.0, 41.0)]
    fences = batch_fences(values, rate=0.25 / 16, min_rows=20)
    assert (fences.low, fences.high) == pytest.approx((-10 - 12.625 * 8, 15.25 + 24.75 * 8))


def test_equal_quartiles_give_no_fence_on_either_scale():
    assert batch_fences(np.r_[np.full(90, -1.0), np.full(5, -5.0), np.full(5, 5.0)], RATE, min_rows=20) == Fences(None, None)
    assert batch_fences(np.r_[np.zeros(90), np.full(10, 5.0)], RATE, min_rows=20) == Fences(None, None)


def test_batch_fences_need_four_finite_values_whatever_min_rows_says():
    values = np.array([-1.0, 0.0, 1.0, 2.0, np.nan])
    assert batch_fences(values, RATE, min_rows=0) is not None
    assert batch_fences(values[1:], RATE, min_rows=0) is None
    assert batch_fences(values, RATE, min_rows=5) is None  # four finite values: the NaN does not count


def test_a_coarse_budget_starts_the_tail_further_in():
    """A rate of 0.1 on 100 rows: k = 0.1 * 101 = 10.1 rows (the 10th largest, 91), past the five-row floor."""
    k = 10.1
    expected = 91 + (91 - 76) / math.log(25.25 / k) * (math.log(k / 101 / 0.1) + math.log(10) * (1 + 1 / math.sqrt(k)))
    assert _tail_band(ONE_TO_HUNDRED, 0.1) == pytest.approx(expected, rel=1e-12)


def test_a_budget_coarser_than_the_tail_stops_at_the_maximum():
    """A quarter of 1001 rows is the 250th largest, which is also the inner value: ties, k = 1, and a reach below zero
    (ln(1 / 1001 / 0.25) + 2 ln 10 < 0) that is not extrapolated inwards."""
    assert _tail_band(np.arange(1001.0), 0.25) == 1000.0


def test_one_distinct_value_is_enough_for_a_reference_not_to_be_constant():
    low_one = np.r_[[0.0], np.full(49, 5.0)]
    high_one = np.r_[np.full(49, 5.0), [9.0]]
    assert reference_fences(low_one, RATE) == linear_scale(low_one) != Fences(-495.0, 505.0)
    assert reference_fences(high_one, RATE) == linear_scale(high_one) != Fences(-495.0, 505.0)


def test_the_log_scale_applies_below_one_too():
    """exp(0..5) / 1000 stays under 0.15: still right-skewed and positive, still banded in logs; and a narrow
    log-normal column around 1 keeps a low fence below 1."""
    small = np.exp(np.linspace(0.0, 5.0, 200)) / 1000
    assert reference_fences(small, RATE) == log_scale(small) != linear_scale(small)
    narrow = np.exp(np.random.default_rng(0).normal(3.0, 0.2, 2_000)) / 20
    fences = reference_fences(narrow, RATE)
    assert fences == log_scale(narrow) and 0 < fences.low < 1

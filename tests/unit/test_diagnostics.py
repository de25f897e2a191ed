"""Diagnostics on crafted data where the culprit slice and time window are known."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.response.diagnostics import Action, OperationalContext, diagnose

ROWS = 6_000


def crafted(drift: tuple[str, ...] = ("f02",), culprit: str = "f02"):
    rng = np.random.default_rng(3)
    live = make_batch(ROWS, seed=2, with_label=False, drift_features=drift)
    reference = make_batch(ROWS, seed=1, with_label=False)
    y = rng.integers(0, 3, ROWS)
    predicted = y.copy()
    timestamps = pd.date_range("2026-11-20", periods=ROWS, freq="min", tz="UTC")
    late = np.arange(ROWS) >= ROWS * 0.7  # errors start in the 8th of 10 windows
    culprit_high = live[culprit].to_numpy() > np.quantile(live[culprit], 0.8)
    wrong = late & culprit_high | (rng.random(ROWS) < 0.03)
    predicted[wrong] = (y[wrong] + 1) % 3
    return y, predicted, live, timestamps, reference


def test_confusion_and_per_class_figures():
    report = diagnose(np.array(["a", "a", "b", "b", "b"]), np.array(["a", "b", "b", "b", "a"]))
    assert report.labels == ("a", "b") and report.confusion == ((1, 1), (1, 2))
    assert report.per_class[1].recall == 2 / 3 and report.per_class[0].support == 2


def test_the_culprit_slice_and_the_time_window_are_found():
    y, predicted, live, timestamps, _ = crafted()
    report = diagnose(y, predicted, features=live, timestamps=timestamps)
    worst = report.slices[0]
    assert worst.feature == "f02" and worst.error_rate > 0.3 > worst.rest_error_rate
    assert all(s.feature == "f02" for s in report.slices[:2])
    assert report.change_window == report.error_over_time[7] and report.change > 0.1


def test_drift_in_the_culprit_feature_recommends_retraining_on_recent_data():
    y, predicted, live, timestamps, reference = crafted()
    report = diagnose(y, predicted, features=live, timestamps=timestamps, reference=reference)
    assert report.drifted_features == ["f02"]
    (first, *_) = report.recommendations
    assert first.action is Action.RETRAIN_ON_RECENT_DATA and "drift:f02" in first.findings


def test_no_drift_and_a_new_version_recommends_rollback():
    y, predicted, live, timestamps, reference = crafted(drift=())
    context = OperationalContext(new_version_since=datetime(2026, 11, 24, 10, tzinfo=UTC))
    report = diagnose(y, predicted, features=live, timestamps=timestamps, reference=reference, context=context)
    assert report.drifted_features == []
    assert [r.action for r in report.recommendations] == [Action.ROLL_BACK]


def test_latency_with_memory_pressure_recommends_the_fallback():
    context = OperationalContext(latency_p95_ms=900, latency_baseline_p95_ms=120, memory_percent=93)
    report = diagnose(np.array([0, 1, 1]), np.array([0, 1, 1]), context=context)
    assert [r.action for r in report.recommendations] == [Action.ROUTE_TO_FALLBACK]


def test_overconfident_probabilities_show_in_the_calibration_error():
    y = np.array([0, 1] * 500)
    predicted = np.where(np.arange(1_000) % 4 == 0, 1 - y, y)  # 75% right
    proba = np.zeros((1_000, 2))
    proba[np.arange(1_000), predicted] = 0.99
    proba[np.arange(1_000), 1 - predicted] = 0.01
    report = diagnose(y, predicted, proba)
    assert abs(report.expected_calibration_error - 0.24) < 1e-9
    assert Action.RECALIBRATE in [r.action for r in report.recommendations]


def test_regression_reports_its_errors():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=500)
    report = diagnose(truth, truth + rng.normal(scale=0.1, size=500))
    assert report.kind == "regression" and report.regression["r2"] > 0.95


def test_a_new_version_far_worse_than_before_it_went_live_recommends_rollback():
    y = np.array([0, 1] * 500)
    predicted = np.where(np.arange(1_000) % 2 == 0, 1 - y, y)  # 50% wrong from the first row on
    context = OperationalContext(new_version_since=datetime(2026, 11, 27, tzinfo=UTC), baseline_error_rate=0.12)
    report = diagnose(y, predicted, timestamps=pd.date_range("2026-11-27", periods=1_000, freq="s"), context=context)
    rollback = [r for r in report.recommendations if r.action is Action.ROLL_BACK]
    assert rollback and "error rate 50.0% vs 12.0% before it went live" in rollback[0].reason

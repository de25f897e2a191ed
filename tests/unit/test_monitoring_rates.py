"""False alarms and detection of the health monitor on realistic simulated traffic.

An honest champion (10% error, registered accuracy measured on a 600-row
holdout, so the baseline itself is noisy), 30-200 labelled rows per hour
labelled with a delay, one to three rows per request, log-normal latency,
Beta-distributed confidence with the low-confidence rows answered by the
fallback; and a poisoned champion (50% error, just as confident). Each window
goes through the monitor's real path: `window_pair` over a frame shaped like
`InferenceLog.read_window`, then the default policy's checks.

Run `python -m pytest tests/unit/test_monitoring_rates.py -q -s` to print the rates.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.core.vocabulary import Responder, Severity
from prefect_crisis.tasks.monitoring.health_rules import policy_checks
from prefect_crisis.tasks.monitoring.sweep import baseline_of, window_pair

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LATENCY_MEDIAN_MS, LATENCY_SIGMA = 20.0, 0.6
HONEST_ERROR, POISONED_ERROR = 0.10, 0.50
HEALTHY_WINDOWS, POISONED_WINDOWS = 1_000, 300


def simulated_window(rng: np.random.Generator, error: float, labelled: int, label_delay_minutes: float = 10.0) -> pd.DataFrame:
    """One hour of a model's inference log, as `read_window(labelled_only=False)` returns it."""
    requests = int(rng.integers(100, 400))
    rows_per_request = rng.integers(1, 4, size=requests)
    arrived = np.sort(rng.uniform(0, 60, size=requests))  # minutes into the hour
    request_of_row = np.repeat(np.arange(requests), rows_per_request)
    rows = len(request_of_row)
    truth = rng.integers(0, 2, size=rows)
    wrong = rng.random(rows) < error
    confidence = rng.beta(8, 2, size=rows)
    fallback = confidence < 0.6
    failed = rng.random(rows) < 0.002
    answered_by = np.where(failed, Responder.NONE.value, np.where(fallback, Responder.FALLBACK.value, Responder.PRIMARY.value))
    prediction = np.where(wrong, 1 - truth, truth).astype(object)
    prediction[failed] = None
    timestamps = NOW - pd.to_timedelta(60 - arrived[request_of_row], unit="min")
    old_enough = np.flatnonzero(arrived[request_of_row] < 60 - label_delay_minutes)
    chosen = rng.choice(old_enough, size=min(labelled, len(old_enough)), replace=False)
    label = np.full(rows, None, dtype=object)
    label[chosen] = truth[chosen]
    latency = np.exp(np.log(LATENCY_MEDIAN_MS) + LATENCY_SIGMA * rng.standard_normal(requests))[request_of_row]
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "label": label,
            "timestamp": timestamps,
            "prediction": prediction,
            "answered_by": answered_by,
            "version": "3",
            "confidence": np.where(failed, np.nan, confidence),
            "latency_ms": latency,
            "error": np.where(failed, "no answer", None),
            "request_id": [f"r{i}" for i in request_of_row],
            "row_id": [str(i) for i in range(rows)],
        }
    )


def worst_severity(rng: np.random.Generator, error: float, policy: MonitoringPolicy) -> Severity | None:
    holdout_accuracy = 1 - rng.binomial(600, HONEST_ERROR) / 600
    baseline = baseline_of({"accuracy": holdout_accuracy, "latency_p95_ms": LATENCY_MEDIAN_MS * float(np.exp(1.645 * LATENCY_SIGMA))})
    long, short, _ = window_pair(simulated_window(rng, error, int(rng.integers(30, 201))), NOW, policy)
    breaches = policy_checks(policy)(long, short, baseline)
    order = list(Severity)
    return max((b.severity for b in breaches), key=order.index, default=None)


@pytest.fixture(scope="module")
def rates() -> dict[str, float]:
    rng = np.random.default_rng(2026)
    policy = MonitoringPolicy()
    healthy = [worst_severity(rng, HONEST_ERROR, policy) for _ in range(HEALTHY_WINDOWS)]
    poisoned = [worst_severity(rng, POISONED_ERROR, policy) for _ in range(POISONED_WINDOWS)]
    figures = {
        "false_alarm_any": sum(s is not None for s in healthy) / len(healthy),
        "false_alarm_critical": sum(s in (Severity.CRITICAL, Severity.EMERGENCY) for s in healthy) / len(healthy),
        "detected_critical": sum(s in (Severity.CRITICAL, Severity.EMERGENCY) for s in poisoned) / len(poisoned),
        "detected_any": sum(s is not None for s in poisoned) / len(poisoned),
    }
    print(f"\nhealth monitor on {HEALTHY_WINDOWS} healthy and {POISONED_WINDOWS} poisoned simulated hours: {figures}")
    return figures


def test_healthy_windows_raise_almost_no_alarm(rates):
    assert rates["false_alarm_any"] < 0.01, rates
    assert rates["false_alarm_critical"] < 0.005, rates


def test_a_poisoned_champion_is_detected_as_critical(rates):
    assert rates["detected_critical"] > 0.95, rates


def test_the_simulated_log_looks_like_the_real_one():
    frame = simulated_window(np.random.default_rng(1), HONEST_ERROR, 100)
    long, short, _ = window_pair(frame, NOW, MonitoringPolicy())
    # a labelled row nobody answered has no answer to judge; the fallback's answers are judged apart
    assert 95 <= long.get("error_rate").samples + long.get("fallback_error_rate").samples <= 100
    assert long.get("fallback_error_rate").samples >= 1
    assert 0.03 < long.get("fallback_share").value < 0.2
    assert short.get("requests").samples >= 10 and short.get("error_rate").samples >= 10
    assert 40 < long.get("latency_p95_ms").value < 70

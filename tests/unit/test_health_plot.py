"""The health plot: a picture of the metric history, the policy's lines, the registry's moves and the serving
version; a model with no sweep, or a panel with no measurement, says so instead of drawing empty axes."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from PIL import Image

from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.tasks.monitoring.health_plot import plot_health, version_segments
from prefect_crisis.tasks.monitoring.health_rules import WindowMetrics
from prefect_crisis.tasks.monitoring.sweep import ModelHealth, append_history, metric_history, rule_limits


def history(sweeps: int = 40, labelled: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """A served model: v1 healthy, v2 promoted and degraded, rolled back to v1; heavy-tailed latency."""
    rng = np.random.default_rng(3)
    at = pd.date_range("2026-12-03T10:00Z", periods=sweeps, freq="1min")
    versions = ["1"] * 15 + ["2"] * 12 + ["1"] * (sweeps - 27)
    frame = pd.DataFrame(
        {
            "at": at,
            "version": versions,
            "error_rate": [rng.binomial(150, 0.08 if v == "1" else 0.3) / 150 for v in versions] if labelled else np.nan,
            "fallback_share": rng.beta(1, 30, sweeps),
            "failed_row_share": 0.0,
            "latency_p95_ms": rng.standard_t(3, sweeps).__abs__() * 5 + 8,
            "limit:error_rate:critical": [0.18 if v == "1" else 0.17 for v in versions],
            "limit:fallback_share:warning": 0.3,
        }
    )
    actions = [
        {"at": str(at[15]), "action": "promote", "alias": "champion", "from": "1", "to": "2", "outcome": "applied"},
        {"at": str(at[27] - pd.Timedelta(seconds=20)), "action": "rollback", "alias": "champion", "from": "2", "to": "1", "outcome": "applied"},
        {"at": str(at[20]), "action": "rollback", "alias": "champion", "from": "2", "to": "1", "outcome": "failed: registry unreachable"},
    ]
    return frame, actions


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_the_plot_is_a_small_png_of_four_panels():
    frame, actions = history()
    png = plot_health("churn", frame, actions)
    assert png.startswith(b"\x89PNG")
    width, height = size(png)
    assert width > 700 and height > 450
    assert len(png) < 60_000  # embedded in an artifact on every refresh


def test_a_model_never_swept_gets_a_short_picture_that_says_so():
    width, height = size(plot_health("churn", pd.DataFrame()))
    _full_width, full_height = size(plot_health("churn", history()[0], history()[1]))
    assert height < full_height / 3 and width > 500


def test_the_serving_band_follows_applied_champion_moves_only():
    frame, actions = history()
    applied = [a for a in actions if a["outcome"] == "applied"]
    segments = version_segments(frame, applied, pd.Timestamp(frame["at"].iloc[-1]).tz_convert(None))
    assert [version for _, _, version in segments] == ["1", "2", "1"]
    assert segments[1][0] == pd.Timestamp(frame["at"].iloc[15]).tz_convert(None)  # not at the failed rollback's time
    # the failed rollback never shows as a mark or a band change: plotted with it or without, the same picture
    assert plot_health("churn", frame, actions) == plot_health("churn", frame, applied)


def test_no_labels_yet_draws_the_other_panels():
    frame, actions = history(labelled=False)
    png = plot_health("churn", frame, actions)
    assert png.startswith(b"\x89PNG") and size(png) == size(plot_health("churn", history()[0], actions))


def test_each_sweep_records_the_lines_it_was_judged_against(tmp_path):
    at = datetime(2026, 12, 3, 10, tzinfo=UTC)
    policy = MonitoringPolicy()
    for minute, baseline in enumerate((0.08, 0.11)):
        metrics = WindowMetrics(minutes=10)
        health = ModelHealth(
            "churn",
            "1",
            at + timedelta(minutes=minute),
            metrics,
            metrics,
            {"error_rate": baseline},
            limits=rule_limits(policy, {"error_rate": baseline}),
        )
        append_history(health, keep=10, folder=tmp_path)
    recorded = metric_history("churn", tmp_path)
    assert recorded["limit:error_rate:critical"].round(4).tolist() == [0.18, 0.21]
    assert recorded["limit:error_rate:emergency"].tolist() == [0.5, 0.5]  # absolute: no baseline in it


def test_a_healthy_model_refreshes_its_dashboard_once_a_period_and_a_change_at_once():
    from prefect_crisis.tasks.monitoring.dashboard import dashboard_due

    at = pd.date_range("2026-12-03T10:00:30Z", periods=30, freq="1min")
    healthy = pd.DataFrame({"at": at, "version": "1", "severity": np.nan})  # as parquet gives back an all-healthy column
    due = [dashboard_due(healthy.iloc[: n + 1], 10) for n in range(len(healthy))]
    assert sum(due) == 3 and due[0]  # the first sweep, then 10:10 and 10:20
    breached = healthy.assign(severity=[None] * 12 + ["critical"] * 3 + [None] * 15)
    due = [dashboard_due(breached.iloc[: n + 1], 10) for n in range(len(breached))]
    assert due[12:16] == [True, True, True, True]  # each breached sweep, and the first healthy one after them
    rolled = healthy.assign(version=["2"] * 5 + ["1"] * 25)
    assert dashboard_due(rolled.iloc[:6], 10) and not dashboard_due(rolled.iloc[:7], 10)

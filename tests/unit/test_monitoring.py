"""The health monitor's plain parts: metrics of crafted inference-log frames, rules and their
composition, the two-window confirmation, agreement with the rollback decision's statistics,
the metric history, and ml.labels.recorded from recording labels."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import InferenceLog
from prefect_crisis.blocks.monitoring_policy import HealthRule, MonitoringPolicy
from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
from prefect_crisis.core.errors import MonitoringError, PolicyError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import CrisisEvent, Responder, Severity
from prefect_crisis.tasks.monitoring.health_rules import Measure, WindowMetrics, check_any, check_rule_on_windows, judge_long, policy_checks
from prefect_crisis.tasks.monitoring.sweep import (
    ModelHealth,
    append_history,
    metric_history,
    model_metrics,
    read_champion,
    report_health,
    split_windows,
    sweep_model,
)
from prefect_crisis.tasks.response.rollback import LiveWindow, judge_rules
from prefect_crisis.tasks.serving.inference_log import PredictionBatch, RequestError, logged_models, open_inference_log, record_labels

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def log_frame(rows: list[dict]) -> pd.DataFrame:
    base = {
        "x": 1.0,
        "label": None,
        "prediction": 1,
        "answered_by": Responder.PRIMARY.value,
        "version": "1",
        "confidence": 0.9,
        "latency_ms": 10.0,
        "error": None,
        "row_id": "0",
    }
    frame = pd.DataFrame([{**base, **row} for row in rows])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def test_model_metrics_of_a_crafted_window():
    frame = log_frame(
        [
            {"request_id": "a", "row_id": "0", "label": 1, "prediction": 1, "latency_ms": 100.0, "timestamp": NOW, "confidence": 0.2},
            {"request_id": "a", "row_id": "1", "label": 0, "prediction": 1, "latency_ms": 100.0, "timestamp": NOW, "confidence": 0.4},
            {
                "request_id": "a",
                "row_id": "2",
                "label": 0,
                "prediction": 0,
                "latency_ms": 100.0,
                "timestamp": NOW,
                "answered_by": Responder.FALLBACK.value,
                "confidence": 0.6,
                "x": None,
            },
            {
                "request_id": "b",
                "row_id": "0",
                "prediction": None,
                "answered_by": Responder.NONE.value,
                "error": "no answer",
                "latency_ms": 10.0,
                "timestamp": NOW,
                "confidence": None,
            },
            {
                "request_id": "c",
                "row_id": "*",
                "prediction": None,
                "answered_by": Responder.NONE.value,
                "error": "bad input",
                "latency_ms": None,
                "timestamp": NOW,
                "confidence": None,
                "x": None,
            },
        ]
    )
    measures = model_metrics(frame, 60).measures
    assert (measures["requests"].samples, measures["rows"].samples) == (3, 4)  # the refused request is no row
    # the champion's errors are the primary's rows only; the fallback's row is judged apart
    assert (measures["error_rate"].value, measures["error_rate"].samples, measures["error_rate"].count) == (0.5, 2, 1)
    assert (measures["fallback_error_rate"].value, measures["fallback_error_rate"].samples) == (0.0, 1)
    assert measures["fallback_share"].value == 0.25 and measures["failed_row_share"].value == 0.25
    assert measures["exception_rate"].value == pytest.approx(2 / 3)
    # per request, not per row: request a counts once at 100 ms
    assert measures["latency_p50_ms"].value == pytest.approx(55.0) and measures["latency_p50_ms"].samples == 2
    assert measures["confidence_p50"].value == pytest.approx(0.3) and measures["confidence_mean"].value == pytest.approx(0.3)  # the primary's
    assert measures["missing_ratio"].value == 0.25


def test_an_empty_window_measures_nothing_and_breaches_nothing():
    frame = log_frame([{"request_id": "a", "timestamp": NOW}]).iloc[0:0]
    window = model_metrics(frame, 60)
    assert window.get("error_rate") is None and window.measures["requests"].samples == 0
    assert policy_checks(MonitoringPolicy())(window, window, {"error_rate": 0.1}) == ()


def test_the_labelled_short_window_ends_at_the_newest_label_and_holds_enough_rows():
    rows = [{"request_id": f"r{i}", "timestamp": NOW - timedelta(minutes=50 - i), "label": 1 if i < 20 else None} for i in range(50)]
    long, short, labelled_short = split_windows(log_frame(rows), NOW, 60, 5, short_min_samples=10)
    assert len(long) == 50
    assert set(short["request_id"]) == {f"r{i}" for i in range(40, 50)}  # the newest 10 requests (5 minutes hold 5)
    assert set(labelled_short["request_id"]) == {f"r{i}" for i in range(10, 20)}  # labels end at r19


def test_unknown_metrics_and_a_short_window_longer_than_the_long_one_are_refused():
    with pytest.raises(PolicyError, match="unknown metric"):
        HealthRule(name="x", metric="accuracy", severity=Severity.WARNING, threshold=0.1)
    with pytest.raises(PolicyError, match="swap them"):
        MonitoringPolicy(long_window_minutes=5, short_window_minutes=60)
    with pytest.raises(PolicyError, match="only breach above"):
        HealthRule(name="x", metric="error_rate", severity=Severity.WARNING, threshold=0.1, direction="below")


def windows(metric: str, long: Measure, short: Measure) -> tuple[WindowMetrics, WindowMetrics]:
    return WindowMetrics(60, {metric: long}), WindowMetrics(5, {metric: short})


def test_a_breach_needs_both_windows():
    rule = HealthRule(name="latency", metric="latency_p95_ms", severity=Severity.WARNING, threshold=2.0, relative_to="times", min_samples=20)
    check = check_rule_on_windows(rule)
    baseline = {"latency_p95_ms": 50.0}
    assert check(*windows("latency_p95_ms", Measure(80.0, 200), Measure(400.0, 20)), baseline) == ()  # short alone
    assert check(*windows("latency_p95_ms", Measure(120.0, 200), Measure(60.0, 20)), baseline) == ()  # long alone: over
    assert check(*windows("latency_p95_ms", Measure(120.0, 200), Measure(400.0, 3)), baseline) == ()  # short too thin
    (breach,) = check(*windows("latency_p95_ms", Measure(120.0, 200), Measure(400.0, 20)), baseline)
    assert (breach.rule, breach.threshold, breach.value, breach.short_value, breach.samples) == ("latency", 100.0, 120.0, 400.0, 200)
    assert breach.payload()["window_minutes"] == {"long": 60, "short": 5}
    assert check(*windows("latency_p95_ms", Measure(120.0, 200), Measure(400.0, 20)), {}) == ()  # no baseline: not judged


def test_checks_compose_with_or_and_each_keeps_its_severity():
    warn = HealthRule(name="fallback-warning", metric="fallback_share", severity=Severity.WARNING, threshold=0.3)
    crit = HealthRule(name="fallback-critical", metric="fallback_share", severity=Severity.CRITICAL, threshold=0.6)
    memory = HealthRule(name="memory", metric="memory_percent", severity=Severity.EMERGENCY, threshold=95, min_samples=1)
    combined = check_rule_on_windows(warn) | check_rule_on_windows(crit) | check_rule_on_windows(memory)
    assert isinstance(combined, check_any) and len(combined.checks) == 3  # flat, like stop_any
    long = WindowMetrics(60, {"fallback_share": Measure(0.5, 1_000, 500), "memory_percent": Measure(97.0, 1)})
    short = WindowMetrics(5, {"fallback_share": Measure(0.5, 100, 50), "memory_percent": Measure(97.0, 1)})
    assert [(b.rule, b.severity) for b in combined(long, short, {})] == [("fallback-warning", Severity.WARNING), ("memory", Severity.EMERGENCY)]


@pytest.mark.parametrize("tolerance, min_samples", [(0.05, 30), (0.10, 50), (0.02, 200)])
def test_the_quality_rule_breaches_exactly_when_the_rollback_decision_finds_the_rate_degraded(tolerance, min_samples):
    rng = np.random.default_rng(int(tolerance * 1000) + min_samples)
    rule = HealthRule(name="q", metric="error_rate", severity=Severity.CRITICAL, threshold=tolerance, relative_to="plus", min_samples=min_samples)
    rollback = RollbackPolicy(rules=[MetricRule(metric="error_rate", tolerance=tolerance, min_samples=min_samples)], confidence=0.95)
    agreed = breached = 0
    for _ in range(2_000):
        trials = int(rng.integers(1, 400))
        wrong = int(rng.binomial(trials, rng.uniform(0.02, 0.6)))
        accuracy = float(rng.uniform(0.7, 0.97))
        monitor = judge_long(
            rule, WindowMetrics(60, {"error_rate": Measure(wrong / trials, trials, wrong)}), {"error_rate": round(1 - accuracy, 12)}, 0.95
        )
        decision = judge_rules(LiveWindow({"accuracy": trials - wrong}, {"accuracy": trials}), {"accuracy": accuracy}, rollback)
        agreed += monitor.breached == bool(decision.violations)
        breached += monitor.breached
        if monitor.breached:
            assert not decision.undecided  # never a breach the response would call inconclusive
    assert agreed == 2_000
    assert 100 < breached < 1_900  # both outcomes were exercised


class FakeRegistry:
    model_name, display_tracking_uri, champion_alias, fallback_alias = "churn", "sqlite:///fake.db", "champion", "fallback"

    def __init__(self, champion=None, reachable=True):
        self._champion, self.reachable = champion, reachable

    def champion(self):
        return self._champion

    def audit_trail(self, alias=None):
        return []

    @property
    def client(self):
        registry = self

        class Client:
            def search_registered_models(self, max_results):
                from mlflow.exceptions import MlflowException

                if not registry.reachable:
                    raise MlflowException("connection refused\nmore detail")
                return []

            def get_model_version(self, name, version):
                return type("ModelVersion", (), {"tags": {}, "aliases": ["champion"]})()

        return Client()


def test_an_unreachable_registry_is_a_one_line_monitoring_error_and_no_champion_is_not():
    with pytest.raises(MonitoringError, match=r"cannot read the champion of 'churn' .*: connection refused \(check"):
        read_champion(FakeRegistry(reachable=False))
    assert read_champion(FakeRegistry()) == (None, {})


def labelled_batch(request_id: str, rows: int, at: datetime, model: str = "churn") -> PredictionBatch:
    return PredictionBatch(
        request_id=request_id,
        model=model,
        received_at=at,
        latency_ms=5.0,
        inputs=pd.DataFrame({"x": np.arange(rows, dtype=float)}),
        row_ids=[str(i) for i in range(rows)],
        predictions=[1] * rows,
        answered_by=[Responder.PRIMARY.value] * rows,
        versions=["1"] * rows,
        confidence=[0.9] * rows,
        errors=[None] * rows,
    )


def write(log: InferenceLog, *items) -> None:
    writer = open_inference_log(log)
    try:
        for item in items:
            writer.submit(item)
        writer.flush()
    finally:
        writer.close(timeout=5)


def test_recording_labels_emits_labels_recorded_per_model(tmp_path):
    log = InferenceLog(url=f"sqlite:///{tmp_path / 'log.db'}", spool_path=str(tmp_path / "spool"))
    at = datetime.now(UTC)
    write(
        log,
        labelled_batch("a", 3, at),
        labelled_batch("b", 2, at, model="fraud"),
        RequestError(request_id="c", model="churn", received_at=at, reason="bad input", rows=4),
    )
    sink = ListSink()
    assert record_labels(log, ["a", ("b", "1"), "c", "unknown"], [1, 0, 1, 1], timeline=Timeline(sink=sink)) == 4
    figures = {event.resource["ml.model.name"]: (event.event, event.payload) for event in sink}
    assert figures == {
        "churn": (CrisisEvent.LABELS_RECORDED, {"rows": 3, "requests": 1, "labels": 1}),  # the refused request has no row
        "fraud": (CrisisEvent.LABELS_RECORDED, {"rows": 1, "requests": 1, "labels": 1}),
    }
    silent = ListSink()
    record_labels(log, ["a"], [0], emit=False, timeline=Timeline(sink=silent))
    assert silent == []
    assert logged_models(log, at - timedelta(minutes=1)) == ["churn", "fraud"]


def test_a_sweep_of_a_logged_poisoned_model_reports_a_critical_breach_and_its_history(tmp_path):
    log = InferenceLog(url=f"sqlite:///{tmp_path / 'log.db'}", spool_path=str(tmp_path / "spool"))
    now = datetime.now(UTC)
    write(log, *[labelled_batch(f"r{i}", 4, now - timedelta(minutes=30 - i / 10)) for i in range(100)])
    record_labels(log, [f"r{i}" for i in range(100)], [int(i % 2) for i in range(100)], emit=False)  # predictions are all 1: 50% wrong
    champion = type("Champion", (), {"version": "1", "metrics": {"accuracy": 0.9}})()  # the version that answered
    policy = MonitoringPolicy()
    health = sweep_model("churn", log, policy, FakeRegistry(champion), now=now)
    assert health.severity is Severity.CRITICAL and {b.rule for b in health.breaches} == {"quality-warning", "quality-critical"}
    sink = ListSink()
    report_health(health, Timeline(sink=sink))
    assert [e.event for e in sink] == [CrisisEvent.BREACH_CRITICAL, CrisisEvent.HEALTH_REPORTED]  # the warning is subsumed
    critical = sink[0].payload
    assert {"metric", "value", "threshold", "window_minutes", "samples", "rule", "severity"} <= set(critical)
    assert critical["samples"] == 400 and critical["threshold"] == pytest.approx(0.2) and critical["value"] == 0.5
    assert sink[0].related[0]["prefect.resource.id"] == "ml.model-version.churn.1"
    assert sink[1].payload["metrics"]["error_rate"] == 0.5
    # After a rollback to v2, the rows v1 answered are not v2's health: nothing to judge, no breach.
    recovered = type("Champion", (), {"version": "2", "metrics": {"accuracy": 0.9}})()
    assert sweep_model("churn", log, policy, FakeRegistry(recovered), now=now).breaches == ()

    for _ in range(3):
        append_history(health, keep=2, folder=tmp_path / "monitoring")
    history = metric_history("churn", folder=tmp_path / "monitoring")
    assert len(history) == 2 and history["error_rate"].tolist() == [0.5, 0.5] and history["severity"].tolist() == ["critical"] * 2
    assert metric_history("never-swept", folder=tmp_path / "monitoring").empty
    assert not list((tmp_path / "monitoring").glob(".*"))  # no temporary file left behind


def test_a_health_line_names_the_model_and_says_healthy_when_it_is():
    window = WindowMetrics(60, {"requests": Measure(3.0, 3), "error_rate": Measure(0.1, 40, 4)})
    line = ModelHealth("churn", "3", NOW, window, window, {}).line()
    assert line.startswith("churn v3: 3 requests") and "error rate 10.00% of 40 labelled" in line and line.endswith("healthy")
    assert math.isnan(model_metrics(log_frame([{"request_id": "a", "timestamp": NOW}]), 60).measures["error_rate"].value)


def test_one_sweep_reports_each_metric_once_at_its_worst_severity():
    from prefect_crisis.core.vocabulary import Severity
    from prefect_crisis.tasks.monitoring.health_rules import Breach
    from prefect_crisis.tasks.monitoring.sweep import escalated

    def breach(rule, metric, severity):
        return Breach(
            rule=rule,
            metric=metric,
            severity=severity,
            value=0.9,
            threshold=0.5,
            samples=100,
            bound=0.8,
            short_value=0.9,
            short_samples=20,
            long_window_minutes=60,
            short_window_minutes=5,
            baseline=0.1,
        )

    found = (
        breach("q-w", "error_rate", Severity.WARNING),
        breach("q-e", "error_rate", Severity.EMERGENCY),
        breach("q-c", "error_rate", Severity.CRITICAL),
        breach("f-w", "fallback_share", Severity.WARNING),
    )
    kept = escalated(found)
    assert sorted((b.metric, b.severity) for b in kept) == [("error_rate", Severity.EMERGENCY), ("fallback_share", Severity.WARNING)]


def test_the_schedule_sweeps_a_drill_model_only_while_its_drill_runs(tmp_path):
    from prefect_crisis.tasks.monitoring.sweep import models_to_sweep

    log = InferenceLog(url=f"sqlite:///{tmp_path / 'log.db'}", spool_path=str(tmp_path / "spool"))
    now = datetime.now(UTC)
    write(log, labelled_batch("a", 5, now, model="churn"), labelled_batch("b", 5, now, model="drill-latency-spike-1a2b3c"))
    assert models_to_sweep(log, now + timedelta(seconds=1), 60, drill_minutes=5) == ["churn", "drill-latency-spike-1a2b3c"]  # its drill runs
    assert models_to_sweep(log, now + timedelta(minutes=10), 60, drill_minutes=5) == ["churn"]  # the drill is over
    assert models_to_sweep(log, now, 60, ["drill-latency-spike-1a2b3c"]) == ["drill-latency-spike-1a2b3c"]


@pytest.mark.usefixtures("mlflow_tracking_uri")
def test_a_promoted_champion_is_judged_no_looser_than_the_version_it_replaced():
    """A retrain on flipped labels scores itself on those labels: its own accuracy would set a lax bar. The
    monitor's baseline is the better of its figures and those of the version it was promoted over; after a
    rollback (not a promotion) the champion's own figures count again."""
    import uuid

    from prefect_crisis.blocks import ModelRegistry
    from prefect_crisis.core.vocabulary import AliasAction
    from prefect_crisis.tasks.drills.injections import positives_flipped, register_synthetic
    from prefect_crisis.tasks.monitoring.sweep import read_champion

    registry = ModelRegistry(model_name=f"guard-{uuid.uuid4().hex[:6]}")
    good = register_synthetic(registry, 1)
    poisoned = register_synthetic(registry, 2, positives_flipped)
    own = {v: registry.version(v).metrics["accuracy"] for v in (good, poisoned)}
    assert own[poisoned] < own[good]
    registry.promote(good, "first model")
    assert read_champion(registry) == (good, pytest.approx({**registry.version(good).metrics}))
    registry.promote(poisoned, "retrained")
    version, baseline = read_champion(registry)
    assert version == poisoned and baseline["accuracy"] == own[good] and baseline["error_rate"] == pytest.approx(1 - own[good])
    registry.move_alias(registry.champion_alias, good, "rolled back", action=AliasAction.ROLLBACK)
    assert read_champion(registry)[1]["accuracy"] == own[good]
    registry.move_alias(registry.champion_alias, poisoned, "moved by hand")  # a plain move, not a promotion: its own figures
    assert read_champion(registry)[1]["accuracy"] == own[poisoned]


# -- a rule's direction and what its threshold is relative to -------------------------------


def windows_of(metric: str, value: float, samples: int = 200) -> tuple[WindowMetrics, WindowMetrics]:
    return WindowMetrics(60, {metric: Measure(value, samples)}), WindowMetrics(5, {metric: Measure(value, samples)})


def test_a_below_rule_breaches_under_its_limit_and_never_above_it():
    below = HealthRule(name="unsure", metric="confidence_p10", severity="warning", threshold=0.6, direction="below")
    above = HealthRule(name="sure", metric="confidence_p10", severity="warning", threshold=0.6)
    low, high = windows_of("confidence_p10", 0.4), windows_of("confidence_p10", 0.8)
    assert [b.rule for b in check_rule_on_windows(below)(*low, {})] == ["unsure"]
    assert check_rule_on_windows(below)(*high, {}) == ()
    assert check_rule_on_windows(above)(*low, {}) == ()  # the same value, read the other way, is healthy
    assert [b.rule for b in check_rule_on_windows(above)(*high, {})] == ["sure"]
    long_low, _ = low
    assert judge_long(below, long_low, {}, 0.95).breached and not judge_long(above, long_low, {}, 0.95).breached
    with pytest.raises(PolicyError, match="can only breach above"):  # a rate of bad events only breaches above
        HealthRule(name="x", metric="error_rate", severity="warning", threshold=0.1, direction="below")


@pytest.mark.parametrize(
    ("relative_to", "limit"),
    [("absolute", 1.5), ("plus", 201.5), ("times", 300.0)],
)
def test_a_threshold_is_absolute_or_added_to_or_multiplied_with_the_baseline(relative_to, limit):
    rule = HealthRule(name="slow", metric="latency_p95_ms", severity="warning", threshold=1.5, relative_to=relative_to, min_samples=20)
    baseline = {"latency_p95_ms": 200.0}
    assert rule.limit(200.0) == limit
    assert rule.limit(None) == (1.5 if relative_to == "absolute" else None)  # relative without a baseline: not judged
    just_over, just_under = windows_of("latency_p95_ms", limit + 0.01), windows_of("latency_p95_ms", limit - 0.01)
    assert [b.threshold for b in check_rule_on_windows(rule)(*just_over, baseline)] == [limit]
    assert check_rule_on_windows(rule)(*just_under, baseline) == ()
    if relative_to != "absolute":
        judged = judge_long(rule, just_over[0], {}, 0.95)
        assert not judged.breached and judged.undecided == "latency_p95_ms: no baseline"


def test_a_health_rule_judges_a_rate_as_the_rollback_rule_with_no_tolerance_would():
    from prefect_crisis.tasks.monitoring.health_rules import RateRule

    rollback, rate = MetricRule(metric="error_rate", tolerance=0.0, min_samples=30), RateRule(min_samples=30)
    fields = ("metric", "kind", "higher_is_better", "tolerance", "relative", "min_samples")
    assert [getattr(rate, name) for name in fields] == [getattr(rollback, name) for name in fields]

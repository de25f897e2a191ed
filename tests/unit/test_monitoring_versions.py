"""Windows per serving version, on real data: rows of the digits data set answered by a poisoned v1,
then, after the champion was moved by hand, by a good v2, with the hard rows routed to a weak
fallback, all written to a real SQLite inference log and judged against a real SQLite MLflow
registry and its audit. Before the move the sweep breaches; after it, it judges v2 alone and is
healthy, with the fallback's figures apart; `crisis status` tells v2's health. While the champion
is the fallback version the sweep says so and the model is never called healthy. The labelled
window the response reads carries the requests' latency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from prefect_crisis.blocks import InferenceLog, ModelRegistry
from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.core.errors import RegistryUnavailableError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent, Responder, Severity, TagKey, VersionRole
from prefect_crisis.deployments.status_cli import print_model_status
from prefect_crisis.tasks.drills.datasets import load_dataset
from prefect_crisis.tasks.monitoring.dashboard import dashboard_markdown, read_dashboard
from prefect_crisis.tasks.monitoring.health_rules import judge_long
from prefect_crisis.tasks.monitoring.sweep import (
    SERVING_LABEL,
    Serving,
    append_history,
    baseline_of,
    metric_history,
    report_health,
    sweep_model,
    window_pair,
)
from prefect_crisis.tasks.serving.inference_log import (
    LATENCY_COLUMN,
    PredictionBatch,
    labelled_window,
    latencies_of,
    open_inference_log,
    read_window,
    record_labels,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MOVED_AT = NOW - timedelta(minutes=20)  # the champion moved by hand from v1 to v2
ROUTE_BELOW = 0.6  # a primary answer less confident than this goes to the fallback, as the router does
LATENCY_MS = {"1": 21.0, "2": 7.0, "3": 2.0}
POISONED = {3: 8, 8: 3, 5: 9, 9: 5, 1: 7, 7: 1}  # a broken pipeline swapped these labels before the retrain


@dataclass(frozen=True)
class Served:
    """The digits split and the three fitted models: v1 poisoned, v2 good, v3 the weak fallback."""

    features: tuple[str, ...]
    stream: pd.DataFrame
    models: dict[str, object]
    accuracy: dict[str, float]  # as each version registered it


@pytest.fixture(scope="module")
def served() -> Served:
    data = load_dataset("digits")
    train, holdout, stream = data.split(seed=7, parts=(0.4, 0.2, 0.4))
    features = data.features
    X, y = train[list(features)].to_numpy() / 16.0, train["label"].to_numpy()
    X_holdout, y_holdout = holdout[list(features)].to_numpy() / 16.0, holdout["label"].to_numpy()
    poisoned = np.vectorize(lambda label: POISONED.get(label, label))
    good = LogisticRegression(max_iter=2_000).fit(X, y)
    bad = LogisticRegression(max_iter=2_000).fit(X, poisoned(y))
    weak = DecisionTreeClassifier(max_depth=6, random_state=0).fit(X[:, :32], y)  # the top half of the pixels only
    accuracy = {
        "1": float(bad.score(X_holdout, poisoned(y_holdout))),  # a poisoned retrain scores itself on poisoned labels
        "2": float(good.score(X_holdout, y_holdout)),
        "3": float(weak.score(X_holdout[:, :32], y_holdout)),
    }
    return Served(features, stream, {"1": bad, "2": good, "3": weak}, accuracy)


@pytest.fixture
def clock():
    return [NOW - timedelta(hours=2)]


@pytest.fixture
def registry(tmp_path, clock, served) -> ModelRegistry:
    """digits in a real SQLite MLflow registry: v1, v2 and the fallback v3 (tagged, under @fallback); v1 promoted two hours ago."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = ModelRegistry(model_name="digits", tracking_uri=uri).use(client=client, clock=lambda: clock[0])
    registry.use(timeline=Timeline(clock=registry.now, sink=ListSink()))
    experiment = client.create_experiment("training", artifact_location=str(tmp_path / "artifacts"))
    for version in ("1", "2", "3"):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", served.accuracy[version])
        tags = {TagKey.FEATURES: ",".join(served.features)}
        if version == "3":
            tags[TagKey.ROLE] = VersionRole.FALLBACK.value
        registry.register_version(f"{run.info.artifact_uri}/model", run.info.run_id, None, tags)
    registry.move_alias(registry.fallback_alias, "3", "the fallback model")
    registry.promote("1", "retrained on the latest batch")
    return registry


@pytest.fixture
def log(tmp_path) -> InferenceLog:
    return InferenceLog(url=f"sqlite:///{tmp_path / 'inference.db'}", spool_path=str(tmp_path / "spool"))


def serve(
    log: InferenceLog,
    served: Served,
    rows: pd.DataFrame,
    primary: str,
    start: datetime,
    minutes: float,
    fallback: str | None = "3",
    prefix: str = "r",
    rows_per_request: int = 4,
) -> list[str]:
    """Answer `rows` as the router would (primary `primary`, its unsure rows to `fallback`), spread over
    `minutes` from `start`, written to the real inference log, then label them; returns the request ids."""
    X = rows[list(served.features)].to_numpy() / 16.0
    proba = served.models[primary].predict_proba(X)
    answer = served.models[primary].classes_[proba.argmax(axis=1)]
    routed = (proba.max(axis=1) < ROUTE_BELOW) if fallback else np.zeros(len(rows), dtype=bool)
    if fallback:
        answer = np.where(routed, served.models[fallback].predict(X[:, :32]), answer)
    confidence = np.where(routed, 0.5, proba.max(axis=1))
    requests = [list(range(first, min(first + rows_per_request, len(rows)))) for first in range(0, len(rows), rows_per_request)]
    writer = open_inference_log(log)
    ids = []
    try:
        for number, members in enumerate(requests):
            request_id = f"{prefix}{number}"
            at = start + timedelta(minutes=minutes * number / len(requests))
            by_fallback = routed[members]
            writer.submit(
                PredictionBatch(
                    request_id=request_id,
                    model="digits",
                    received_at=at,
                    latency_ms=LATENCY_MS[fallback] if by_fallback.all() else LATENCY_MS[primary],
                    inputs=rows.iloc[members][list(served.features)].reset_index(drop=True),
                    row_ids=[str(i) for i in range(len(members))],
                    predictions=[int(value) for value in answer[members]],
                    answered_by=[(Responder.FALLBACK if flag else Responder.PRIMARY).value for flag in by_fallback],
                    versions=[fallback if flag else primary for flag in by_fallback],
                    confidence=confidence[members].tolist(),
                    errors=[None] * len(members),
                )
            )
            ids.append(request_id)
        assert writer.flush()
    finally:
        writer.close(timeout=5)
    keys = [(request_id, str(row)) for request_id, members in zip(ids, requests, strict=True) for row in range(len(members))]
    labels = [int(rows["label"].iloc[index]) for members in requests for index in members]
    record_labels(log, keys, labels, emit=False)
    return ids


def hand_repair(registry: ModelRegistry, clock: list) -> None:
    clock[0] = MOVED_AT
    registry.move_alias(registry.champion_alias, "2", "moved by hand: v1 answers badly")


def test_after_a_champion_moved_by_hand_the_sweep_judges_the_new_champion_alone_and_finds_it_healthy(registry, log, served, clock, tmp_path):
    policy = MonitoringPolicy()
    before, after = served.stream.iloc[:340], served.stream.iloc[340:680]
    serve(log, served, before, "1", NOW - timedelta(minutes=50), 29, prefix="v1-")

    breached = sweep_model("digits", log, policy, registry, now=MOVED_AT - timedelta(seconds=1))
    assert breached.version == "1" and breached.serving is Serving.CHAMPION
    assert breached.severity in (Severity.CRITICAL, Severity.EMERGENCY), breached.line()
    assert breached.long.get("error_rate").value > 0.3

    hand_repair(registry, clock)
    serve(log, served, after, "2", MOVED_AT + timedelta(seconds=30), 19, prefix="v2-")
    serve(log, served, served.stream.iloc[680:688], "1", MOVED_AT + timedelta(minutes=1), 1, fallback=None, prefix="lagging-")  # a server still on v1

    health = sweep_model("digits", log, policy, registry, now=NOW)
    assert health.version == "2" and health.serving is Serving.CHAMPION and health.healthy, health.line()
    assert health.breaches == () and health.severity is None
    assert health.serving_since == MOVED_AT
    logged = read_window(log, "digits", NOW - timedelta(minutes=60), NOW, labelled_only=False)
    left_out = (logged["timestamp"] < pd.Timestamp(MOVED_AT)) | (logged["version"] == "1")
    assert health.rows_left_out == int(left_out.sum()) == len(before) + 8  # served before the move, and by the server still on v1
    assert any("348 rows answered by another version" in note for note in health.notes)

    # The fallback's rows are counted apart: their share and their own error rate, never v2's errors or successes.
    long = health.long
    champion_rows = logged[(logged["version"] == "2")]
    fallback_rows = logged[(logged["version"] == "3") & (logged["timestamp"] >= pd.Timestamp(MOVED_AT))]
    assert long.get("error_rate").samples == len(champion_rows) and long.get("fallback_error_rate").samples == len(fallback_rows)
    assert long.get("rows").samples == len(champion_rows) + len(fallback_rows) == len(after)
    assert long.get("fallback_share").value == pytest.approx(len(fallback_rows) / len(after)) and len(fallback_rows) > 10
    assert long.get("fallback_error_rate").value > long.get("error_rate").value + 0.2  # the weak model's hard rows
    assert long.get("latency_p95_ms").value == LATENCY_MS["2"]  # the v2 requests only: v1's 21 ms and the fallback's are not v2's

    # What the monitor judged before: the long window's every row (v1's answers among them) against v2's baseline breaches.
    mixed_long, _, _ = window_pair(logged, NOW, policy)
    critical = next(rule for rule in policy.rules if rule.name == "quality-critical")
    assert judge_long(critical, mixed_long, baseline_of({"accuracy": served.accuracy["2"]}), policy.confidence).breached

    sink = ListSink()
    report_health(health, Timeline(sink=sink))
    (reported,) = [event for event in sink if event.event == CrisisEvent.HEALTH_REPORTED]
    assert reported.payload["serving"] == "champion" and reported.payload["serving_since"] == MOVED_AT.isoformat()
    assert reported.payload["rows_left_out"] == 348 and reported.resource[SERVING_LABEL] == "champion"
    assert reported.payload["metrics"]["fallback_error_rate_samples"] == len(fallback_rows)

    # `crisis status`: the champion's health, the fallback apart; the breach of v1 is history.
    folder = tmp_path / "monitoring"
    append_history(breached, keep=100, folder=folder)
    append_history(health, keep=100, folder=folder)
    board = read_dashboard(registry, metric_history("digits", folder), now=NOW)
    assert board.level == "ok" and not board.in_crisis and board.serving == "champion" and not board.served_by_fallback
    assert board.champion_health["version"] == "2" and board.champion_health["severity"] is None
    assert board.champion_health["fallback_share"] == pytest.approx(len(fallback_rows) / len(after), abs=1e-6)
    console = Console(record=True, width=200)
    print_model_status(board, console, as_json=False)
    shown = console.export_text()
    assert "digits: OK" in shown and "health of the champion v2 (latest sweep)" in shown and "healthy" in shown
    assert f"fallback, counted apart: {len(fallback_rows) / len(after):.1%} of rows" in shown and "348 rows of other versions left out" in shown
    assert "Health of the champion" in dashboard_markdown(board)


def test_a_champion_that_is_the_fallback_version_is_reported_as_served_by_its_fallback_and_never_healthy(registry, log, served, clock, tmp_path):
    clock[0] = NOW - timedelta(minutes=30)
    registry.move_alias(registry.champion_alias, "3", "emergency: serve the fallback", "inc-1", action=AliasAction.FALLBACK)
    rows = served.stream.iloc[:300]
    X = rows[list(served.features)].to_numpy() / 16.0
    weak = served.models["3"]
    writer = open_inference_log(log)
    try:
        for number in range(0, len(rows), 3):  # the serving loads @champion (the fallback) as its primary
            members = list(range(number, min(number + 3, len(rows))))
            writer.submit(
                PredictionBatch(
                    request_id=f"f{number}",
                    model="digits",
                    received_at=NOW - timedelta(minutes=25) + timedelta(seconds=4 * number),
                    latency_ms=2.0,
                    inputs=rows.iloc[members][list(served.features)].reset_index(drop=True),
                    row_ids=[str(i) for i in range(len(members))],
                    predictions=[int(v) for v in weak.predict(X[members, :32])],
                    answered_by=[Responder.PRIMARY.value] * len(members),
                    versions=["3"] * len(members),
                    confidence=[0.7] * len(members),
                    errors=[None] * len(members),
                )
            )
        assert writer.flush()
    finally:
        writer.close(timeout=5)
    record_labels(log, [(f"f{n - n % 3}", str(n % 3)) for n in range(len(rows))], rows["label"].astype(int).tolist(), emit=False)

    health = sweep_model("digits", log, MonitoringPolicy(), registry, now=NOW)
    assert health.breaches == ()  # the fallback does as well as it registered...
    assert health.version == "3" and health.serving is Serving.FALLBACK and not health.healthy  # ...which says nothing of the model
    assert any("served by its fallback v3" in note for note in health.notes)
    assert "(its fallback)" in health.line() and not health.line().endswith("healthy")
    sink = ListSink()
    report_health(health, Timeline(sink=sink))
    reported = next(event for event in sink if event.event == CrisisEvent.HEALTH_REPORTED)
    assert reported.payload["serving"] == "fallback" and reported.resource[SERVING_LABEL] == "fallback"

    append_history(health, keep=10, folder=tmp_path / "monitoring")
    board = read_dashboard(registry, metric_history("digits", tmp_path / "monitoring"), now=NOW)
    assert board.served_by_fallback and board.serving == "fallback" and board.in_crisis and board.level == "warning"
    assert board.champion_health["serving"] == "fallback" and "**Served by its fallback** v3" in dashboard_markdown(board)
    console = Console(record=True, width=200)
    with pytest.raises(SystemExit):
        print_model_status(board, console, as_json=False)
    assert "served by its fallback v3" in console.export_text()


def test_the_labelled_window_carries_each_requests_latency_once(registry, log, served, clock):
    serve(log, served, served.stream.iloc[:120], "1", NOW - timedelta(minutes=40), 10, prefix="v1-")
    hand_repair(registry, clock)
    v2_requests = serve(log, served, served.stream.iloc[120:240], "2", MOVED_AT + timedelta(minutes=1), 10, prefix="v2-")

    window = labelled_window(log, "digits", 60, now=NOW)
    assert LATENCY_COLUMN == "latency_ms" and LATENCY_COLUMN in window.columns
    assert len(window) == 240 and window[LATENCY_COLUMN].notna().sum() == 60  # one sample per request of 4 rows
    assert set(latencies_of(window)) <= {LATENCY_MS["1"], LATENCY_MS["2"], LATENCY_MS["3"]}

    champions = labelled_window(log, "digits", 60, now=NOW, latency_version="2")
    samples = latencies_of(champions)
    assert len(champions) == 240 and 0 < len(samples) <= len(v2_requests)
    assert set(samples) == {LATENCY_MS["2"]}  # v1's requests and the ones the fallback answered alone carry none


def test_an_unreadable_audit_is_a_note_and_the_window_starts_after_the_last_row_another_version_answered(registry, log, served, clock, monkeypatch):
    serve(log, served, served.stream.iloc[:200], "1", NOW - timedelta(minutes=50), 20, prefix="v1-")
    hand_repair(registry, clock)
    serve(log, served, served.stream.iloc[200:500], "2", MOVED_AT + timedelta(minutes=1), 18, prefix="v2-")

    def unavailable(alias=None):
        raise RegistryUnavailableError("the MLflow store is locked")

    monkeypatch.setattr(type(registry), "audit_trail", lambda self, alias=None: unavailable(alias))
    health = sweep_model("digits", log, MonitoringPolicy(), registry, now=NOW)
    logged = read_window(log, "digits", NOW - timedelta(minutes=60), NOW, labelled_only=False)
    last_v1 = logged.loc[logged["version"] == "1", "timestamp"].max()
    assert health.version == "2" and health.healthy, health.line()
    assert health.serving_since == last_v1 and health.rows_left_out == int((logged["timestamp"] <= last_v1).sum())
    assert any("the audit cannot be read (the MLflow store is locked)" in note for note in health.notes)

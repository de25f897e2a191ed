"""health-monitor against the session's real Prefect server and an MLflow store: predictions of a
poisoned champion served by the real router into a real inference log (SQLite), labels recorded,
one sweep; the breach and the health report are read back from the server. A healthy champion
gives no breach; a model whose sweep fails does not stop the others."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from prefect_crisis.blocks import InferenceLog, ModelRegistry
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.core.errors import MonitoringError
from prefect_crisis.core.timeline import ListSink, Timeline, utc_now
from prefect_crisis.core.vocabulary import CrisisEvent
from prefect_crisis.flows.monitoring import health_monitor
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.monitoring import sweep as monitoring  # the module the flow sweeps with (patched below)
from prefect_crisis.tasks.response.report import read_events
from prefect_crisis.tasks.serving.inference_log import open_inference_log, record_labels
from prefect_crisis.tasks.serving.router import FallbackRouter
from tests.helpers import poisoned_after_stable, register, wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")


def events_of(model: str, *names: CrisisEvent):
    now = datetime.now(UTC)
    return read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=now - timedelta(hours=1), until=now + timedelta(minutes=1)),
            event=EventNameFilter(name=[name.value for name in names]),
            resource=EventResourceFilter(id=[f"ml.model.{model}"]),
        )
    )


def serve_and_label(registry: ModelRegistry, log: InferenceLog, requests: int = 12, rows: int = 25, prefix: str = "") -> None:
    """Requests through the real router into the log, then their true labels (which emit ml.labels.recorded)."""
    writer = open_inference_log(log)
    router = FallbackRouter(registry, FallbackPolicy(), log=writer, timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    truth = {}
    try:
        for number in range(requests):
            batch = make_batch(rows, seed=100 + number)
            request_id = f"{registry.model_name}-{prefix}{number}"
            router.predict(batch, request_id=request_id)
            truth.update({(request_id, str(row)): int(label) for row, label in enumerate(batch["label"])})
        writer.flush()
    finally:
        router.close()
        writer.close(timeout=5)
    record_labels(log, list(truth), list(truth.values()))


def test_a_poisoned_champion_breaches_at_its_worst_severity_only_and_a_healthy_one_does_not(crisis_home):
    poisoned_model, healthy_model = f"monitor-{uuid.uuid4().hex[:8]}", f"healthy-{uuid.uuid4().hex[:8]}"
    registry, _good, poisoned = poisoned_after_stable(poisoned_model)
    healthy_registry = ModelRegistry(model_name=healthy_model)
    healthy_version = register(healthy_registry, False, seed=3)
    healthy_registry.promote(healthy_version, "first model")
    log = InferenceLog()  # $CRISIS_HOME/inference.db
    serve_and_label(registry, log)
    serve_and_label(healthy_registry, log)

    state = health_monitor(return_state=True)  # every model in the log's long window
    assert state.is_completed(), state.message
    assert f"{poisoned_model} [" in state.message and f"{healthy_model} [" not in state.message

    # Labels flipped: ~87% errors, past the emergency line (0.5); the warning and critical rules of the
    # same metric breach too, but one sweep reports a metric once, at its worst.
    critical = wait_for(lambda: events_of(poisoned_model, CrisisEvent.BREACH_EMERGENCY), bool)
    assert critical, "no ml.breach.emergency for the poisoned champion"
    payload = critical[0].payload
    assert payload["metric"] == "error_rate" and payload["severity"] == "emergency" and payload["samples"] == 300
    assert payload["value"] > payload["threshold"] and payload["window_minutes"] == {"long": 60.0, "short": 5.0}
    assert any(r.id == f"ml.model-version.{poisoned_model}.{poisoned}" for r in critical[0].related)
    reported = wait_for(lambda: events_of(poisoned_model, CrisisEvent.HEALTH_REPORTED), bool)
    assert reported and reported[0].payload["metrics"]["error_rate_samples"] == 300
    assert wait_for(lambda: events_of(poisoned_model, CrisisEvent.LABELS_RECORDED), bool)[0].payload["rows"] == 300

    assert events_of(poisoned_model, CrisisEvent.BREACH_CRITICAL) == [] and events_of(poisoned_model, CrisisEvent.BREACH_WARNING) == []
    assert wait_for(lambda: events_of(healthy_model, CrisisEvent.HEALTH_REPORTED), bool)
    breaches = events_of(healthy_model, CrisisEvent.BREACH_WARNING, CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY)
    assert breaches == [], [(e.event, e.payload) for e in breaches]
    assert len(monitoring.metric_history(poisoned_model)) == 1 and monitoring.metric_history(healthy_model)["severity"].isna().all()


def test_a_failed_sweep_is_reported_and_the_other_models_are_still_swept(crisis_home, monkeypatch):
    healthy_model, broken_model = f"healthy-{uuid.uuid4().hex[:8]}", f"broken-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(model_name=healthy_model)
    registry.promote(register(registry, False, seed=4), "first model")
    real = monitoring.read_champion

    def read_champion(registry):
        if registry.model_name == broken_model:
            raise MonitoringError(f"cannot read the champion of {broken_model!r}: connection refused")
        return real(registry)

    monkeypatch.setattr(monitoring, "read_champion", read_champion)
    state = health_monitor(model_names=[broken_model], model_name=healthy_model, return_state=True)
    assert state.is_failed() and state.name == "Partly swept"
    assert "swept 1 of 2 models" in state.message and f"{broken_model} (MonitoringError" in state.message
    assert wait_for(lambda: events_of(healthy_model, CrisisEvent.HEALTH_REPORTED), bool)
    assert events_of(broken_model, CrisisEvent.HEALTH_REPORTED) == []  # its silence is what the dead man's switch hears


def test_after_the_champion_was_moved_by_hand_the_monitor_judges_the_new_champion_alone(crisis_home):
    model = f"repaired-{uuid.uuid4().hex[:8]}"
    registry, good, _poisoned = poisoned_after_stable(model)
    log = InferenceLog()
    serve_and_label(registry, log, prefix="poisoned-")
    registry.use(clock=utc_now)
    registry.move_alias(registry.champion_alias, good, "moved by hand: the retrain answers badly")
    serve_and_label(registry, log, prefix="good-")

    state = health_monitor(model_name=model, return_state=True)
    assert state.is_completed() and f"{model} [" not in state.message, state.message
    reported = wait_for(lambda: events_of(model, CrisisEvent.HEALTH_REPORTED), bool)
    payload = reported[0].payload
    assert payload["version"] == good and payload["serving"] == "champion" and payload["severity"] is None
    assert payload["rows_left_out"] == 300 and payload["metrics"]["error_rate_samples"] == 300  # the poisoned version's rows are not the good one's
    assert reported[0].resource[monitoring.SERVING_LABEL] == "champion"
    assert events_of(model, CrisisEvent.BREACH_WARNING, CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY) == []

"""crisis_response against a real Prefect server and MLflow store: a poisoned
v2 is rolled back to the stable v1; the audit and events say why; a rerun of
the same incident changes nothing; with nowhere to go, recovery fails loudly."""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from prefect_crisis.blocks import InferenceLog, MetricRule, ModelRegistry, RollbackPolicy
from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.deployments.inspect import read_artifacts_of_flow_run, read_crisis_events
from prefect_crisis.flows.response import crisis_response
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.response.incident import response_limit
from prefect_crisis.tasks.serving.inference_log import PredictionBatch, open_inference_log, record_labels
from tests.helpers import poisoned_after_stable, register, wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")


@pytest.fixture
def model():
    return f"respond-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def window_path(tmp_path):
    window = make_batch(3_000, seed=42)
    window["timestamp"] = pd.date_range(datetime.now(UTC) - timedelta(hours=1), periods=3_000, freq="s")
    path = tmp_path / "window.parquet"
    window.to_parquet(path)
    return str(path)


def test_poisoned_champion_is_rolled_back_to_the_stable_version(model, window_path):
    _registry, good, poisoned = poisoned_after_stable(model, seeds=(1, 2))

    state = crisis_response(model_name=model, window_path=window_path, incident_id="inc-1", return_state=True)
    assert state.is_completed() and state.name == "Recovered", state.message
    assert f"champion v{poisoned} -> v{good}" in state.message
    live = ModelRegistry(model_name=model)
    assert live.champion().version == good
    last = live.audit_trail("champion")[-1]
    assert (last.action, last.from_version, last.to_version, last.incident) == ("rollback", poisoned, good, "inc-1")
    assert "accuracy" in last.reason and f"v{good} served stably" in last.reason
    # the model's dashboard artifact followed the response: the rolled-back champion, the incident, the move
    from prefect.artifacts import Artifact

    dashboard = Artifact.get(f"crisis-dashboard-{model}")
    assert dashboard is not None and dashboard.type == "markdown"
    assert f"| champion | v{good} |" in dashboard.data and "`inc-1`" in dashboard.data
    assert f"| rollback | champion | v{poisoned} -> v{good} | applied | inc-1 |" in dashboard.data

    events = wait_for(lambda: read_crisis_events(model, prefix="ml."), lambda found: any(e.event == "ml.recovery.succeeded" for e in found))
    names = [e.event for e in events]
    assert names[-2:] == ["ml.model.rolled-back", "ml.recovery.succeeded"]
    succeeded = events[-1]
    assert succeeded.payload["attempts"][0]["verified"] is True and succeeded.payload["champion_after"] == good
    assert any(r.id == "ml.incident.inc-1" and r.role == "incident" for r in succeeded.related)

    artifacts = {a.key: a for a in read_artifacts_of_flow_run(state.state_details.flow_run_id)}
    diagnosis = artifacts[f"diagnosis-{model}"].data
    assert "error rate" in diagnosis and "file://" not in diagnosis  # a picture in the UI, not a path nobody can open
    embedded = re.search(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", diagnosis)
    assert embedded and base64.b64decode(embedded.group(1)).startswith(b"\x89PNG")
    # the incident's MLflow run holds the diagnosis plot and, after the response, the health plot
    client = live.client
    experiment = client.get_experiment_by_name("crisis-incidents")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`crisis.incident` = 'inc-1' and tags.`crisis.model` = '{model}'")
    assert len(runs) == 1
    stored = {item.path for item in client.list_artifacts(runs[0].info.run_id)}
    assert {"diagnosis.png", "health.png", "diagnosis.json"} <= stored
    health = Path(urlparse(client.get_run(runs[0].info.run_id).info.artifact_uri).path) / "health.png"
    assert health.read_bytes().startswith(b"\x89PNG") and health.stat().st_size > 2_000
    assert "## Health history" in dashboard.data and "data:image/png;base64," in dashboard.data

    audit_before = len(live.audit_trail())
    again = crisis_response(model_name=model, window_path=window_path, incident_id="inc-1", return_state=True)
    assert again.name == "Already handled"
    assert len(live.audit_trail()) == audit_before and live.champion().version == good


def test_an_error_rate_policy_rolls_back_a_poisoned_champion_whose_registry_records_accuracy(model, window_path):
    # The champion's registered metrics are accuracy/f1/log loss; before, an error_rate rule was skipped: Hold.
    _registry, good, _poisoned = poisoned_after_stable(model, seeds=(6, 7))
    RollbackPolicy(rules=[MetricRule(metric="error_rate", tolerance=0.02)]).save(f"errors-{model}")

    state = crisis_response(
        model_name=model, window_path=window_path, incident_id="inc-errors", rollback_policy_block=f"errors-{model}", return_state=True
    )
    assert state.name == "Recovered", state.message
    assert ModelRegistry(model_name=model).champion().version == good
    assert ModelRegistry(model_name=model).audit_trail("champion")[-1].reason.startswith("rollback: degraded (error_rate ")


def test_with_no_stable_version_and_no_fallback_recovery_fails_and_leaves_the_registry(model, window_path):
    registry = ModelRegistry(model_name=model)
    poisoned = register(registry, True, seed=3)
    registry.promote(poisoned, "only model")
    audit_before = len(registry.audit_trail())

    state = crisis_response(model_name=model, window_path=window_path, incident_id="inc-2", return_state=True)
    assert state.is_failed() and state.name == "Not recovered"
    assert registry.champion().version == poisoned and len(registry.audit_trail()) == audit_before
    events = wait_for(lambda: read_crisis_events(model), lambda found: any(e.event == "ml.recovery.failed" for e in found))
    failed = next(e for e in events if e.event == "ml.recovery.failed")
    assert failed.payload["attempts"] == [] and "no version to return to and no fallback" in failed.payload["reason"]


def test_a_healthy_champion_is_held_and_the_response_limit_is_released(model, window_path):
    registry = ModelRegistry(model_name=model)
    registry.promote(register(registry, False, seed=4), "good")
    state = crisis_response(model_name=model, window_path=window_path, incident_id="inc-3", return_state=True)
    assert state.name == "Hold"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"crisis-response-{model}")
    assert limit.limit == 1 and limit.active_slots == 0


def test_a_response_waits_while_another_holds_the_models_slot(model, window_path):
    registry = ModelRegistry(model_name=model)
    registry.promote(register(registry, False, seed=5), "good")
    states = {}
    responder = threading.Thread(
        target=lambda: states.update(late=crisis_response(model_name=model, window_path=window_path, incident_id="inc-late", return_state=True)),
        daemon=True,
    )
    with concurrency(response_limit(model), occupy=1, strict=True):  # another response is running
        responder.start()
        time.sleep(4)  # an unguarded response diagnoses and decides in about a second
        assert states == {}, "the second response ran while the first held the model's slot"
    responder.join(60)
    assert states["late"].name == "Hold"


def log_served_window(log: InferenceLog, model: str, rows: int = 3_000, per_request: int = 100) -> None:
    """What serving would have logged over the last 50 minutes, and the labels that came in later."""
    window = make_batch(rows, seed=42)
    start = datetime.now(UTC) - timedelta(minutes=50)
    writer = open_inference_log(log)
    try:
        for number, first in enumerate(range(0, rows, per_request)):
            part = window.iloc[first : first + per_request]
            inputs = part.drop(columns=["label"])
            writer.submit(
                PredictionBatch(
                    request_id=f"{model}-{number}",
                    model=model,
                    received_at=start + timedelta(minutes=number),
                    latency_ms=3.0,
                    inputs=inputs,
                    row_ids=[str(i) for i in range(len(part))],
                    predictions=[0] * len(part),
                    answered_by=[Responder.PRIMARY.value] * len(part),
                    versions=["2"] * len(part),
                    confidence=[0.6] * len(part),
                    errors=[None] * len(part),
                )
            )
        assert writer.flush(timeout=60) and writer.stats.written == rows, writer.stats
    finally:
        writer.close()
    keys = [(f"{model}-{first // per_request}", str(i)) for first in range(0, rows, per_request) for i in range(min(per_request, rows - first))]
    assert record_labels(log, keys, window["label"].tolist()) == rows


def test_without_a_window_path_the_response_reads_the_labelled_window_from_the_default_inference_log(model, crisis_home):
    _registry, good, poisoned = poisoned_after_stable(model, seeds=(8, 9))
    log_served_window(InferenceLog(), model)  # the default log: $CRISIS_HOME/inference.db

    state = crisis_response(model_name=model, incident_id="inc-log", return_state=True)
    assert state.name == "Recovered", state.message
    assert f"champion v{poisoned} -> v{good}" in state.message
    assert ModelRegistry(model_name=model).champion().version == good


def test_an_empty_labelled_window_in_a_named_log_fails_the_response_in_one_line_saying_what_to_do(model, tmp_path):
    registry = ModelRegistry(model_name=model)
    registry.promote(register(registry, False, seed=10), "good")
    block = f"log-{model}"
    InferenceLog(url=f"sqlite:///{tmp_path / 'inference.db'}", spool_path=str(tmp_path / "spool")).save(block)

    state = crisis_response(model_name=model, incident_id="inc-empty", inference_log_block=block, window_minutes=5, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "no labelled predictions" in message and "window_path" in message and "record labels" in message, message
    assert str(tmp_path / "inference.db") in message and registry.champion() is not None


def diagnosed(model: str, window_path: str, event: str):
    """A warning-step response to `event`: it opens the incident `event` and acts on nothing."""
    state = crisis_response(
        model_name=model, window_path=window_path, incident_id=event, triggering_event_id=event, diagnose_only=True, return_state=True
    )
    assert state.name == "Diagnosed", state.message
    return state


def test_a_retry_of_a_crashed_response_acts_in_its_incident_where_a_first_run_would_call_the_event_answered(model, window_path):
    """The crashed run opened the incident for its event and died before acting: the event is in the episode, so a
    second delivery changes nothing; the ladder's retry (retry_of, attempt) acts on what serves now, in that incident."""
    _registry, good, poisoned = poisoned_after_stable(model, seeds=(1, 2))
    crashed = diagnosed(model, window_path, "ev-1")
    again = crisis_response(model_name=model, window_path=window_path, incident_id="ev-1", triggering_event_id="ev-1", return_state=True)
    assert again.name == "Already handled" and ModelRegistry(model_name=model).champion().version == poisoned

    crashed_run = str(crashed.state_details.flow_run_id)
    retry = crisis_response(
        model_name=model,
        window_path=window_path,
        incident_id="ev-1",
        triggering_event_id="ev-1",
        retry_of=crashed_run,
        attempt=2,
        return_state=True,
    )
    assert retry.name == "Recovered", retry.message
    live = ModelRegistry(model_name=model)
    last = live.audit_trail("champion")[-1]
    assert (live.champion().version, last.from_version, last.to_version, last.incident) == (good, poisoned, good, "ev-1")
    events = wait_for(lambda: read_crisis_events(model, prefix="ml.incident"), lambda found: any(e.event == "ml.incident.joined" for e in found))
    assert [e.event for e in events].count("ml.incident.opened") == 1  # one incident: the retry joined it
    joined = next(e for e in events if e.event == "ml.incident.joined" and e.payload.get("retry_of"))
    assert (joined.payload["retry_of"], joined.payload["attempt"]) == (crashed_run, 2)
    with get_client(sync_client=True) as client:
        assert "incident:ev-1" in client.read_flow_run(retry.state_details.flow_run_id).tags


def test_a_response_past_its_attempts_hands_the_incident_to_the_emergency_step_and_moves_nothing(model, window_path):
    from prefect_crisis.tasks.response.episodes import RESPONSE_ATTEMPTS

    _registry, _good, poisoned = poisoned_after_stable(model, seeds=(1, 2))
    with get_client(sync_client=True) as client:  # the crashed run: it died before it knew its incident
        crashed = client.create_flow_run(crisis_response, parameters={"model_name": model})
    state = crisis_response(
        model_name=model,
        window_path=window_path,
        incident_id="ev-2",
        triggering_event_id="ev-2",
        retry_of=str(crashed.id),
        attempt=RESPONSE_ATTEMPTS + 1,
        return_state=True,
    )
    assert state.is_failed() and f"crashed with its worker {RESPONSE_ATTEMPTS} times" in state.message, state.message
    assert ModelRegistry(model_name=model).champion().version == poisoned
    events = wait_for(lambda: read_crisis_events(model, prefix="ml."), lambda found: any(e.event == "ml.recovery.failed" for e in found))
    failed = next(e for e in events if e.event == "ml.recovery.failed")
    assert "not trying again" in failed.payload["reason"]
    with get_client(sync_client=True) as client:  # the crashed run is the incident's too: one filter shows both
        assert "incident:ev-2" in client.read_flow_run(crashed.id).tags


def test_a_response_that_joins_the_open_incident_puts_the_health_plot_in_that_incidents_run(model, window_path):
    """The dashboard links each incident to its MLflow run: the plot of a response that joined an open episode goes to the
    run of the incident it joined, not to one named after its own triggering event."""
    from prefect_crisis.tasks.monitoring.dashboard import incident_runs

    _registry, good, _poisoned = poisoned_after_stable(model, seeds=(1, 2))
    diagnosed(model, window_path, "ev-warn")
    state = crisis_response(model_name=model, window_path=window_path, incident_id="ev-crit", triggering_event_id="ev-crit", return_state=True)
    assert state.name == "Recovered" and ModelRegistry(model_name=model).champion().version == good
    client = ModelRegistry(model_name=model).client
    runs = incident_runs(client, model)
    assert "ev-crit" not in runs  # no run for an incident that was never opened
    artifacts = [artifact.path for artifact in client.list_artifacts(runs["ev-warn"][1])]
    assert "health.png" in artifacts, artifacts

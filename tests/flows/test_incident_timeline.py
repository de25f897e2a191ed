"""One incident, one timeline: a full crisis response against a real Prefect
server and MLflow store emits every step in order, each tied to the one
incident resource; the audit is read once; `crisis incident show` rebuilds
the timeline; a planted secret appears nowhere the response writes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.errors import ExitCode
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.deployments.inspect import read_artifacts_of_flow_run
from prefect_crisis.flows.response import crisis_response
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.response.report import incident_events, incident_report
from tests.helpers import poisoned_after_stable, wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")
STEPS = ["ml.incident.opened", "ml.diagnosis.done", "ml.decision.taken", "ml.model.rolled-back", "ml.recovery.succeeded"]


@pytest.fixture
def poisoned_model(tmp_path):
    """A model whose champion v2 was trained on flipped labels, after a stable v1; and a labelled window."""
    model = f"timeline-{uuid.uuid4().hex[:8]}"
    _registry, good, poisoned = poisoned_after_stable(model)
    now = datetime.now(UTC)
    window = make_batch(3_000, seed=42)
    window["timestamp"] = pd.date_range(now - timedelta(hours=1), periods=3_000, freq="s")
    path = tmp_path / "window.parquet"
    window.to_parquet(path)
    return model, good, poisoned, str(path)


class AuditReads:
    """Counts MLflow searches of the audit experiment by the response's steps: the real client, counted.
    The dashboard refreshed after the response (task publish-dashboard) reads the audit anew, off the
    response's path; its reads are not the response's."""

    def __init__(self, monkeypatch):
        from prefect.context import TaskRunContext

        self.count = 0
        original = MlflowClient.search_runs

        def counting(client, experiment_ids, filter_string="", *args, **kwargs):
            task = TaskRunContext.get()
            in_dashboard = task is not None and task.task.name == "publish-dashboard"
            if f"tags.`{TagKey.MODEL}`" in filter_string and not kwargs.get("page_token") and not in_dashboard:
                self.count += 1
            return original(client, experiment_ids, filter_string, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, "search_runs", counting)


def test_a_full_response_leaves_one_timeline_in_order(poisoned_model, monkeypatch):
    model, good, poisoned, window_path = poisoned_model
    incident = f"inc-{uuid.uuid4().hex[:6]}"
    reads = AuditReads(monkeypatch)
    state = crisis_response(model_name=model, window_path=window_path, incident_id=incident, return_state=True)
    assert state.name == "Recovered", state.message
    assert reads.count == 1, f"the audit was read {reads.count} times in one incident"

    events = wait_for(lambda: incident_events(incident), lambda found: any(e.event == "ml.recovery.succeeded" for e in found))
    names = [e.event for e in events]
    assert names == STEPS
    for event in events:
        incidents = [r.id for r in event.related if r.role == "incident"]
        assert incidents == [f"ml.incident.{incident}"], event.event
        assert event.resource.id == f"ml.model.{model}"
    diagnosis = events[1].payload
    assert diagnosis["top_findings"] and diagnosis["error_rate"] > 0.5
    decision = events[2].payload
    assert (decision["decision"], decision["target_version"]) == ("rollback", good) and decision["violations"]

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert f"incident:{incident}" in run.tags
    rows = [move for move in ModelRegistry(model_name=model).audit_trail() if move.incident == incident]
    assert [(m.action, m.from_version, m.to_version) for m in rows] == [("rollback", poisoned, good)]

    report = incident_report(incident)
    assert [step.step for step in report.steps if not step.step.startswith("audit")] == [name.removeprefix("ml.") for name in STEPS]
    assert any(step.step == "audit: rollback" for step in report.steps)
    assert report.time_to_decide is not None and report.time_to_recover >= report.time_to_decide > timedelta(0)
    assert all(step.actor.startswith("flow run ") for step in report.steps)


def test_crisis_incident_show_and_list_and_an_unknown_id(poisoned_model, mlflow_tracking_uri, tmp_path):
    model, good, poisoned, window_path = poisoned_model
    incident = f"inc-{uuid.uuid4().hex[:6]}"
    assert crisis_response(model_name=model, window_path=window_path, incident_id=incident, return_state=True).name == "Recovered"
    wait_for(lambda: incident_events(incident), lambda found: any(e.event == "ml.recovery.succeeded" for e in found))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CRISIS_"))}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), MLFLOW_TRACKING_URI=mlflow_tracking_uri, CRISIS_HOME=str(tmp_path / ".crisis"), COLUMNS="200")

    def crisis(*args):
        return subprocess.run([sys.executable, "-m", "prefect_crisis.deployments.cli", *args], env=env, capture_output=True, text=True, timeout=120)

    shown = crisis("incident", "show", incident)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    assert out[0].startswith(f"incident {incident} of {model}: critical quality")
    assert "rolled-back" in shown.stdout and f"v{poisoned} -> v{good}" in shown.stdout and "time to detect" in out[-1]

    as_json = json.loads(crisis("incident", "show", incident, "--json").stdout)
    assert as_json["incident"]["id"] == incident and as_json["time_to_recover_s"] > 0

    listed = crisis("incident", "list", model)
    assert listed.returncode == 0 and incident in listed.stdout

    unknown = crisis("incident", "show", "no-such-incident")
    assert unknown.returncode == ExitCode.USAGE
    assert [line for line in unknown.stdout.splitlines() if line.strip()] == [
        "error: no incident 'no-such-incident' on this Prefect server: list them with `crisis incident list`"
    ]


def test_a_planted_secret_is_in_no_log_event_artifact_or_mlflow_tag(poisoned_model, mlflow_tracking_uri, caplog):
    model, _good, _poisoned, window_path = poisoned_model
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    block = f"secret-registry-{uuid.uuid4().hex[:6]}"
    ModelRegistry(model_name=model, tracking_uri=mlflow_tracking_uri, tracking_password=secret).save(block)
    incident = f"inc-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.DEBUG):
        state = crisis_response(model_name=model, window_path=window_path, incident_id=incident, registry_block=block, return_state=True)
    assert state.name == "Recovered", state.message

    assert secret not in caplog.text
    assert secret not in str(state.message) and secret not in repr(state.data)
    events = wait_for(lambda: incident_events(incident), lambda found: any(e.event == "ml.recovery.succeeded" for e in found))
    assert secret not in json.dumps([e.model_dump(mode="json") for e in events])
    with get_client(sync_client=True) as client:
        logs = client.read_logs()
    assert secret not in " ".join(log.message for log in logs)
    artifacts = read_artifacts_of_flow_run(state.state_details.flow_run_id)
    assert artifacts and secret not in json.dumps([a.model_dump(mode="json") for a in artifacts], default=str)
    client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=5_000)
    assert runs and secret not in json.dumps([{"tags": r.data.tags, "params": r.data.params} for r in runs])
    versions = client.search_model_versions(f"name='{model}'")
    assert secret not in json.dumps([dict(v.tags) for v in versions])

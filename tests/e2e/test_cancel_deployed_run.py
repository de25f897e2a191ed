"""Cancelling a deployed training run served by a real Prefect runner: the
checkpoint is written before the process goes, and the run ends Cancelled."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.deployments.inspect import read_crisis_events
from prefect_crisis.deployments.runner import serving
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.synthetic import synthetic_contract
from prefect_crisis.tasks.training.checkpoints import load_checkpoint, training_experiment
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "mlflow_tracking_uri")]


@pytest.fixture
def served_training(monkeypatch):
    """continuous_training served by a Runner on a background thread."""
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # restored after the test
    with serving(continuous_training) as deployment:
        yield deployment


def running_training_run(model: str):
    client = MlflowClient()
    runs = client.search_runs([training_experiment(client, model)], "tags.`crisis.status` = 'running'")
    return runs[0] if runs else None


def test_cancel_stops_training_with_a_checkpoint_and_ends_cancelled(served_training, tmp_path):
    model = f"cancel-{uuid.uuid4().hex[:8]}"
    synthetic_contract().save(model, overwrite=True)
    TrainingPolicy(epochs=2_000, batch_size=20).save(model, overwrite=True)
    flow_run = run_deployment(
        served_training,
        parameters={"model_name": model, "contract_block": model, "policy_block": model, "synthetic_rows": 2_000, "storage": str(tmp_path)},
        timeout=0,
    )
    assert wait_for(lambda: running_training_run(model), lambda run: run is not None, timeout=90) is not None
    # the run record exists once the checkpoint is claimed; cancel once the training proper has begun
    assert wait_for(lambda: read_crisis_events(model, prefix="ml.training.started"), lambda found: len(found) >= 1, timeout=60)

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        final = wait_for(lambda: client.read_flow_run(flow_run.id).state, lambda state: state.is_final(), timeout=60)
    assert final.is_cancelled()

    (run,) = MlflowClient().search_runs([training_experiment(MlflowClient(), model)])
    assert run.info.status == "KILLED"
    assert run.data.tags["crisis.status"] == "stopped" and "cancelled" in run.data.tags["crisis.stop_reason"]
    checkpoint = load_checkpoint(MlflowClient(), run.info.run_id)
    assert checkpoint.position.epoch < 2_000 and len(checkpoint.losses) > 0
    assert ModelRegistry(model_name=model).versions() == []
    events = wait_for(lambda: read_crisis_events(model, prefix="ml.training."), lambda found: len(found) >= 2)
    assert events[-1].event == "ml.training.stopped" and events[-1].payload["reason"] == "cancelled"

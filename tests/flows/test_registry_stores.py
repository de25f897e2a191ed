"""Two ModelRegistry blocks on two SQLite stores in one process, with no
MLFLOW_TRACKING_URI and no process-global tracking URI: registering, loading,
predicting and a full crisis response (rollback) each touch only their own
block's store, and MLflow never creates a store in the working folder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import mlflow.tracking._tracking_service.utils as tracking_utils
import pandas as pd
import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.flows.response import crisis_response
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.response.incident import predict_with
from tests.helpers import register


@pytest.fixture
def no_global_store(tmp_path, monkeypatch):
    """A working folder of its own, and nothing process-global for MLflow to fall back on."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("CRISIS_HOME", str(tmp_path / "home"))
    # Earlier test modules set MLflow's process-global URI; start from MLflow's unset state.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    return work


def registered_names(uri: str) -> set[str]:
    return {model.name for model in MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()}


def test_two_registries_on_two_stores_each_touch_only_their_own(no_global_store, tmp_path):
    uris = {side: f"sqlite:///{tmp_path / side / 'mlflow.db'}" for side in ("left", "right")}
    for side in uris:
        (tmp_path / side).mkdir()
    names = {side: f"stores-{side}-{uuid.uuid4().hex[:6]}" for side in uris}
    now = datetime.now(UTC)
    window = make_batch(3_000, seed=42)
    window["timestamp"] = pd.date_range(now - timedelta(hours=1), periods=3_000, freq="s")
    window_path = tmp_path / "window.parquet"
    window.to_parquet(window_path)

    versions = {}
    for side, uri in uris.items():
        clock = [now - timedelta(hours=3)]
        registry = ModelRegistry(model_name=names[side], tracking_uri=uri).use(clock=lambda clock=clock: clock[0])
        good, poisoned = register(registry, False, seed=1), register(registry, True, seed=2)
        registry.promote(good, "first model")
        clock[0] = now - timedelta(minutes=10)
        registry.promote(poisoned, "retrained on a poisoned batch")
        y_pred, _ = predict_with(registry, poisoned, window)
        assert (y_pred != window["label"].to_numpy()).mean() > 0.5  # the flipped model, loaded from its own store
        versions[side] = (good, poisoned)

    for side, uri in uris.items():
        block = ModelRegistry(model_name=names[side], tracking_uri=uri)
        block_name = f"registry-{names[side]}"
        block.save(block_name)
        state = crisis_response(
            model_name=names[side], window_path=str(window_path), incident_id=f"inc-{side}", registry_block=block_name, return_state=True
        )
        assert state.name == "Recovered", state.message
        good, poisoned = versions[side]
        assert block.champion().version == good
        assert block.audit_trail("champion")[-1].to_version == good

    assert registered_names(uris["left"]) == {names["left"]}
    assert registered_names(uris["right"]) == {names["right"]}
    assert sorted(path.name for path in no_global_store.iterdir()) == []
    assert tracking_utils._tracking_uri is None, "code under test set MLflow's process-global tracking URI"

"""The fallback model end to end, against a real Prefect server and MLflow store:
training registers it once; a poisoned retrain is held back by the gate and
promoted by hand; with its only earlier version retired (nothing to return to),
crisis_response falls back to it, verifies it measured better than what served,
and the registry says `ml.fallback.engaged`; a clean retrain then beats it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from prefect_crisis.blocks import ModelRegistry, RollbackPolicy, TrainingPolicy
from prefect_crisis.deployments.inspect import read_crisis_events
from prefect_crisis.flows.response import crisis_response
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri", "crisis_home")


@pytest.fixture
def model():
    name = f"fallback-{uuid.uuid4().hex[:8]}"
    synthetic_contract(max_quarantine_ratio=0.1).save(name, overwrite=True)
    TrainingPolicy(epochs=3, batch_size=64, flag_poll_seconds=0.0).save(name, overwrite=True)
    RollbackPolicy(stability_window_minutes=60).save(name, overwrite=True)  # v1 serves seconds: never "stable"
    return name


def train(model: str, condition: str, seed: int):
    return continuous_training(
        model_name=model,
        contract_block=model,
        policy_block=model,
        synthetic_condition=condition,
        synthetic_rows=3_000,
        seed=seed,
        return_state=True,
    )


def test_with_no_stable_version_the_response_falls_back_to_the_fallback_model(model, tmp_path):
    first = train(model, "clean", seed=100)
    assert first.message.startswith("v1 promoted to champion") and "; fallback v2 registered (logistic on " in first.message
    poisoned = train(model, "poisoned", seed=102)
    assert "v3 registered as challenger, not promoted: label-quality finding" in poisoned.message, poisoned.message  # the golden set
    registry = ModelRegistry(model_name=model)
    registry.retire("1", "superseded")
    registry.promote("3", "shipped by hand past the gate")
    assert (registry.champion().version, registry.version_by_alias("fallback").version) == ("3", "2")

    window = make_batch(3_000, seed=42)
    window["timestamp"] = pd.date_range(datetime.now(UTC) - timedelta(hours=1), periods=3_000, freq="s")
    window.to_parquet(tmp_path / "window.parquet")
    state = crisis_response(
        model_name=model, window_path=str(tmp_path / "window.parquet"), incident_id="inc-fb", rollback_policy_block=model, return_state=True
    )
    assert state.name == "Recovered", state.message
    assert state.message == "incident inc-fb: fallback; champion v3 -> v2"
    assert state.result()["decision"]["decision"] == "fallback" and state.result()["recovery"]["champion_after"] == "2"
    assert registry.champion().version == "2"
    last = registry.audit_trail("champion")[-1]
    assert (last.action, last.from_version, last.to_version, last.incident) == ("fallback", "3", "2", "inc-fb")
    assert "no stable version to return to" in last.reason and "measured" in last.reason

    events = wait_for(lambda: read_crisis_events(model, prefix="ml."), lambda found: any(e.event == "ml.recovery.succeeded" for e in found))
    engaged = [e for e in events if e.event == "ml.fallback.engaged"]
    assert len(engaged) == 1, "registering the fallback must not say serving switched to it"
    assert (engaged[0].payload["from_version"], engaged[0].payload["to_version"]) == ("3", "2")
    assert any(r.id == "ml.incident.inc-fb" for r in engaged[0].related)
    decision = next(e for e in events if e.event == "ml.decision.taken")
    assert decision.payload["decision"] == "fallback" and decision.payload["target_version"] is None
    succeeded = next(e for e in events if e.event == "ml.recovery.succeeded")
    attempts = succeeded.payload["attempts"]
    assert [(a["strategy"], a["version"], a["verified"]) for a in attempts] == [("rollback", None, None), ("fallback", "2", True)]
    assert attempts[1]["detail"].startswith("fallback v2 accuracy ") and "serving before (a stopgap)" in attempts[1]["detail"]

    # The fallback reads a few columns; a clean retrain is judged against it on those and beats it (the guards, on
    # metrics a fallback is not judged by, are not applied against it: a fallback serving must never block the way back)
    retrain = train(model, "clean", seed=103)
    assert retrain.message.startswith("v4 promoted to champion"), retrain.message
    assert "guards are not applied against the fallback model" in retrain.message and registry.champion().version == "4"
    assert registry.version_by_alias("fallback").version == "2"
    candidate = retrain.result()
    assert candidate.champion_version == "2"
    # scored on the retrain's holdout through its own three columns, not its recorded metrics
    assert candidate.champion_metrics != registry.version("2").metrics and candidate.champion_metrics["accuracy"] > 0.8

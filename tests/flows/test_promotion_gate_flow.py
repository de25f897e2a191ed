"""The promotion gate refuses a candidate judged on a holdout too small to tell
anything: a 10-row batch leaves 2 holdout rows, on which a candidate was
promoted before ("accuracy 1.0000 beats the champion 0.0000", or "no champion
yet" for a first model). A small batch now holds out up to half its rows; 5 of
10 are still below the floor, and the message names the setting."""

from __future__ import annotations

import uuid

import pytest

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.synthetic import synthetic_contract

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")


def test_a_candidate_on_a_tiny_holdout_is_registered_but_not_promoted(tmp_path):
    model = f"gate-{uuid.uuid4().hex[:8]}"
    synthetic_contract(max_quarantine_ratio=0.5).save(model, overwrite=True)
    TrainingPolicy(epochs=2, batch_size=50, flag_poll_seconds=0.0).save(model, overwrite=True)

    state = continuous_training(
        model_name=model, contract_block=model, policy_block=model, storage=str(tmp_path), synthetic_rows=10, seed=2, return_state=True
    )
    assert state.is_completed(), state.message
    assert state.message == (
        "v1 registered as challenger, not promoted: holdout of 5 rows is below min_holdout_rows 50: train on a batch of 100 rows "
        "or more, or lower min_holdout_rows in the TrainingPolicy; no fallback registered (holdout of 5 rows is below min_holdout_rows 50)"
    )
    registry = ModelRegistry(model_name=model)
    assert registry.champion() is None and registry.version_by_alias("challenger").version == "1"
    assert registry.version_by_alias("fallback") is None and [v.version for v in registry.versions()] == ["1"]

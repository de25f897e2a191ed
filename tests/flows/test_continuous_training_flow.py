"""continuous_training against a real Prefect server and a real MLflow store:
stop flag, NaN guard, resume, registration, promotion, audit, events."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.deployments.inspect import read_crisis_events
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.training.checkpoints import latest_checkpoint_run, load_checkpoint, training_experiment
from prefect_crisis.tasks.training.loop import learner_of
from prefect_crisis.tasks.training.promotion import log_candidate
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, set_stop_flag
from prefect_crisis.tasks.training.stopping import StopKind
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")


@pytest.fixture
def model():
    return f"train-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def contract_block(model):
    synthetic_contract(max_quarantine_ratio=0.1).save(model, overwrite=True)
    return model


def policy_block(name: str, **fields) -> str:
    TrainingPolicy(**{"epochs": 3, "batch_size": 50, "flag_poll_seconds": 0.0, **fields}).save(name, overwrite=True)
    return name


def training_runs(model: str) -> list:
    client = MlflowClient()
    return client.search_runs([training_experiment(client, model)], order_by=["attributes.start_time ASC"])


def test_first_training_registers_and_promotes_with_events(model, contract_block, tmp_path):
    state = continuous_training(model_name=model, contract_block=contract_block, synthetic_rows=3_000, storage=str(tmp_path), return_state=True)
    assert state.is_completed() and state.message.startswith("v1 promoted to champion")
    registry = ModelRegistry(model_name=model)
    champion = registry.champion()
    assert champion.version == "1" and champion.metrics["accuracy"] > 0.8
    assert registry.version_by_alias("challenger").version == "1"
    assert champion.tags["crisis.fingerprint"] and champion.tags["crisis.flow_run_id"] == str(state.state_details.flow_run_id)
    assert state.message.endswith("; fallback v2 registered (logistic on f00, f01, f02)")
    assert registry.version_by_alias("fallback").version == "2"
    events = wait_for(lambda: read_crisis_events(model), lambda found: len(found) >= 6)
    assert [e.event for e in events] == [
        "ml.data.validated",
        "ml.training.started",
        "ml.training.completed",
        "ml.model.registered",
        "ml.model.promoted",
        "ml.model.registered",  # the fallback: registered, not engaged
    ]
    promoted = events[-2]
    assert promoted.payload["to_version"] == "1" and promoted.payload["from_version"] is None
    assert any(r.id == f"ml.model-version.{model}.1" for r in promoted.related)
    assert events[-1].payload["version"] == "2"


def test_stop_flag_halts_within_one_mini_batch_with_a_loadable_checkpoint(model, contract_block, tmp_path):
    set_stop_flag(model, "labels are late")
    try:
        state = continuous_training(
            model_name=model,
            contract_block=contract_block,
            policy_block=policy_block(model),
            synthetic_rows=3_000,
            storage=str(tmp_path),
            return_state=True,
        )
    finally:
        clear_stop_flag(model)
    assert state.is_completed() and state.name == "Stopped"
    assert "stop-flag: labels are late" in state.message and "nothing registered" in state.message
    (run,) = training_runs(model)
    assert run.data.tags["crisis.status"] == "stopped" and run.info.status == "FINISHED"
    checkpoint = load_checkpoint(MlflowClient(), run.info.run_id)
    assert (checkpoint.position.epoch, checkpoint.position.batch_index) == (0, 1)  # one mini-batch, then the flag
    assert len(checkpoint.losses) == 1 and hasattr(learner_of(checkpoint.estimator), "coef_")
    assert ModelRegistry(model_name=model).versions() == []  # the partial model is never registered
    events = wait_for(lambda: read_crisis_events(model, prefix="ml.training."), lambda found: len(found) >= 2)
    stopped = events[-1]
    assert stopped.event == "ml.training.stopped" and stopped.payload["reason"] == "stop-flag"
    assert stopped.payload["checkpoint_uri"] == f"runs:/{run.info.run_id}/checkpoint"


def test_resume_continues_from_the_checkpoint_and_registers_once(model, contract_block, tmp_path):
    policy = policy_block(model)
    set_stop_flag(model, "pause")
    continuous_training(model_name=model, contract_block=contract_block, policy_block=policy, synthetic_rows=3_000, storage=str(tmp_path))
    clear_stop_flag(model)
    stopped_run = latest_checkpoint_run(MlflowClient(), model)
    assert stopped_run is not None

    state = continuous_training(
        model_name=model, contract_block=contract_block, policy_block=policy, synthetic_rows=3_000, storage=str(tmp_path), return_state=True
    )
    assert state.is_completed() and state.name == "Completed"
    first, second = training_runs(model)
    assert second.data.tags["crisis.resumed_from"] == stopped_run == first.info.run_id
    assert first.data.tags["crisis.resumed_by"] == second.info.run_id
    losses = MlflowClient().get_metric_history(second.info.run_id, "batch_loss")
    kept_rows = int(3_000 * 0.8)  # holdout is 20%
    assert len(losses) == 3 * -(-kept_rows // 50)  # every mini-batch of 3 epochs, the first one included via the checkpoint
    assert [v.version for v in ModelRegistry(model_name=model).versions()] == ["2", "1"]  # v2: the fallback
    assert latest_checkpoint_run(MlflowClient(), model) is None  # nothing left to resume


def test_flag_raised_while_training_runs_stops_it_early(model, contract_block, tmp_path):
    policy = policy_block(model, epochs=200, batch_size=20)

    def raise_flag_once_training_runs():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = training_runs(model)
            if runs and runs[0].data.tags.get("crisis.status") == "running":
                set_stop_flag(model, "raised mid-run")
                return
            time.sleep(0.05)

    raiser = threading.Thread(target=raise_flag_once_training_runs)
    raiser.start()
    try:
        state = continuous_training(
            model_name=model, contract_block=contract_block, policy_block=policy, synthetic_rows=2_000, storage=str(tmp_path), return_state=True
        )
    finally:
        raiser.join()
        clear_stop_flag(model)
    assert state.name == "Stopped" and "raised mid-run" in state.message
    checkpoint = load_checkpoint(MlflowClient(), training_runs(model)[0].info.run_id)
    assert checkpoint.position.epoch < 200


def test_nan_loss_stops_training_as_failed_and_registers_nothing(model, contract_block, tmp_path):
    policy = policy_block(model, estimator_params={"learning_rate": "constant", "eta0": 1e308})
    state = continuous_training(
        model_name=model, contract_block=contract_block, policy_block=policy, synthetic_rows=2_000, storage=str(tmp_path), return_state=True
    )
    assert state.is_failed() and state.name == "Stopped" and "non-finite-loss" in state.message
    (run,) = training_runs(model)
    assert run.info.status == "FAILED" and run.data.tags[TagKey.STOP_KIND] == StopKind.NON_FINITE_LOSS
    checkpoint = load_checkpoint(MlflowClient(), run.info.run_id)
    assert checkpoint.position.epoch == 0  # the first of 3 epochs blew up: the checkpoint is where it stopped, not the end
    assert ModelRegistry(model_name=model).versions() == []


def test_a_rejected_batch_trains_nothing(model, contract_block, tmp_path):
    state = continuous_training(
        model_name=model, contract_block=contract_block, synthetic_condition="broken", storage=str(tmp_path), return_state=True
    )
    assert state.name == "Skipped" and "quarantine ratio" in state.message
    assert training_runs(model) == []


def test_audit_answers_what_was_serving_when_after_two_promotions(model):
    client = MlflowClient()
    clock_now = [datetime(2026, 11, 1, 12, 0, tzinfo=UTC)]
    registry = ModelRegistry(model_name=model).use(clock=lambda: clock_now[0])
    X = make_batch(500, seed=1)[["f00", "f01"]].to_numpy()
    y = (X[:, 0] > 0).astype(int)
    from sklearn.linear_model import LogisticRegression

    versions = []
    for _ in range(2):
        run = client.create_run(training_experiment(client, model))
        info = log_candidate(LogisticRegression().fit(X, y), X, run.info.run_id, client)
        versions.append(registry.register_version(info.model_uri, run.info.run_id, info.model_id, {}).version)
    assert versions == ["1", "2"]

    before = clock_now[0]
    clock_now[0] = before + timedelta(hours=1)
    registry.promote("1", "first model", incident=None)
    clock_now[0] = before + timedelta(hours=5)
    registry.promote("2", "better", incident="inc-7")

    assert registry.serving_at(before) is None
    assert registry.serving_at(before + timedelta(hours=2)) == "1"
    assert registry.serving_at(before + timedelta(hours=5)) == "2"
    assert registry.serving_at(before + timedelta(days=3)) == "2"
    assert registry.champion().version == "2" and registry.champion_since() == before + timedelta(hours=5)
    moves = registry.audit_trail("champion")
    assert [(m.from_version, m.to_version, m.reason, m.incident) for m in moves] == [(None, "1", "first model", None), ("1", "2", "better", "inc-7")]

    assert [(m.action, m.alias, m.to_version) for m in registry.history("1")] == [
        ("register", "", "1"),
        ("promote", "champion", "1"),
        ("promote", "champion", "2"),
    ]

    registry.retire("1", "poisoned data")
    assert registry.version("1").retired
    with pytest.raises(RegistryError, match="retired"):
        registry.promote("1", "roll back")
    assert registry.champion().version == "2"  # a refused move leaves the alias where it was
    assert [v.version for v in registry.versions()] == ["2", "1"]  # never deleted


def test_blocks_register_and_round_trip_through_the_server(model):
    from prefect_crisis.blocks import DataContract

    for block_type in (DataContract, ModelRegistry, TrainingPolicy):
        block_type.register_type_and_schema()
    ModelRegistry(model_name=model, champion_alias="live").save(model, overwrite=True)
    TrainingPolicy(epochs=7, guard_metrics={"log_loss": 0.01}).save(model, overwrite=True)
    assert ModelRegistry.load(model).champion_alias == "live"
    assert TrainingPolicy.load(model).guard_metrics == {"log_loss": 0.01}

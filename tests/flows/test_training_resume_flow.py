"""Which checkpoint a training run resumes, and what an interruption leaves behind,
against a real Prefect server and a real MLflow store."""

from __future__ import annotations

import os
import signal
import threading
import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from prefect import flow

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.training.checkpoints import latest_checkpoint_run, load_checkpoint, training_experiment
from prefect_crisis.tasks.training.data import split_training_data
from prefect_crisis.tasks.training.loop import learner_of
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, set_stop_flag
from prefect_crisis.tasks.training.stopping import StopCondition, StopKind, StopReason, TrainingProgress
from prefect_crisis.tasks.training.tasks import train_model

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")

ROWS = 2_000
BATCHES_PER_EPOCH = -(-int(ROWS * 0.8) // 50)  # holdout is 20%, 50 rows a mini-batch


@pytest.fixture
def model():
    name = f"resume-{uuid.uuid4().hex[:8]}"
    synthetic_contract(max_quarantine_ratio=0.1).save(name, overwrite=True)
    return name


def save_policy(name: str, **fields) -> str:
    TrainingPolicy(**{"epochs": 3, "batch_size": 50, "flag_poll_seconds": 0.0, **fields}).save(name, overwrite=True)
    return name


def train(model: str, policy: str, **parameters):
    return continuous_training(model_name=model, contract_block=model, policy_block=policy, synthetic_rows=ROWS, return_state=True, **parameters)


def assert_same_model(resumed, uninterrupted) -> None:
    """Exactly the same model: the scaler fitted before the first mini-batch and the learner's weights."""
    assert [name for name, _ in resumed.steps] == [name for name, _ in uninterrupted.steps] == ["scale", "sgd"]
    np.testing.assert_array_equal(resumed.named_steps["scale"].scale_, uninterrupted.named_steps["scale"].scale_)
    np.testing.assert_array_equal(learner_of(resumed).coef_, learner_of(uninterrupted).coef_)
    np.testing.assert_array_equal(learner_of(resumed).intercept_, learner_of(uninterrupted).intercept_)


def stop_by_flag(model: str, policy: str, tmp_path) -> str:
    set_stop_flag(model, "pause")
    try:
        assert train(model, policy, storage=str(tmp_path)).name == "Stopped"
    finally:
        clear_stop_flag(model)
    return latest_checkpoint_run(MlflowClient(), model)


def training_runs(model: str) -> list:
    client = MlflowClient()
    return client.search_runs([training_experiment(client, model)], order_by=["attributes.start_time ASC"])


@flow
def train_once(model: str, resume: bool = True, also_stop_when: StopCondition | None = None, **policy_fields):
    """train_model alone (no promotion) on one synthetic batch, in a small flow."""
    policy = TrainingPolicy(**{"epochs": 2, "batch_size": 50, "flag_poll_seconds": 0.0, **policy_fields})
    data = split_training_data(make_batch(ROWS, seed=3), policy, fingerprint="batch-3")
    return train_model(data, policy, ModelRegistry(model_name=model), resume, also_stop_when)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"estimator": "mlp"}, "other-estimator"),
        ({"estimator_params": {"alpha": 1e-3}}, "other-parameters"),
        ({"batch_size": 40}, "other-batch-layout"),
        ({"seed": 1}, "other-batch-layout"),
        ({"holdout_fraction": 0.3}, "other-data"),
    ],
)
def test_a_checkpoint_is_not_resumed_under_another_estimator_parameters_or_batch_layout(model, change, refusal):
    set_stop_flag(model, "pause")
    try:
        stopped = train_once(model)
    finally:
        clear_stop_flag(model)
    assert not stopped.outcome.completed

    again = train_once(model, **change)

    assert again.resumed_from is None and again.resume.refusal.value == refusal
    learner = type(learner_of(again.outcome.estimator)).__name__
    assert again.outcome.completed and learner == ("MLPClassifier" if "estimator" in change else "SGDClassifier")
    first, second = training_runs(model)
    assert second.data.tags["crisis.resumed_from"] == "" and second.data.tags["crisis.resume_refused"].startswith(refusal)
    assert "crisis.resumed_by" not in first.data.tags
    rows = int(ROWS * (1 - change.get("holdout_fraction", 0.2)))
    assert again.outcome.progress.batches_seen == 2 * -(-rows // change.get("batch_size", 50))  # every mini-batch, from scratch


def test_a_refused_resume_is_said_in_the_flow_runs_message(model, tmp_path):
    stopped_run = stop_by_flag(model, save_policy(model), tmp_path)
    state = train(model, save_policy(f"{model}-other", batch_size=40), storage=str(tmp_path))
    assert state.is_completed() and state.message.startswith("v1 promoted to champion")
    assert f"not resuming the checkpoint of run {stopped_run} (other-batch-layout: batch_size was 50, is 40); training from scratch" in state.message


def test_a_failure_stop_is_kept_for_diagnosis_and_never_resumed(model, tmp_path):
    exploding = save_policy(model, estimator_params={"learning_rate": "constant", "eta0": 1e308})
    assert train(model, exploding, storage=str(tmp_path)).is_failed()
    failed_run = training_runs(model)[0].info.run_id

    state = train(model, exploding, storage=str(tmp_path))

    assert f"not resuming the checkpoint of run {failed_run} (failure-stop: it stopped on non-finite-loss" in state.message
    first, second = training_runs(model)
    assert second.data.tags["crisis.resumed_from"] == "" and "crisis.resumed_by" not in first.data.tags
    assert load_checkpoint(MlflowClient(), failed_run).position.batch_index >= 1  # still there to diagnose


def test_a_resume_under_the_same_policy_still_continues(model, tmp_path):
    policy = save_policy(model)
    stopped_run = stop_by_flag(model, policy, tmp_path)
    state = train(model, policy, storage=str(tmp_path))
    assert state.is_completed() and "not resuming" not in state.message
    assert training_runs(model)[1].data.tags["crisis.resumed_from"] == stopped_run


class ctrl_c_after(StopCondition):
    """Presses Ctrl-C (a real SIGINT to this process) after `batches` mini-batches."""

    def __init__(self, batches: int):
        self.batches = batches

    def __call__(self, progress: TrainingProgress):
        if progress.batches_seen == self.batches:
            signal.raise_signal(signal.SIGINT)
        return None


def test_ctrl_c_ends_the_run_killed_and_the_next_run_resumes_it_exactly(model):
    client = MlflowClient()
    # What Ctrl-C does in a terminal; a shell running the tests in the background starts them with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_once(model, resume=True, also_stop_when=ctrl_c_after(BATCHES_PER_EPOCH + 5))
    finally:
        signal.signal(signal.SIGINT, previous)
    (interrupted,) = training_runs(model)
    assert interrupted.info.status == "KILLED"
    assert interrupted.data.tags["crisis.status"] == "stopped" and interrupted.data.tags["crisis.stop_kind"] == "interrupted"
    checkpoint = load_checkpoint(client, interrupted.info.run_id)
    assert (checkpoint.position.epoch, checkpoint.position.batch_index) == (1, 5)

    resumed = train_once(model, resume=True)
    assert resumed.resumed_from == interrupted.info.run_id and resumed.outcome.completed
    uninterrupted = train_once(model, resume=False)
    assert uninterrupted.resumed_from is None
    assert_same_model(resumed.outcome.estimator, uninterrupted.outcome.estimator)
    assert resumed.outcome.progress.batches_seen == uninterrupted.outcome.progress.batches_seen == 2 * BATCHES_PER_EPOCH


class WritesAFile:
    """Unpickling this creates `path`: what a hostile checkpoint could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_a_pickled_checkpoint_left_in_the_store_is_refused_not_loaded(model, tmp_path):
    import json
    import pickle

    client = MlflowClient()
    run_id = client.create_run(
        training_experiment(client, model), tags={"crisis.status": "stopped", "crisis.stop_reason": "stop-flag: pause"}
    ).info.run_id
    marker, folder = tmp_path / "code-ran", tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text(
        json.dumps({"epoch": 0, "batch_index": 1, "fingerprint": "batch-3", "losses": [0.5], "estimator": "SGDClassifier"})
    )
    (folder / "estimator.pkl").write_bytes(pickle.dumps(WritesAFile(marker)))
    client.log_artifacts(run_id, str(folder), artifact_path="checkpoint")
    client.set_tag(run_id, "crisis.checkpoint", "true")
    client.set_terminated(run_id, "FINISHED")

    training = train_once(model)

    assert not marker.exists()
    assert training.resume.run_id == run_id and training.resume.refusal.value == "not-resumable"
    assert training.outcome.completed and training.outcome.progress.batches_seen == 2 * BATCHES_PER_EPOCH


KILLED_CHILD = """
import sys
from prefect import flow
from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.tasks.training.stopping import StopCondition
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.training.data import split_training_data
from prefect_crisis.tasks.training.tasks import train_model

class SayEachBatch(StopCondition):  # called after the mini-batch's checkpoint is written
    def __call__(self, progress):
        print(progress.batches_seen, flush=True)

@flow
def train_once(model):
    policy = TrainingPolicy(epochs=2, batch_size=50, flag_poll_seconds=0.0, checkpoint_every_seconds=0)
    data = split_training_data(make_batch({rows}, seed=3), policy, fingerprint="batch-3")
    return train_model(data, policy, ModelRegistry(model_name=model), True, SayEachBatch())

train_once(sys.argv[1])
"""


def test_a_training_killed_outright_resumes_losing_at_most_the_mini_batch_in_flight(model):
    """SIGKILL runs no handler: the checkpoint written after every mini-batch (checkpoint_every_seconds=0) is what
    the next run resumes, once Prefect records the killed flow run as over (a worker marks it Crashed)."""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Crashed

    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD.format(rows=ROWS), model],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    said = []
    for line in child.stdout:
        if line.strip().isdigit():
            said.append(int(line))
            if said[-1] == BATCHES_PER_EPOCH + 7:
                child.send_signal(signal.SIGKILL)  # mid-epoch, while it trains on
                break
    said += [int(line) for line in child.stdout if line.strip().isdigit()]
    assert child.wait(60) == -signal.SIGKILL
    (killed,) = training_runs(model)
    assert killed.info.status == "RUNNING"  # nothing ran to close it
    with get_client(sync_client=True) as client:  # what the worker does when its flow-run process dies
        client.set_flow_run_state(killed.data.tags["crisis.flow_run_id"], Crashed(message="exited with -9"), force=True)

    client = MlflowClient()
    checkpoint = load_checkpoint(client, killed.info.run_id)
    durable = checkpoint.position.epoch * BATCHES_PER_EPOCH + checkpoint.position.batch_index
    assert said[-1] <= durable <= said[-1] + 1  # lost: at most the mini-batch in flight when the kill came

    resumed = train_once(model)

    killed = client.get_run(killed.info.run_id)
    assert killed.info.status == "FAILED" and killed.data.tags["crisis.stop_kind"] == "killed"
    assert resumed.resumed_from == killed.info.run_id and resumed.outcome.completed
    uninterrupted = train_once(model, resume=False)
    assert_same_model(resumed.outcome.estimator, uninterrupted.outcome.estimator)
    assert resumed.outcome.progress.batches_seen == 2 * BATCHES_PER_EPOCH


def test_a_training_run_of_a_live_flow_run_is_never_taken_over(model):
    """A RUNNING training run whose flow run has not ended is someone's training in progress: left alone."""
    from prefect import get_client as _unused  # noqa: F401

    from prefect_crisis.tasks.training.checkpoints import close_killed_runs

    client = MlflowClient()
    live = client.create_run(training_experiment(client, model), tags={"crisis.flow_run_id": str(uuid.uuid4())}).info.run_id
    assert close_killed_runs(client, model, lambda flow_run_id: False) == []
    assert client.get_run(live).info.status == "RUNNING"
    assert close_killed_runs(client, model, lambda flow_run_id: flow_run_id != "") == [live]
    assert client.get_run(live).data.tags["crisis.stop_kind"] == "killed"


def test_a_resumed_run_killed_before_its_first_checkpoint_leaves_the_earlier_checkpoint_resumable(model):
    from prefect_crisis.tasks.training.checkpoints import close_killed_runs

    set_stop_flag(model, "pause")
    try:
        stopped = train_once(model)
    finally:
        clear_stop_flag(model)
    client = MlflowClient()
    earlier = stopped.run_id
    killed = client.create_run(
        training_experiment(client, model), tags={"crisis.flow_run_id": str(uuid.uuid4()), "crisis.resumed_from": earlier}
    ).info.run_id
    client.set_tag(earlier, "crisis.resumed_by", killed)
    assert close_killed_runs(client, model, lambda flow_run_id: True) == [killed]
    assert latest_checkpoint_run(client, model) == earlier  # not lost with the run that never wrote one


def test_two_trainings_started_at_once_resume_one_checkpoint_once(model):
    """Both find the same stopped run's checkpoint; choosing and claiming it is one step per model (the training
    slot), so one resumes it and the other, seeing the claim, trains from scratch and says why."""
    from concurrent.futures import ThreadPoolExecutor

    set_stop_flag(model, "pause")
    try:
        stopped = train_once(model)
    finally:
        clear_stop_flag(model)
    both_training = threading.Barrier(2, timeout=120)

    class MeetOnce(StopCondition):  # after its first mini-batch, each waits until the other trains too: they overlap
        def __init__(self) -> None:
            self.met = False

        def __call__(self, progress):
            if not self.met:
                self.met = True
                both_training.wait()

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(train_once, model, also_stop_when=MeetOnce()) for _ in range(2)]
        trainings = [future.result(timeout=240) for future in futures]
    resumed = [training for training in trainings if training.resumed_from == stopped.run_id]
    refused = [training for training in trainings if training.resume.refusal is not None]
    assert len(resumed) == 1 and len(refused) == 1, [str(training.resume) for training in trainings]
    assert refused[0].resume.refusal.value == "resumed-elsewhere" and resumed[0].run_id in refused[0].resume.detail
    assert all(training.outcome.completed for training in trainings)
    tags = MlflowClient().get_run(refused[0].run_id).data.tags
    assert tags["crisis.resumed_from"] == "" and tags["crisis.resume_refused"].startswith("resumed-elsewhere")


def test_a_checkpoint_claimed_by_a_run_killed_before_its_first_checkpoint_is_resumed_by_the_next(model):
    from prefect_crisis.tasks.training.checkpoints import close_killed_runs, resuming_run

    set_stop_flag(model, "pause")
    try:
        stopped = train_once(model)
    finally:
        clear_stop_flag(model)
    client = MlflowClient()
    claimant = client.create_run(
        training_experiment(client, model), tags={"crisis.flow_run_id": str(uuid.uuid4()), "crisis.resumed_from": stopped.run_id}
    ).info.run_id  # a training that claimed it, then died
    assert resuming_run(client, model, stopped.run_id) == claimant  # its claim holds while it may live
    assert close_killed_runs(client, model, lambda flow_run_id: flow_run_id != "") == [claimant]  # its flow run is over: closed
    assert resuming_run(client, model, stopped.run_id) is None
    resumed = train_once(model)
    assert resumed.resumed_from == stopped.run_id and resumed.outcome.completed
    assert client.get_run(claimant).data.tags["crisis.stop_kind"] == "killed"


class CountCalls(StopCondition):
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls, self.stop_after = 0, stop_after

    def __call__(self, progress):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            return StopReason(StopKind.FLAG, "asked by the test")
        return None


def test_with_the_family_chosen_by_the_policy_a_stopped_training_resumes_in_that_family_exactly(model):
    """estimator="auto": the comparison runs once; a stop during the training proper leaves a checkpoint of the
    chosen family, which the next run resumes (no second comparison) to the very model an uninterrupted run trains."""
    from prefect_crisis.tasks.training.family import choose_family, family_of

    policy = TrainingPolicy(estimator="auto", epochs=2, batch_size=50, flag_poll_seconds=0.0)
    data = split_training_data(make_batch(ROWS, seed=3), policy, fingerprint="batch-3")
    counting = CountCalls()
    choice = choose_family(data.X_train, data.y_train, data.classes, epochs=2, batch_size=50, seed=0, scale=True, impute=data.imputes, stop=counting)
    stopped = train_once(model, also_stop_when=CountCalls(stop_after=counting.calls + 5), estimator="auto")
    assert stopped.outcome.stop_reason is not None and stopped.outcome.stop_reason.kind is StopKind.FLAG
    client = MlflowClient()
    tags = client.get_run(stopped.run_id).data.tags
    assert tags["crisis.family"] == choice.family and tags["crisis.checkpoint"] == "true"
    assert tags["crisis.family_choice"] == str(choice)

    resumed = train_once(model, estimator="auto")
    assert resumed.resumed_from == stopped.run_id and resumed.outcome.completed
    resumed_tags = client.get_run(resumed.run_id).data.tags
    assert resumed_tags["crisis.family"] == choice.family and "crisis.family_choice" not in resumed_tags  # no second comparison
    uninterrupted = train_once(model, resume=False, estimator="auto")
    assert family_of(resumed.outcome.estimator) == family_of(uninterrupted.outcome.estimator) == choice.family
    np.testing.assert_array_equal(
        resumed.outcome.estimator.predict_proba(data.X_holdout), uninterrupted.outcome.estimator.predict_proba(data.X_holdout)
    )


def test_a_stop_flag_raised_before_the_comparison_ends_stops_the_run_with_nothing_to_resume(model):
    set_stop_flag(model, "pause")
    try:
        stopped = train_once(model, estimator="auto")
    finally:
        clear_stop_flag(model)
    assert stopped.outcome.stop_reason is not None and stopped.outcome.checkpoint_uri is None
    tags = MlflowClient().get_run(stopped.run_id).data.tags
    assert tags["crisis.status"] == "stopped" and tags["crisis.stop_kind"] == "stop-flag" and "crisis.family" not in tags
    assert latest_checkpoint_run(MlflowClient(), model) is None

"""Checkpoint files (skops + JSON, never pickle) and the resume decision, as plain functions
and against a real MLflow SQLite store."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.tasks.training.checkpoints import (
    load_checkpoint,
    read_checkpoint_files,
    save_checkpoint,
    training_experiment,
    write_checkpoint_files,
)
from prefect_crisis.tasks.training.loop import Checkpoint, learner_of, make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training.resume import ResumeKey, ResumeRefusal, decide_resume
from prefect_crisis.tasks.training.stopping import StopKind, stop_after_seconds, stop_when_flag_set

CLASSES = np.array([0, 1])
KEY = ResumeKey("fp", "label", ("f0", "f1"), 0.2, "sgd", "{}", 100, 0)


def data(rows: int = 2_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def stopped_at_batch(kind: str, params: dict, batch: int) -> Checkpoint:
    X, y = data()
    saved: list[Checkpoint] = []
    calls = iter(range(1_000))
    train_with_stop_hook(
        make_estimator(kind, params),
        X,
        y,
        classes=CLASSES,
        epochs=2,
        batch_size=100,
        stop=stop_when_flag_set(lambda: "stop" if next(calls) == batch else None, poll_seconds=0),
        on_stop=lambda c: saved.append(c) or "ck",
    )
    return saved[0]


class WritesAFile:
    """Unpickling this creates `path`: what a hostile checkpoint could do instead."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.usefixtures("mlflow_tracking_uri")
def test_a_pickle_in_the_artifact_store_is_never_loaded(tmp_path):
    client = MlflowClient()
    run_id = client.create_run(training_experiment(client, "pickled")).info.run_id
    marker = tmp_path / "code-ran"
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({"epoch": 0, "batch_index": 1, "fingerprint": "fp", "losses": [0.5], "estimator": "SGDClassifier"}))
    (folder / "estimator.pkl").write_bytes(pickle.dumps(WritesAFile(marker)))
    client.log_artifacts(run_id, str(folder), artifact_path="checkpoint")

    with pytest.raises(TrainingError, match="never loaded"):
        load_checkpoint(client, run_id)
    assert not marker.exists()


@pytest.mark.usefixtures("mlflow_tracking_uri")
@pytest.mark.parametrize(
    ("kind", "params"), [("sgd", {}), ("sgd", {"average": True}), ("mlp", {"learning_rate_init": 0.01}), ("mlp", {"solver": "sgd"})]
)
def test_a_checkpoint_through_mlflow_resumes_exactly_like_an_uninterrupted_run(kind, params):
    X, y = data()
    uninterrupted = train_with_stop_hook(make_estimator(kind, params), X, y, classes=CLASSES, epochs=2, batch_size=100, stop=stop_after_seconds(60))
    client = MlflowClient()
    run_id = client.create_run(training_experiment(client, "round-trip")).info.run_id
    save_checkpoint(client, run_id, stopped_at_batch(kind, params, 24), KEY)

    loaded = load_checkpoint(client, run_id)
    resumed = train_with_stop_hook(
        make_estimator(kind, params), X, y, classes=CLASSES, epochs=2, batch_size=100, stop=stop_after_seconds(60), resume_from=loaded
    )
    assert (loaded.position.epoch, loaded.position.batch_index) == (1, 5) and len(loaded.losses) == 25
    assert resumed.completed and resumed.progress.batches_seen == uninterrupted.progress.batches_seen
    if kind == "sgd":
        np.testing.assert_array_equal(learner_of(resumed.estimator).coef_, learner_of(uninterrupted.estimator).coef_)
        np.testing.assert_array_equal(learner_of(resumed.estimator).intercept_, learner_of(uninterrupted.estimator).intercept_)
    else:
        for resumed_layer, uninterrupted_layer in zip(learner_of(resumed.estimator).coefs_, learner_of(uninterrupted.estimator).coefs_, strict=True):
            np.testing.assert_array_equal(resumed_layer, uninterrupted_layer)


class NotAnEstimatorPart:
    pass


def test_a_skops_file_naming_an_untrusted_type_is_refused(tmp_path):
    checkpoint = stopped_at_batch("sgd", {}, 3)
    checkpoint.estimator.extra_ = NotAnEstimatorPart()
    write_checkpoint_files(tmp_path, checkpoint, KEY)
    with pytest.raises(ValueError, match=r"not trusted.*NotAnEstimatorPart"):
        read_checkpoint_files(tmp_path)


def test_non_finite_losses_survive_the_json_state(tmp_path):
    checkpoint = stopped_at_batch("sgd", {}, 3)
    write_checkpoint_files(tmp_path, Checkpoint(checkpoint.estimator, checkpoint.position, "fp", (0.5, float("nan"))), KEY)
    json.loads((tmp_path / "state-0.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    losses = read_checkpoint_files(tmp_path).losses
    assert losses[0] == 0.5 and np.isnan(losses[1])


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("fingerprint", "other", ResumeRefusal.OTHER_DATA),
        ("features", ("f0",), ResumeRefusal.OTHER_DATA),
        ("holdout_fraction", 0.3, ResumeRefusal.OTHER_DATA),
        ("label_column", "target", ResumeRefusal.OTHER_DATA),
        ("estimator", "mlp", ResumeRefusal.OTHER_ESTIMATOR),
        ("estimator_params", '{"alpha": 0.001}', ResumeRefusal.OTHER_PARAMETERS),
        ("batch_size", 50, ResumeRefusal.OTHER_BATCH_LAYOUT),
        ("seed", 1, ResumeRefusal.OTHER_BATCH_LAYOUT),
        ("holdout_rows", 400, ResumeRefusal.OTHER_DATA),
        ("split", "stratified", ResumeRefusal.OTHER_DATA),
        ("preprocessing", "standard-scaler", ResumeRefusal.OTHER_ESTIMATOR),
    ],
)
def test_any_difference_in_the_resume_key_refuses_and_names_the_field(field, value, refusal):
    wanted = ResumeKey(**{**KEY.to_dict(), "features": KEY.features, field: value})
    decision = decide_resume("r1", KEY, StopKind.FLAG, wanted, 1, 5)
    assert not decision.resume and decision.refusal is refusal and decision.detail.startswith(f"{field} was ")
    assert str(decision).startswith("not resuming the checkpoint of run r1") and str(decision).endswith("training from scratch")


@pytest.mark.parametrize("kind", list(StopKind))
def test_only_failure_stops_are_never_resumed(kind):
    decision = decide_resume("r1", KEY, kind, KEY, 1, 5)
    assert decision.resume is not kind.is_failure
    assert kind.is_failure is (kind in (StopKind.NON_FINITE_LOSS, StopKind.DIVERGED))
    if kind.is_failure:
        assert decision.refusal is ResumeRefusal.FAILURE_STOP and "kept for diagnosis" in decision.detail


def test_a_checkpoint_without_a_key_or_past_the_last_epoch_is_not_resumed():
    assert decide_resume("r1", None, StopKind.FLAG, KEY, 1, 5).refusal is ResumeRefusal.NOT_RESUMABLE
    assert decide_resume("r1", KEY, None, KEY, 1, 5).refusal is ResumeRefusal.NOT_RESUMABLE
    assert decide_resume("r1", KEY, StopKind.FLAG, KEY, 5, 5).resume  # stopped after the last mini-batch: nothing left to train
    assert decide_resume("r1", KEY, StopKind.FLAG, KEY, 6, 5).refusal is ResumeRefusal.OTHER_BATCH_LAYOUT


def test_the_key_round_trips_through_json():
    assert ResumeKey.from_dict(json.loads(json.dumps(KEY.to_dict()))) == KEY
    with pytest.raises(ValueError, match="lacks"):
        ResumeKey.from_dict({"fingerprint": "fp"})


def test_a_checkpoint_of_the_unscaled_estimator_on_the_old_split_is_refused_not_resumed():
    """A key written before scaling and the stratified split reads as unscaled and shuffled: refused, so a run
    never continues weights learnt on raw values through a scaler."""
    from prefect_crisis.blocks import TrainingPolicy

    older = {name: value for name, value in KEY.to_dict().items() if name not in ("holdout_rows", "split", "preprocessing")}
    stored = ResumeKey.from_dict(older)
    policy = TrainingPolicy(batch_size=100)
    wanted = ResumeKey.of(policy, "fp", ["f0", "f1"], holdout_rows=400, preprocessing="standard-scaler")
    decision = decide_resume("r1", stored, StopKind.FLAG, wanted, 1, 5)
    assert decision.refusal is ResumeRefusal.OTHER_DATA and decision.detail == "holdout_rows was 0, is 400"


def test_the_resume_modules_docstring_examples_run():
    import doctest

    from prefect_crisis.tasks.training import resume

    result = doctest.testmod(resume, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_write_cut_off_by_a_kill_costs_that_checkpoint_only(tmp_path):
    """Slots alternate and a state names its estimator's hash: a torn estimator or a torn state falls back to the
    checkpoint before it, never to nothing."""
    first = stopped_at_batch("sgd", {}, 3)
    second = stopped_at_batch("sgd", {}, 5)
    write_checkpoint_files(tmp_path, first, KEY, sequence=0)
    estimator_1, state_1 = write_checkpoint_files(tmp_path, second, KEY, sequence=1)
    assert read_checkpoint_files(tmp_path).position == second.position

    whole = estimator_1.read_bytes()
    estimator_1.write_bytes(whole[: len(whole) // 2])  # killed halfway through the estimator
    assert read_checkpoint_files(tmp_path).position == first.position

    estimator_1.write_bytes(whole)
    state_1.write_text(state_1.read_text()[:40])  # killed halfway through the state that names it
    assert read_checkpoint_files(tmp_path).position == first.position

    for path in tmp_path.iterdir():
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="no readable state"):
        read_checkpoint_files(tmp_path)


def test_periodic_checkpoints_follow_the_interval_and_never_repeat_a_position():
    X, y = data()
    written: list[Checkpoint] = []
    ticks = iter(range(10_000))
    outcome = train_with_stop_hook(
        make_estimator(),
        X,
        y,
        classes=CLASSES,
        epochs=2,
        batch_size=100,
        stop=stop_after_seconds(1e9),
        on_stop=lambda c: written.append(c) or "ck",
        clock=lambda: float(next(ticks)),
        checkpoint_every_seconds=0,
    )
    assert outcome.completed and outcome.progress.batches_seen == 40
    positions = [(c.position.epoch, c.position.batch_index) for c in written]
    assert len(positions) == 40 == len(set(positions))  # after every mini-batch, each once
    assert positions[0] == (0, 1) and positions[-1] == (2, 0)

    written.clear()
    ticks = iter(range(10_000))
    train_with_stop_hook(
        make_estimator(),
        X,
        y,
        classes=CLASSES,
        epochs=2,
        batch_size=100,
        stop=stop_after_seconds(1e9),
        on_stop=lambda c: written.append(c) or "ck",
        clock=lambda: float(next(ticks)),
        checkpoint_every_seconds=10,
    )
    assert 5 <= len(written) <= 10  # a few clock reads a mini-batch: one write every few mini-batches

    written.clear()
    train_with_stop_hook(
        make_estimator(),
        X,
        y,
        classes=CLASSES,
        epochs=2,
        batch_size=100,
        stop=stop_after_seconds(1e9),
        on_stop=lambda c: written.append(c) or "ck",
        checkpoint_every_seconds=None,
    )
    assert written == []  # None: only a stop writes

"""`TrainingPolicy(estimator="auto")`: the learner's family chosen on the training part's folds (one-standard-error
rule), on the bundled real data sets; the stop hook during the comparison; the choice on the run and the version."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.tasks.drills.datasets import DATASET_NAMES, load_dataset
from prefect_crisis.tasks.training.data import split_training_data
from prefect_crisis.tasks.training.family import AUTO_FAMILIES, FamilyChoice, choose_family, family_of, pick_family
from prefect_crisis.tasks.training.gate import evaluate
from prefect_crisis.tasks.training.loop import make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training.stopping import StopCondition, StopKind, StopReason, stop_after_seconds


def test_the_simplest_family_within_one_standard_error_of_the_best_is_chosen():
    clear_win = pick_family({"sgd": (0.80, 0.82, 0.81), "mlp": (0.95, 0.96, 0.94), "nb": (0.70, 0.71, 0.72)})
    assert clear_win.family == "mlp"
    within_noise = pick_family({"sgd": (0.95, 0.95, 0.95), "mlp": (0.94, 0.96, 0.98)})  # best 0.96, its SE 0.0115
    assert within_noise.family == "sgd"
    just_outside = pick_family({"sgd": (0.90, 0.90, 0.90), "mlp": (0.92, 0.93, 0.94)})  # best 0.93, its SE 0.0058
    assert just_outside.family == "mlp"
    exactly_at_the_bar = pick_family({"sgd": (0.925, 0.925, 0.925), "mlp": (0.92, 0.93, 0.93)})
    assert exactly_at_the_bar.family == "sgd"  # ties and the bar itself go to the simpler family
    assert "sgd 0.925±0.000, mlp 0.927±0.003" in str(exactly_at_the_bar) and str(exactly_at_the_bar).startswith("sgd by 3-fold")


@pytest.fixture(scope="module")
def splits():
    policy = TrainingPolicy(estimator="auto")
    return policy, {name: split_training_data(load_dataset(name).frame, policy, name) for name in DATASET_NAMES}


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_on_real_data_the_chosen_family_is_no_worse_on_the_holdout_than_the_default(splits, name):
    """The choice is made on the training part's folds only; judged on the untouched holdout, the chosen family
    is never clearly worse than the default linear learner (within 2 standard errors of the holdout)."""
    policy, found = splits
    data = found[name]
    choice = choose_family(
        data.X_train,
        data.y_train,
        data.classes,
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        seed=policy.seed,
        scale=True,
        impute=data.imputes,
        stop=stop_after_seconds(600),
    )
    assert isinstance(choice, FamilyChoice) and set(choice.fold_scores) == set(AUTO_FAMILIES)
    assert choice.mean(choice.family) >= max(choice.mean(family) for family in AUTO_FAMILIES) - choice.standard_error(
        max(AUTO_FAMILIES, key=choice.mean)
    )

    def holdout_accuracy(family: str) -> float:
        estimator = make_estimator(family, None, policy.seed, scale=True, impute=data.imputes)
        trained = train_with_stop_hook(
            estimator,
            data.X_train,
            data.y_train,
            classes=data.classes,
            epochs=policy.epochs,
            batch_size=policy.batch_size,
            stop=stop_after_seconds(600),
        )
        return evaluate(trained.estimator, data.X_holdout, data.y_holdout, data.classes)["accuracy"]

    chosen, default = holdout_accuracy(choice.family), holdout_accuracy("sgd")
    noise = 2 * np.sqrt(default * (1 - default) / len(data.y_holdout)) + 1e-9
    assert chosen >= default - noise, (str(choice), chosen, default)


class StopOnCall(StopCondition):
    def __init__(self, after: int, kind: StopKind) -> None:
        self.calls, self.after, self.kind = 0, after, kind

    def __call__(self, progress):
        self.calls += 1
        return StopReason(self.kind, "asked") if self.calls > self.after else None


def test_a_stop_flag_while_the_families_are_compared_stops_the_run_and_a_failing_family_is_left_out(splits):
    _, found = splits
    data = found["wine"]
    common = dict(epochs=2, batch_size=50, seed=0, scale=True, impute=False)
    stopped = choose_family(data.X_train, data.y_train, data.classes, stop=StopOnCall(3, StopKind.FLAG), **common)
    assert isinstance(stopped, StopReason) and stopped.kind is StopKind.FLAG

    class MlpDiverges(StopCondition):  # a failure stop on one family's folds only
        family = ""

        def __call__(self, progress):
            return StopReason(StopKind.DIVERGED, "loss grew") if self.family == "mlp" else None

    diverging = MlpDiverges()
    scores = {}
    for family in AUTO_FAMILIES:
        diverging.family = family
        result = choose_family(data.X_train, data.y_train, data.classes, stop=diverging, families=(family,), **common)
        scores[family] = result
    assert scores["mlp"].fold_scores == {} and "every family failed" in scores["mlp"].reason
    assert set(scores["sgd"].fold_scores) == {"sgd"} and set(scores["nb"].fold_scores) == {"nb"}


def test_a_class_with_one_row_leaves_the_first_family_and_says_why():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.array([0] * 20 + [1] * 19 + [2])
    choice = choose_family(X, y, np.array([0, 1, 2]), epochs=1, batch_size=10, seed=0, scale=True, impute=False, stop=stop_after_seconds(60))
    assert choice.family == "sgd" and "1 row" in choice.reason and choice.fold_scores == {}


def test_auto_with_estimator_parameters_is_refused_and_family_of_names_each_learner():
    with pytest.raises(ValueError, match="estimator_params apply to one estimator"):
        TrainingPolicy(estimator="auto", estimator_params={"alpha": 1e-3})
    assert [family_of(make_estimator(family)) for family in AUTO_FAMILIES] == list(AUTO_FAMILIES)
    assert family_of(make_estimator("mlp", scale=False)) == "mlp"


def test_the_choice_is_recorded_on_the_training_run_and_the_registered_version(splits, tmp_path):
    from prefect_crisis.tasks.training.promotion import gate_candidate
    from prefect_crisis.tasks.training.run import _chosen_estimator

    policy, found = splits
    data = found["breast-cancer"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = ModelRegistry(model_name="family-choice", tracking_uri=uri).use(client=client)
    registry = registry.use(timeline=Timeline(clock=registry.now, sink=ListSink()))
    run_id = client.create_run(client.create_experiment("train", artifact_location=(tmp_path / "artifacts").as_uri())).info.run_id
    estimator = _chosen_estimator(client, run_id, policy, data, stop_after_seconds(600), None, logging.getLogger("test"))
    tags = client.get_run(run_id).data.tags
    assert tags["crisis.family"] == family_of(estimator) and tags["crisis.family_choice"].startswith(f"{tags['crisis.family']} by 3-fold")
    assert {f"cv_accuracy_{family}" for family in AUTO_FAMILIES} <= set(client.get_run(run_id).data.metrics)
    trained = train_with_stop_hook(
        estimator, data.X_train, data.y_train, classes=data.classes, epochs=policy.epochs, batch_size=policy.batch_size, stop=stop_after_seconds(600)
    )
    result = gate_candidate(registry, run_id, trained.estimator, data, policy)
    version = client.get_model_version("family-choice", result.version)
    assert version.tags["crisis.family"] == tags["crisis.family"] and version.tags["crisis.family_choice"] == tags["crisis.family_choice"]


def test_where_the_classes_are_not_linearly_separable_a_nonlinear_family_is_chosen_and_wins_on_the_holdout():
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=1_200, noise=0.15, random_state=0)
    train, holdout = slice(0, 900), slice(900, None)
    classes = np.array([0, 1])
    common = dict(epochs=20, batch_size=64, seed=0, scale=True, impute=False)
    choice = choose_family(X[train], y[train], classes, stop=stop_after_seconds(600), **common)
    assert choice.family == "mlp", str(choice)

    def on_holdout(family: str) -> float:
        trained = train_with_stop_hook(
            make_estimator(family, None, 0), X[train], y[train], classes=classes, epochs=20, batch_size=64, stop=stop_after_seconds(600)
        )
        return float(np.mean(trained.estimator.predict(X[holdout]) == y[holdout]))

    assert on_holdout("mlp") > on_holdout("sgd") + 0.05

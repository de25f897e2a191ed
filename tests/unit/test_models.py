"""Models logged and loaded through one client: every estimator the training policy can build."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mlflow import MlflowClient

from prefect_crisis.tasks.models import load_sklearn_model, log_sklearn_model
from prefect_crisis.tasks.training.loop import make_estimator


@pytest.mark.parametrize("estimator", ["sgd", "mlp"])
def test_every_policy_estimator_is_logged_registered_and_loaded_back(tmp_path, monkeypatch, estimator):
    # An MLP holds an optimizer that skops refuses unless it is trusted: before, it could never be registered.
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = client.create_experiment("models", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_estimator(estimator, {}, seed=0).fit(X, y)
    info = log_sklearn_model(client, model, X, run.info.run_id)
    client.create_registered_model("churn")
    source = client.get_logged_model(info.model_id).artifact_location
    version = client.create_model_version("churn", source, run.info.run_id, model_id=info.model_id)
    loaded = load_sklearn_model(client, "churn", version.version)
    assert type(loaded) is type(model)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert not (tmp_path / "mlflow.db").exists()

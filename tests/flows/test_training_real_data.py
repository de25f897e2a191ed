"""continuous_training with the default policy on real data sets (bundled with scikit-learn), against a real
Prefect server and a real MLflow store: small sets train, promote and keep a fallback; the fallback's figures and
the candidate's routing calibration are in the registry; a batch of one class is refused before training."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import DataContract, ModelRegistry
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.tasks.drills.datasets import load_dataset
from prefect_crisis.tasks.serving.fallback_model import MEETS_BAR_TAG
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import GOLDEN_VERSION_TAG

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri")


def train_on(name: str, tmp_path, frame=None):
    """One run of the flow with the default policy on `frame` (default: the whole data set), validated against a
    contract learnt from the whole data set; returns the model name and the flow's final state."""
    model = f"real-{name}-{uuid.uuid4().hex[:8]}"
    whole = load_dataset(name).frame
    DataContract.from_reference(whole, label_column="label").save(model, overwrite=True)
    path = tmp_path / f"{model}.parquet"
    (whole if frame is None else frame).to_parquet(path, index=False)
    state = continuous_training(model_name=model, contract_block=model, batch_path=str(path), storage=str(tmp_path), return_state=True)
    return model, state


@pytest.mark.parametrize("name", ["wine", "breast-cancer"])
def test_a_small_real_set_trains_promotes_and_keeps_a_fallback_with_the_defaults(name, tmp_path):
    """With a fixed 200-row minimum, 178 and 569 rows trained but never promoted and never got a fallback."""
    model, state = train_on(name, tmp_path)
    assert state.is_completed() and state.message.startswith("v1 promoted to champion: no champion yet"), state.message
    assert "; fallback v2 registered (logistic on " in state.message and "misses the bar" not in state.message
    registry = ModelRegistry(model_name=model)
    champion, fallback = registry.champion(), registry.version_by_alias(registry.fallback_alias)
    assert champion.version == "1" and champion.metrics["accuracy"] > 0.93
    assert fallback.version == "2" and fallback.tags[MEETS_BAR_TAG] == "true"
    assert fallback.metrics["accuracy"] >= 0.85 * champion.metrics["accuracy"]
    assert fallback.metrics["primary_accuracy"] == champion.metrics["accuracy"]
    client = MlflowClient()
    assert client.get_registered_model(model).tags[GOLDEN_VERSION_TAG] == "1"
    routing = json.loads(Path(client.download_artifacts(champion.run_id, "routing.json", str(tmp_path))).read_text())
    assert routing["fallback_version"] == "2" and routing["holdout"]["rows"] == (89 if name == "wine" else 200)


def test_a_batch_of_one_class_is_refused_before_training_with_the_finding(tmp_path):
    """A single-class batch used to train and end as 'non-finite loss'."""
    whole = load_dataset("wine").frame
    model, state = train_on("wine", tmp_path, whole[whole["label"] == 1])
    assert state.is_failed() and state.name == "Refused"
    assert state.message == (
        "training refused before it started: label 'label' is constant: every labelled row is class 1; a classifier needs at least two classes"
    )
    client = MlflowClient()
    assert client.search_runs([training_experiment(client, model)]) == []  # nothing trained

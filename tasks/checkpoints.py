"""Training checkpoints in MLflow: the estimator and its position, as artifacts
of the training run, so a stopped run is resumable from the same store the
models live in."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from prefect_crisis.tasks.errors import TrainingError
from prefect_crisis.tasks.paths import ensure_experiment
from prefect_crisis.tasks.training import Checkpoint, Position

TAG = "crisis."
ARTIFACT_DIR = "checkpoint"


def training_experiment(client: MlflowClient, model: str) -> str:
    """Id of the model's training experiment, created on first use."""
    return ensure_experiment(client, f"crisis-training-{model}", {f"{TAG}model": model})


def save_checkpoint(client: MlflowClient, run_id: str, checkpoint: Checkpoint) -> str:
    """Write the checkpoint into the run's artifacts and tag the run resumable."""
    with tempfile.TemporaryDirectory() as folder:
        state = {
            "epoch": checkpoint.position.epoch,
            "batch_index": checkpoint.position.batch_index,
            "fingerprint": checkpoint.fingerprint,
            "losses": list(checkpoint.losses),
            "estimator": type(checkpoint.estimator).__name__,
        }
        (Path(folder) / "state.json").write_text(json.dumps(state))
        (Path(folder) / "estimator.pkl").write_bytes(pickle.dumps(checkpoint.estimator))
        client.log_artifacts(run_id, folder, artifact_path=ARTIFACT_DIR)
    client.set_tag(run_id, f"{TAG}checkpoint", "true")
    return f"runs:/{run_id}/{ARTIFACT_DIR}"


def load_checkpoint(client: MlflowClient, run_id: str) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, folder))
            state = json.loads((local / "state.json").read_text())
            estimator = pickle.loads((local / "estimator.pkl").read_bytes())
        except (OSError, ValueError, pickle.UnpicklingError) as error:
            raise TrainingError(f"checkpoint of run {run_id} cannot be read ({error}): train from scratch with resume=False") from error
    return Checkpoint(
        estimator=estimator,
        position=Position(state["epoch"], state["batch_index"]),
        fingerprint=state["fingerprint"],
        losses=tuple(state["losses"]),
    )


def latest_checkpoint_run(client: MlflowClient, model: str) -> str | None:
    """The most recent stopped training run of `model` with a checkpoint not yet resumed."""
    runs = client.search_runs(
        [training_experiment(client, model)],
        f"tags.`{TAG}checkpoint` = 'true' and tags.`{TAG}status` = 'stopped'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.data.tags.get(f"{TAG}resumed_by") is None:
            return run.info.run_id
    return None

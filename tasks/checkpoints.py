"""Training checkpoints in MLflow: the estimator and its position, as artifacts
of the training run, so a stopped run is resumable from the same store the
models live in.

A checkpoint is two files: `state.json` (position, losses, data fingerprint,
the resume key) and `estimator.skops`, the estimator in skops' format, which
rebuilds scikit-learn objects from their state without running code from the
file (unlike pickle). Loading trusts skops' defaults (scikit-learn, numpy,
scipy types) and the MLP optimizers only; a file naming any other type is
refused. Checkpoints of the older pickle format are never loaded.
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
from pathlib import Path

from mlflow import MlflowClient

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.core.paths import ensure_experiment
from prefect_crisis.core.vocabulary import RunStatusTag, TagKey
from prefect_crisis.tasks.resume import ResumeKey
from prefect_crisis.tasks.models import TRUSTED_TYPES  # one list for checkpoints and registered models
from prefect_crisis.tasks.stopping import StopKind
from prefect_crisis.tasks.training import Checkpoint, Position

ARTIFACT_DIR = "checkpoint"
STATE_FILE = "state.json"
ESTIMATOR_FILE = "estimator.skops"
FORMAT = "skops-1"


def training_experiment(client: MlflowClient, model: str) -> str:
    """Id of the model's training experiment, created on first use."""
    return ensure_experiment(client, f"crisis-training-{model}", {TagKey.MODEL: model})


# -- the files ----------------------------------------------------------------


def write_checkpoint_files(folder: Path, checkpoint: Checkpoint, key: ResumeKey | None = None) -> None:
    """Write `checkpoint` as state.json and estimator.skops into `folder`."""
    state = {
        "format": FORMAT,
        "epoch": checkpoint.position.epoch,
        "batch_index": checkpoint.position.batch_index,
        "fingerprint": checkpoint.fingerprint,
        "losses": [loss if math.isfinite(loss) else None for loss in checkpoint.losses],
        "estimator": type(checkpoint.estimator).__name__,
        "resume_key": key.to_dict() if key else None,
    }
    (folder / STATE_FILE).write_text(json.dumps(state))
    import skops.io as skops_io

    (folder / ESTIMATOR_FILE).write_bytes(skops_io.dumps(checkpoint.estimator))


def read_checkpoint_state(folder: Path) -> tuple[Position, ResumeKey | None]:
    """Position and resume key of the checkpoint in `folder` (the estimator is not read)."""
    state = json.loads((folder / STATE_FILE).read_text())
    key = ResumeKey.from_dict(state["resume_key"]) if state.get("resume_key") else None
    return Position(int(state["epoch"]), int(state["batch_index"])), key


def read_checkpoint_files(folder: Path) -> Checkpoint:
    """The checkpoint in `folder`; raises ValueError when it is not a loadable skops checkpoint."""
    state = json.loads((folder / STATE_FILE).read_text())
    if state.get("format") != FORMAT or not (folder / ESTIMATOR_FILE).exists():
        raise ValueError("it is not in the skops format (an older pickle checkpoint is never loaded: it could run code)")
    import skops.io as skops_io
    from skops.io.exceptions import UntrustedTypesFoundException

    blob = (folder / ESTIMATOR_FILE).read_bytes()
    untrusted = set(skops_io.get_untrusted_types(data=blob)) - TRUSTED_TYPES
    if untrusted:
        raise ValueError(f"its estimator file names types that are not trusted: {sorted(untrusted)}")
    try:
        estimator = skops_io.loads(blob, trusted=sorted(TRUSTED_TYPES))
    except UntrustedTypesFoundException as error:
        raise ValueError(str(error)) from error
    if not hasattr(estimator, "partial_fit"):
        raise ValueError(f"its estimator is a {type(estimator).__name__}, which has no partial_fit")
    return Checkpoint(
        estimator=estimator,
        position=Position(int(state["epoch"]), int(state["batch_index"])),
        fingerprint=state["fingerprint"],
        losses=tuple(math.nan if loss is None else float(loss) for loss in state["losses"]),
    )


# -- in MLflow ------------------------------------------------------------------


def save_checkpoint(client: MlflowClient, run_id: str, checkpoint: Checkpoint, key: ResumeKey | None = None) -> str:
    """Write the checkpoint into the run's artifacts and tag the run as having one."""
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint_files(Path(folder), checkpoint, key)
        client.log_artifacts(run_id, folder, artifact_path=ARTIFACT_DIR)
    client.set_tag(run_id, TagKey.CHECKPOINT, "true")
    return f"runs:/{run_id}/{ARTIFACT_DIR}"


def load_checkpoint(client: MlflowClient, run_id: str) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, folder))
            return read_checkpoint_files(local)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            raise TrainingError(f"checkpoint of run {run_id} cannot be read ({error}): train from scratch with resume=False") from error


def load_checkpoint_state(client: MlflowClient, run_id: str) -> tuple[Position, ResumeKey | None]:
    """Position and resume key of the run's checkpoint, without loading the estimator."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{STATE_FILE}", folder))
            return read_checkpoint_state(local.parent)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainingError(f"checkpoint state of run {run_id} cannot be read ({error}): train from scratch with resume=False") from error


def stop_kind_of(tags: dict[str, str]) -> StopKind | None:
    """Why a training run stopped, from its tags (None when not recorded)."""
    value = tags.get(TagKey.STOP_KIND) or tags.get(TagKey.STOP_REASON, "").split(":", 1)[0]
    try:
        return StopKind(value)
    except ValueError:
        return None


def latest_checkpoint_run(client: MlflowClient, model: str) -> str | None:
    """The model's latest ended training run, if it stopped with a checkpoint not yet resumed.

    Only the latest ended run counts: once a later run has trained (from scratch,
    or on other data), older checkpoints are history. Whether the checkpoint may
    be resumed by a given run is `decide_resume`'s call.
    """
    runs = client.search_runs(
        [training_experiment(client, model)],
        "attributes.status != 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    if tags.get(TagKey.CHECKPOINT) == "true" and tags.get(TagKey.STATUS) == RunStatusTag.STOPPED and not tags.get(TagKey.RESUMED_BY):
        return runs[0].info.run_id
    return None

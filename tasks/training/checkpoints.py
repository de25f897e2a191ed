"""Training checkpoints in MLflow: the estimator and its position, as artifacts
of the training run, so a stopped run is resumable from the same store the
models live in.

A checkpoint is two files: a state (position, losses, data fingerprint, the
resume key, when it was written) and the estimator in skops' format (the
whole pipeline: the fitted scaler travels with the learner's weights), which
rebuilds scikit-learn objects from their state without running code from the
file (unlike pickle). Loading trusts skops' defaults (scikit-learn, numpy,
scipy types) and the MLP optimizers only; a file naming any other type is
refused. Checkpoints of the older pickle format are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.core.paths import ensure_experiment
from prefect_crisis.core.vocabulary import RunStatusTag, TagKey
from prefect_crisis.tasks.models import TRUSTED_TYPES  # one list for checkpoints and registered models
from prefect_crisis.tasks.training.loop import Checkpoint, Position, learner_of, trains_in_mini_batches
from prefect_crisis.tasks.training.resume import ResumeKey
from prefect_crisis.tasks.training.stopping import StopKind

ARTIFACT_DIR = "checkpoint"
STATE_FILE = "state.json"  # the single-slot layout of earlier checkpoints, still read
ESTIMATOR_FILE = "estimator.skops"
SLOTS = 2
FORMAT = "skops-1"


def training_experiment(client: MlflowClient, model: str) -> str:
    """Id of the model's training experiment, created on first use."""
    return ensure_experiment(client, f"crisis-training-{model}", {TagKey.MODEL: model})


# -- the files ----------------------------------------------------------------
#
# A checkpoint written while training runs can be cut off by a SIGKILL halfway
# through a file. So writes alternate between two slots, each an estimator file
# and its state; the state goes last and names the estimator's SHA-256. A reader
# takes the newest slot whose state parses and whose estimator matches it: a torn
# write costs that one checkpoint, never the one before it.


def slot_files(sequence: int) -> tuple[str, str]:
    """The state and estimator file names of checkpoint number `sequence`."""
    slot = sequence % SLOTS
    return f"state-{slot}.json", f"estimator-{slot}.skops"


def write_checkpoint_files(folder: Path, checkpoint: Checkpoint, key: ResumeKey | None = None, sequence: int = 0) -> list[Path]:
    """Write `checkpoint` into its slot of `folder`; returns the files in the order they must be stored
    (the estimator, then the state that names it)."""
    import skops.io as skops_io

    state_name, estimator_name = slot_files(sequence)
    blob = skops_io.dumps(checkpoint.estimator)
    state = {
        "format": FORMAT,
        "sequence": sequence,
        "written_at": time.time(),
        "epoch": checkpoint.position.epoch,
        "batch_index": checkpoint.position.batch_index,
        "fingerprint": checkpoint.fingerprint,
        "losses": [loss if math.isfinite(loss) else None for loss in checkpoint.losses],
        "estimator": type(checkpoint.estimator).__name__,
        "estimator_file": estimator_name,
        "estimator_sha256": hashlib.sha256(blob).hexdigest(),
        "resume_key": key.to_dict() if key else None,
    }
    (folder / estimator_name).write_bytes(blob)
    (folder / state_name).write_text(json.dumps(state))
    return [folder / estimator_name, folder / state_name]


def _states(folder: Path) -> list[dict]:
    """The readable states in `folder`, newest first (an earlier single-slot state counts as the oldest)."""
    states = []
    for path in [folder / f"state-{slot}.json" for slot in range(SLOTS)] + [folder / STATE_FILE]:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # missing, or cut off by a kill mid-write
        if isinstance(state, dict) and {"epoch", "batch_index"} <= set(state):
            states.append({"sequence": -1, "estimator_file": ESTIMATOR_FILE, **state})
    return sorted(states, key=lambda state: state["sequence"], reverse=True)


def read_checkpoint_state(folder: Path) -> tuple[Position, ResumeKey | None]:
    """Position and resume key of the newest checkpoint in `folder` (the estimator is not read)."""
    states = _states(folder)
    if not states:
        raise ValueError("no readable state file")
    state = states[0]
    key = ResumeKey.from_dict(state["resume_key"]) if state.get("resume_key") else None
    return Position(int(state["epoch"]), int(state["batch_index"])), key


def read_checkpoint_files(folder: Path) -> Checkpoint:
    """The newest whole checkpoint in `folder`; raises ValueError when there is no loadable skops checkpoint."""
    states = _states(folder)
    if not states:
        raise ValueError("no readable state file")
    problems = []
    for state in states:
        try:
            return _read_slot(folder, state)
        except ValueError as error:
            problems.append(f"#{state['sequence']}: {error}")
    raise ValueError("; ".join(problems))


def _read_slot(folder: Path, state: dict) -> Checkpoint:
    path = folder / str(state["estimator_file"])
    if state.get("format") != FORMAT or not path.exists():
        raise ValueError("it is not in the skops format (an older pickle checkpoint is never loaded: it could run code)")
    import skops.io as skops_io
    from skops.io.exceptions import UntrustedTypesFoundException

    blob = path.read_bytes()
    if state.get("estimator_sha256") and hashlib.sha256(blob).hexdigest() != state["estimator_sha256"]:
        raise ValueError(f"{path.name} is not the file its state names (a write cut off)")
    try:
        untrusted = set(skops_io.get_untrusted_types(data=blob)) - TRUSTED_TYPES
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ValueError(f"{path.name} is not a skops file ({error})") from error
    if untrusted:
        raise ValueError(f"its estimator file names types that are not trusted: {sorted(untrusted)}")
    try:
        estimator = skops_io.loads(blob, trusted=sorted(TRUSTED_TYPES))
    except UntrustedTypesFoundException as error:
        raise ValueError(str(error)) from error
    if not trains_in_mini_batches(estimator):
        raise ValueError(f"its estimator is a {type(learner_of(estimator)).__name__}, which has no partial_fit")
    return Checkpoint(
        estimator=estimator,
        position=Position(int(state["epoch"]), int(state["batch_index"])),
        fingerprint=state["fingerprint"],
        losses=tuple(math.nan if loss is None else float(loss) for loss in state["losses"]),
    )


def checkpoint_written_at(folder: Path) -> float | None:
    """When the newest checkpoint in `folder` was written (seconds since the epoch), None when not recorded."""
    states = _states(folder)
    return float(states[0]["written_at"]) if states and "written_at" in states[0] else None


# -- in MLflow ------------------------------------------------------------------


class CheckpointWriter:
    """Writes a training run's checkpoints into its artifacts, alternating slots; tags the run once.

    Called with a `Checkpoint`, returns its URI: the `on_stop` of `train_with_stop_hook`.
    """

    def __init__(self, client: MlflowClient, run_id: str, key: ResumeKey | None = None):
        self.client, self.run_id, self.key = client, run_id, key
        self.sequence = 0

    def __call__(self, checkpoint: Checkpoint) -> str:
        with tempfile.TemporaryDirectory() as folder:
            for path in write_checkpoint_files(Path(folder), checkpoint, self.key, self.sequence):
                self.client.log_artifact(self.run_id, str(path), artifact_path=ARTIFACT_DIR)
        if self.sequence == 0:
            self.client.set_tag(self.run_id, TagKey.CHECKPOINT, "true")
        self.sequence += 1
        return f"runs:/{self.run_id}/{ARTIFACT_DIR}"


def save_checkpoint(client: MlflowClient, run_id: str, checkpoint: Checkpoint, key: ResumeKey | None = None) -> str:
    """Write the checkpoint into the run's artifacts and tag the run as having one."""
    return CheckpointWriter(client, run_id, key)(checkpoint)


def load_checkpoint(client: MlflowClient, run_id: str) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (the newest whole one)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, folder))
            return read_checkpoint_files(local)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            raise TrainingError(f"checkpoint of run {run_id} cannot be read ({error}): train from scratch with resume=False") from error


def _download_states(client: MlflowClient, run_id: str, folder: str) -> Path:
    for item in client.list_artifacts(run_id, ARTIFACT_DIR):
        if item.path.endswith(".json"):
            client.download_artifacts(run_id, item.path, folder)  # lands as folder/<file name>
    return Path(folder)


def load_checkpoint_state(client: MlflowClient, run_id: str) -> tuple[Position, ResumeKey | None]:
    """Position and resume key of the run's checkpoint, without loading the estimator."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            return read_checkpoint_state(_download_states(client, run_id, folder))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainingError(f"checkpoint state of run {run_id} cannot be read ({error}): train from scratch with resume=False") from error


def load_checkpoint_written_at(client: MlflowClient, run_id: str) -> float | None:
    """When the run's newest checkpoint was written (seconds since the epoch); None without one."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            return checkpoint_written_at(_download_states(client, run_id, folder))
        except (OSError, ValueError, KeyError, TypeError):
            return None


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
    run = runs[0]
    tags = run.data.tags
    # a resumed run killed before its first checkpoint holds nothing new: what it resumed is still the latest work
    while tags.get(TagKey.STOP_KIND) == StopKind.KILLED.value and tags.get(TagKey.CHECKPOINT) != "true" and tags.get(TagKey.RESUMED_FROM):
        run = client.get_run(tags[TagKey.RESUMED_FROM])
        tags = run.data.tags
        if tags.get(TagKey.CHECKPOINT) == "true" and tags.get(TagKey.STATUS) == RunStatusTag.STOPPED:
            return run.info.run_id
    if tags.get(TagKey.CHECKPOINT) == "true" and tags.get(TagKey.STATUS) == RunStatusTag.STOPPED and not tags.get(TagKey.RESUMED_BY):
        return run.info.run_id
    return None


def resuming_run(client: MlflowClient, model: str, run_id: str) -> str | None:
    """The model's training run that is resuming `run_id`'s checkpoint now (still RUNNING), if any: its claim, made
    when it was created (its `resumed_from` tag), holds until it ends. A run killed before its first checkpoint is
    closed by `close_killed_runs` first, and the checkpoint it claimed is free again."""
    runs = client.search_runs(
        [training_experiment(client, model)],
        f"attributes.status = 'RUNNING' AND tags.`{TagKey.RESUMED_FROM}` = '{run_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def close_killed_runs(client: MlflowClient, model: str, is_over: Callable[[str], bool]) -> list[str]:
    """Close the model's training runs that a killed process left RUNNING; returns their ids.

    A process killed outright (SIGKILL, out of memory, a lost machine) runs no
    handler, so its MLflow run stays RUNNING. It is over when `is_over(flow run
    id)` says the Prefect flow run that trained it has ended (Prefect marks it
    Crashed). Such a run is recorded as stopped, kind `killed`, and ended FAILED; its last periodic
    checkpoint, if it wrote one, is then resumable like any other stop's.
    """
    runs = client.search_runs([training_experiment(client, model)], "attributes.status = 'RUNNING'", max_results=100)
    closed = []
    for run in runs:
        flow_run_id = run.data.tags.get(TagKey.FLOW_RUN_ID, "")
        if not is_over(flow_run_id):
            continue  # still training, or not known to be over: never taken from a live run
        if run.data.tags.get(TagKey.STATUS) == RunStatusTag.COMPLETED:  # trained to the end, its flow run ended before closing it
            client.set_terminated(run.info.run_id, "FINISHED")
            continue
        record_killed(client, run.info.run_id, f"its process ended without closing the run (flow run {flow_run_id} is over)")
        closed.append(run.info.run_id)
    return closed


def record_killed(client: MlflowClient, run_id: str, detail: str) -> None:
    """Record a training run whose process was killed as stopped (`killed`) and end it FAILED: its last periodic
    checkpoint, if any, is resumable like any other stop's."""
    client.set_tag(run_id, TagKey.STATUS, RunStatusTag.STOPPED.value)
    client.set_tag(run_id, TagKey.STOP_KIND, StopKind.KILLED.value)
    client.set_tag(run_id, TagKey.STOP_REASON, f"{StopKind.KILLED.value}: {detail}"[:5000])
    client.set_terminated(run_id, "FAILED")

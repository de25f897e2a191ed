"""Whether a checkpoint may be resumed, as a value.

A checkpoint continues a run exactly only when everything that decides the
mini-batches and the estimator's updates is the same: the data (fingerprint,
the split into train and holdout and its size), the estimator, the steps
before it (imputation, scaling) and its parameters, and the batch layout
(batch size, seed of the shuffles). A checkpoint of a failure stop
(non-finite loss, divergence) holds the weights that failed: it is kept for
diagnosis and never resumed, or every later run would stop at once on it.

    key = resume_key(policy, data)  # prefect_crisis.tasks.training.run
    decision = decide_resume("run-1", stored, StopKind.FLAG, key, policy.epochs)
    decision.resume  # False -> str(decision) says why
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from enum import Enum
from typing import Any

from prefect_crisis.tasks.training.stopping import StopKind

SPLIT = "stratified"  # how `split_training_data` cuts the holdout: each class in its share


class ResumeRefusal(str, Enum):
    """Why a checkpoint is not resumed (training starts from scratch)."""

    OTHER_DATA = "other-data"
    OTHER_ESTIMATOR = "other-estimator"
    OTHER_PARAMETERS = "other-parameters"
    OTHER_BATCH_LAYOUT = "other-batch-layout"
    FAILURE_STOP = "failure-stop"
    NOT_RESUMABLE = "not-resumable"
    RESUMED_ELSEWHERE = "resumed-elsewhere"  # another training of the model is resuming it now


# Which refusal a difference in each field of the key stands for.
_FIELD_REFUSALS = {
    "fingerprint": ResumeRefusal.OTHER_DATA,
    "label_column": ResumeRefusal.OTHER_DATA,
    "features": ResumeRefusal.OTHER_DATA,
    "holdout_fraction": ResumeRefusal.OTHER_DATA,
    "holdout_rows": ResumeRefusal.OTHER_DATA,
    "split": ResumeRefusal.OTHER_DATA,
    "estimator": ResumeRefusal.OTHER_ESTIMATOR,
    "preprocessing": ResumeRefusal.OTHER_ESTIMATOR,
    "estimator_params": ResumeRefusal.OTHER_PARAMETERS,
    "batch_size": ResumeRefusal.OTHER_BATCH_LAYOUT,
    "seed": ResumeRefusal.OTHER_BATCH_LAYOUT,
}


@dataclass(frozen=True)
class ResumeKey:
    """What a checkpoint must share with a run for the run to resume it."""

    fingerprint: str
    label_column: str
    features: tuple[str, ...]
    holdout_fraction: float
    estimator: str
    estimator_params: str  # canonical JSON, so equal parameters compare equal
    batch_size: int
    seed: int
    # Added later: a key written without them reads as these values, which no new run has, so such a
    # checkpoint (trained on another split, without scaling) is refused, not resumed into a different model.
    holdout_rows: int = 0
    split: str = "shuffled"
    preprocessing: str = "none"

    @classmethod
    def of(cls, policy, fingerprint: str, features: list[str], *, holdout_rows: int = 0, preprocessing: str = "none") -> ResumeKey:
        """The key of training `policy` on data with `fingerprint` and `features`, `holdout_rows` of them held out,
        through the `preprocessing` steps (`prefect_crisis.tasks.training.loop.preprocessing_name`)."""
        return cls(
            fingerprint=fingerprint,
            label_column=policy.label_column,
            features=tuple(features),
            holdout_fraction=float(policy.holdout_fraction),
            estimator=policy.estimator,
            estimator_params=json.dumps(policy.estimator_params, sort_keys=True, default=str),
            batch_size=int(policy.batch_size),
            seed=int(policy.seed),
            holdout_rows=int(holdout_rows),
            split=SPLIT,
            preprocessing=preprocessing,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ResumeKey:
        required = {field.name for field in fields(cls) if field.default is MISSING}
        if not required <= set(values):
            raise ValueError(f"resume key lacks {sorted(required - set(values))}")
        known = {field.name for field in fields(cls)}
        return cls(**{**{name: values[name] for name in known if name in values}, "features": tuple(values["features"])})


@dataclass(frozen=True)
class ResumeDecision:
    """Resume `run_id`'s checkpoint, or not, and why."""

    run_id: str | None
    refusal: ResumeRefusal | None = None
    detail: str = ""

    @property
    def resume(self) -> bool:
        return self.run_id is not None and self.refusal is None

    def __str__(self) -> str:
        if self.run_id is None:
            return "no checkpoint to resume"
        if self.refusal is None:
            return f"resuming the checkpoint of run {self.run_id}"
        return f"not resuming the checkpoint of run {self.run_id} ({self.refusal.value}: {self.detail}); training from scratch"


NOTHING_TO_RESUME = ResumeDecision(None)


def decide_resume(run_id: str, stored: ResumeKey | None, stop_kind: StopKind | None, wanted: ResumeKey, epoch: int, epochs: int) -> ResumeDecision:
    """Whether a run with key `wanted` and `epochs` may resume the checkpoint of `run_id`.

    Args:
        stored: the key written with the checkpoint; None when the checkpoint has none
            (written before keys existed, or unreadable).
        stop_kind: why that run stopped; None when it is not recorded.
        epoch: the epoch the checkpoint resumes at.

    Example:
        >>> key = ResumeKey("abc", "label", ("f0",), 0.2, "sgd", "{}", 256, 0)
        >>> decide_resume("r1", key, StopKind.FLAG, key, 1, 5).resume
        True
        >>> decision = decide_resume("r1", key, StopKind.NON_FINITE_LOSS, key, 1, 5)
        >>> decision.refusal.value
        'failure-stop'
    """
    if stop_kind is None:
        return ResumeDecision(run_id, ResumeRefusal.NOT_RESUMABLE, "the run does not record why it stopped")
    if stop_kind.is_failure:
        return ResumeDecision(run_id, ResumeRefusal.FAILURE_STOP, f"it stopped on {stop_kind.value}; its checkpoint is kept for diagnosis")
    if stored is None:
        return ResumeDecision(run_id, ResumeRefusal.NOT_RESUMABLE, "the checkpoint records no resume key (older format)")
    for field in fields(ResumeKey):
        was, now = getattr(stored, field.name), getattr(wanted, field.name)
        if was != now:
            return ResumeDecision(run_id, _FIELD_REFUSALS[field.name], f"{field.name} was {_short(was)}, is {_short(now)}")
    if epoch > epochs:
        return ResumeDecision(run_id, ResumeRefusal.OTHER_BATCH_LAYOUT, f"the checkpoint is at epoch {epoch}, past the policy's {epochs}")
    return ResumeDecision(run_id)


def _short(value: Any, most: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."

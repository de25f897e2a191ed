"""The data a model trains on, as plain values: features and label split into train and holdout.

The holdout is stratified by label and sized for a judgement (`prefect_crisis.tasks.training.holdout`).
A batch that cannot train a sane model is refused before training starts (`findings_before_training`).
What a checkpoint must share with a run to be resumed (`resume_key`) and the estimator a
policy trains (`policy_estimator`) are read off the same values.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prefect_crisis.core.errors import DataInputError, TrainingError
from prefect_crisis.tasks.training.holdout import holdout_rows, stratified_holdout
from prefect_crisis.tasks.training.loop import make_estimator, preprocessing_name
from prefect_crisis.tasks.training.resume import ResumeKey
from prefect_crisis.tasks.validation.labels import training_input_findings

if TYPE_CHECKING:
    from prefect_crisis.blocks.training_policy import TrainingPolicy


@dataclass(frozen=True, eq=False)
class TrainingData:
    X_train: np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    classes: np.ndarray
    features: list[str]
    fingerprint: str
    label_column: str = "label"
    nullable_features: tuple[str, ...] = ()  # columns whose contract allows missing values: imputed, never refused

    @property
    def imputes(self) -> bool:
        """Whether the estimator fills missing values first (some of its columns may lack them)."""
        return any(name in self.nullable_features for name in self.features)

    def holdout_frame(self) -> pd.DataFrame:
        """The holdout as a frame: its features and the label (what a golden set freezes)."""
        return pd.DataFrame(self.X_holdout, columns=self.features).assign(**{self.label_column: self.y_holdout})


def split_training_data(frame: pd.DataFrame, policy: TrainingPolicy, fingerprint: str, nullable_features: Collection[str] = ()) -> TrainingData:
    """Features and label as arrays, split into train and holdout (seeded, stratified by label, sized by `holdout_rows`).

    Args:
        nullable_features: columns the data contract allows to be missing; the estimator imputes them. A
            missing value anywhere else is a finding.

    Raises:
        TrainingError: the batch cannot train a sane model (`findings_before_training`), before any training.
    """
    if policy.label_column not in frame.columns:
        raise TrainingError(f"the batch has no label column {policy.label_column!r}: set label_column in the TrainingPolicy")
    features = policy.feature_columns or [name for name in frame.select_dtypes(include="number").columns if name != policy.label_column]
    if not features:
        raise TrainingError("no numeric feature columns to train on: set feature_columns in the TrainingPolicy")
    findings = findings_before_training(frame, policy.label_column, features, nullable_features)
    if findings:
        raise TrainingError(f"training refused before it started: {'; '.join(findings)}")
    X = frame[features].to_numpy(dtype=np.float64)
    y = frame[policy.label_column].to_numpy()
    held = stratified_holdout(y, holdout_rows(len(frame), policy), policy.seed)
    return TrainingData(
        X[~held],
        y[~held],
        X[held],
        y[held],
        np.unique(y),
        list(features),
        fingerprint,
        policy.label_column,
        tuple(name for name in nullable_features if name in features),
    )


def findings_before_training(frame: pd.DataFrame, label_column: str, features: list[str], nullable_features: Collection[str] = ()) -> list[str]:
    """Why the batch cannot train a sane model, one line each; empty when it can. The label's findings are
    validation's (`prefect_crisis.tasks.validation.labels.training_input_findings`: missing labels, one class only, a class
    of fewer than two rows); then missing or infinite feature values in columns whose contract allows none.

    Example:
        >>> frame = pd.DataFrame({"x": [0.1, 0.2, 0.3], "label": [1, 1, 1]})
        >>> findings_before_training(frame, "label", ["x"])
        ["label 'label' is constant: every labelled row is class 1; a classifier needs at least two classes"]
        >>> findings_before_training(frame.assign(label=[0, 1, 1], x=[0.1, None, 0.3]), "label", ["x"])[-1]
        "feature column 'x' has 1 missing or infinite value and its contract allows none: validate the batch first"
    """
    try:
        found = [finding.message for finding in training_input_findings(frame, label_column)]
    except DataInputError as error:
        return [str(error)]
    for name in features:
        if name in nullable_features:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        broken = int((~np.isfinite(values)).sum())
        if broken:
            plural = "s" if broken > 1 else ""
            found.append(
                f"feature column {name!r} has {broken} missing or infinite value{plural} and its contract allows none: validate the batch first"
            )
    return found


def resume_key(policy: TrainingPolicy, data: TrainingData) -> ResumeKey:
    """What a checkpoint must share with training `policy` on `data` to be resumed."""
    return ResumeKey.of(
        policy,
        data.fingerprint,
        data.features,
        holdout_rows=len(data.y_holdout),
        preprocessing=preprocessing_name(policy.scale_features, data.imputes),
    )


def policy_estimator(policy: TrainingPolicy, data: TrainingData):
    """The unfitted estimator `policy` trains on `data`: scaled (and imputed where the contract allows gaps)."""
    return make_estimator(policy.estimator, policy.estimator_params, policy.seed, scale=policy.scale_features, impute=data.imputes)

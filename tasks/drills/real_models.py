"""Real models on real data for the drills, the tests and the benchmarks: a registry with a good version that served,
a weak fallback behind it, and the releases that go wrong in production (a poisoned one, a broken one).

A response is judged by its end state: `serving_accuracy` scores whatever `@champion` points at on fresh labelled rows
the response never saw, so "an alias moved" is never mistaken for a repair.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.vocabulary import TagKey, VersionRole
from prefect_crisis.tasks.drills.datasets import LABEL, RealDataset, load_dataset
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate

WEAK_FALLBACK_FEATURES = 3  # the few-feature fallback users met: on 10 classes it answers about half the rows right


def scaled_logistic(frame: pd.DataFrame, features: list[str], labels: np.ndarray | None = None, *, seed: int = 0):
    """A scaled logistic regression (a sound primary on every bundled data set), fitted on `labels` (the frame's own by default)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = frame[LABEL].to_numpy() if labels is None else labels
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2_000, random_state=seed)).fit(frame[features].to_numpy(dtype=float), y)


def top_features(frame: pd.DataFrame, features: list[str], most: int) -> list[str]:
    """The `most` features of highest ANOVA F score (the fallback's few columns)."""
    from sklearn.feature_selection import f_classif

    with np.errstate(divide="ignore", invalid="ignore"):
        scores, _ = f_classif(frame[features].to_numpy(dtype=float), frame[LABEL].to_numpy())
    order = np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")
    return [features[index] for index in order[:most]]


def register_estimator(registry: ModelRegistry, estimator, features: list[str], recorded_accuracy: float, *, role: str | None = None) -> str:
    """Log `estimator` in the registry's store with the holdout accuracy its training saw, register it; the version."""
    client = registry.client
    run = client.create_run(training_experiment(client, registry.model_name))
    client.log_metric(run.info.run_id, "accuracy", float(recorded_accuracy))
    client.set_terminated(run.info.run_id)
    example = np.zeros((2, len(features)))
    info = log_candidate(estimator, example, run.info.run_id, client)
    tags: dict[str, str] = {TagKey.FEATURES: ",".join(features)}
    if role:
        tags[TagKey.ROLE] = role
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, tags).version


def rotated(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Every class recorded as the next one: a labelling pipeline whose mapping broke (a poisoned retrain's labels)."""
    position = {value: index for index, value in enumerate(classes)}
    return np.array([classes[(position[value] + 1) % len(classes)] for value in labels])


@dataclass(frozen=True)
class RealModelStack:
    """A model on a real data set in a real registry: the data's parts and the versions."""

    registry: ModelRegistry
    data: RealDataset
    parts: dict[str, pd.DataFrame]  # train (the good version), retrain (a later batch), window (labelled rows the response reads), fresh
    good: str
    fallback: str
    features: tuple[str, ...]

    def window(self) -> pd.DataFrame:
        return self.parts["window"]

    def fresh(self) -> pd.DataFrame:
        return self.parts["fresh"]


def build_real_stack(
    model: str,
    dataset: str,
    *,
    seed: int = 0,
    served_for: timedelta = timedelta(hours=3),
    fallback_features: int = WEAK_FALLBACK_FEATURES,
) -> RealModelStack:
    """A good version (a scaled logistic regression) that served `served_for`, with a fallback on a few features behind it.

    The data set's rows are cut, stratified, into train (40 %), retrain (20 %), window (20 %) and fresh (20 %).
    """
    data = load_dataset(dataset)
    train, retrain, window, fresh = data.split(seed=seed, parts=(0.4, 0.2, 0.2, 0.2))
    features = list(data.features)
    back = back_dated(ModelRegistry(model_name=model), served_for)
    good_model = scaled_logistic(train, features, seed=seed)
    good = register_estimator(back, good_model, features, accuracy(good_model, retrain, features))
    few = top_features(train, features, fallback_features)
    fallback_model = scaled_logistic(train, few, seed=seed)
    fallback = register_estimator(back, fallback_model, few, accuracy(fallback_model, retrain, few), role=VersionRole.FALLBACK)
    back.move_alias(back.fallback_alias, fallback, "the simple model")
    back.promote(good, "first model")
    parts = {"train": train, "retrain": retrain, "window": window, "fresh": fresh}
    return RealModelStack(ModelRegistry(model_name=model), data, parts, good, fallback, tuple(features))


def accuracy(estimator, frame: pd.DataFrame, features: list[str] | tuple[str, ...], labels: np.ndarray | None = None) -> float:
    y = frame[LABEL].to_numpy() if labels is None else labels
    return float((estimator.predict(frame[list(features)].to_numpy(dtype=float)) == y).mean())


def release_poisoned(stack: RealModelStack, *, ago: timedelta = timedelta(minutes=10)) -> str:
    """Promote a retrain whose labels a broken pipeline rotated: its recorded holdout accuracy (on those labels) is
    high, its answers on true labels are almost all wrong. The version."""
    retrain = stack.parts["retrain"]
    features = list(stack.features)
    labels = rotated(retrain[LABEL].to_numpy(), stack.data.classes)
    half = len(retrain) // 2
    poisoned = scaled_logistic(retrain.iloc[:half], features, labels[:half])
    recorded = accuracy(poisoned, retrain.iloc[half:], features, labels[half:])
    registry = back_dated(stack.registry, ago)
    version = register_estimator(registry, poisoned, features, recorded)
    registry.promote(version, "retrained on the latest batch")
    return version


def back_dated(registry: ModelRegistry, ago: timedelta) -> ModelRegistry:
    """The same registry on a clock `ago` behind: what was done then (a promotion an hour ago)."""
    return ModelRegistry(model_name=registry.model_name, tracking_uri=registry.tracking_uri).use(
        client=registry.client, clock=lambda: datetime.now(UTC) - ago
    )


def serving_accuracy(registry: ModelRegistry, frame: pd.DataFrame) -> tuple[str, float]:
    """(version, accuracy) of what `@champion` serves now, on labelled rows: the end state of a response.

    Raises:
        RegistryError: the model has no champion: nothing serves to measure.
    """
    champion = registry.champion()
    if champion is None:
        raise RegistryError(f"{registry.model_name!r} has no champion to measure: promote a version first")
    features = champion.tags[TagKey.FEATURES].split(",")
    model = load_sklearn_model(registry.client, registry.model_name, champion.version)
    return champion.version, accuracy(model, frame, features)


def version_accuracy(registry: ModelRegistry, version: str, frame: pd.DataFrame) -> float:
    """Accuracy of one registered version on labelled rows (what it would serve, whatever `@champion` points at now)."""
    info = registry.version(version)
    model = load_sklearn_model(registry.client, registry.model_name, version)
    return accuracy(model, frame, info.tags[TagKey.FEATURES].split(","))


def mislabelled(labels: np.ndarray, classes: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Labels from a pipeline that records `share` of the last class as the first (breast-cancer: benign as malignant):
    a partly poisoned retrain, which its own holdout on those labels does not give away.

    Example:
        >>> mislabelled(np.array([0, 1, 1, 1, 2]), np.array([0, 1, 2]), 1.0, np.random.default_rng(0)).tolist()
        [0, 1, 1, 1, 0]
    """
    flipped = (labels == classes[-1]) & (rng.random(len(labels)) < share)
    return np.where(flipped, classes[0], labels)


def release_retrained(
    stack: RealModelStack,
    labels: np.ndarray,
    reason: str = "retrained on the latest batch",
    *,
    ago: timedelta = timedelta(minutes=10),
) -> str:
    """Promote a retrain on the first half of the retrain part with `labels` (one per retrain row, as the labelling
    pipeline recorded them), its holdout accuracy scored on the second half's recorded labels. The version."""
    retrain = stack.parts["retrain"]
    features = list(stack.features)
    half = len(retrain) // 2
    model = scaled_logistic(retrain.iloc[:half], features, labels[:half])
    recorded = accuracy(model, retrain.iloc[half:], features, labels[half:])
    registry = back_dated(stack.registry, ago)
    version = register_estimator(registry, model, features, recorded)
    registry.promote(version, f"{reason} (holdout accuracy {recorded:.3f} on its own labels)")
    return version

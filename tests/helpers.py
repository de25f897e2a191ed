"""Helpers for tests that read back through a real Prefect server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from prefect.events.worker import EventsWorker
from sklearn.linear_model import LogisticRegression

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.drills.synthetic import feature_names, make_batch
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate

T = TypeVar("T")
FEATURES = feature_names(20)


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0, every: float = 0.5) -> T:
    """Poll `read()` until `done(value)`: events reach the server asynchronously
    (emitted over a websocket, then persisted in batches). Returns the last value."""
    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value


def register(registry: ModelRegistry, labels_flipped: bool, seed: int, swapped: tuple[str, str] | None = None) -> str:
    """Train a logistic model on a synthetic batch (labels flipped: a poisoned one),
    log it with its holdout accuracy and register it; returns the version.

    `swapped`: two columns the registered feature list names in each other's place, as a
    retrain shipped with a column-order bug is: its recorded accuracy is honest, its live
    answers are not (f00 and f05: about 68% accurate on live rows, against 91% recorded).
    """
    batch = make_batch(3_000, seed=seed)
    X, y = batch[FEATURES].to_numpy(), batch["label"].to_numpy()
    y = 1 - y if labels_flipped else y
    model = LogisticRegression(max_iter=500).fit(X[:2_400], y[:2_400])
    client = registry.client
    run = client.create_run(training_experiment(client, registry.model_name))
    client.log_metric(run.info.run_id, "accuracy", float(model.score(X[2_400:], y[2_400:])))
    info = log_candidate(model, X, run.info.run_id, client)
    features = list(FEATURES)
    if swapped:
        first, second = features.index(swapped[0]), features.index(swapped[1])
        features[first], features[second] = features[second], features[first]
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(features)}).version


def poisoned_after_stable(model: str, seeds: tuple[int, int] = (1, 2), swapped: tuple[str, str] | None = None) -> tuple[ModelRegistry, str, str]:
    """A registry whose good version served three hours, then a version trained on
    flipped labels took over ten minutes ago: (registry on an injected clock, good, poisoned).

    `swapped`: the new version is not label-flipped (about 13% accurate: an emergency) but
    ships two columns swapped (about 68%: a critical degradation); see `register`."""
    now = datetime.now(UTC)
    clock = [now - timedelta(hours=3)]
    registry = ModelRegistry(model_name=model).use(clock=lambda: clock[0])
    good = register(registry, False, seed=seeds[0])
    poisoned = register(registry, not swapped, seed=seeds[1], swapped=swapped)
    registry.promote(good, "first model")
    clock[0] = now - timedelta(minutes=10)
    registry.promote(poisoned, "retrained on the latest batch")  # its labels were flipped upstream
    return registry, good, poisoned

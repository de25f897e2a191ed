"""Helpers for tests that read back through a real Prefect server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from prefect.events.worker import EventsWorker
from sklearn.linear_model import LogisticRegression

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.checkpoints import training_experiment
from prefect_crisis.tasks.promotion import log_candidate
from prefect_crisis.tasks.synthetic import feature_names, make_batch

T = TypeVar("T")
FEATURES = feature_names(20)


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0, every: float = 0.25) -> T:
    """Poll `read()` until `done(value)`: events reach the server asynchronously
    (emitted over a websocket, then persisted in batches). Returns the last value."""
    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value


def register(registry: ModelRegistry, labels_flipped: bool, seed: int) -> str:
    """Train a logistic model on a synthetic batch (labels flipped: a poisoned one),
    log it with its holdout accuracy and register it; returns the version."""
    batch = make_batch(3_000, seed=seed)
    X, y = batch[FEATURES].to_numpy(), batch["label"].to_numpy()
    y = 1 - y if labels_flipped else y
    model = LogisticRegression(max_iter=500).fit(X[:2_400], y[:2_400])
    client = registry.client
    run = client.create_run(training_experiment(client, registry.model_name))
    client.log_metric(run.info.run_id, "accuracy", float(model.score(X[2_400:], y[2_400:])))
    info = log_candidate(model, X, run.info.run_id, client)
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(FEATURES)}).version


def poisoned_after_stable(model: str, seeds: tuple[int, int] = (1, 2)) -> tuple[ModelRegistry, str, str]:
    """A registry whose good version served three hours, then a version trained on
    flipped labels took over ten minutes ago: (registry on an injected clock, good, poisoned)."""
    now = datetime.now(timezone.utc)
    clock = [now - timedelta(hours=3)]
    registry = ModelRegistry(model_name=model).use(clock=lambda: clock[0])
    good, poisoned = register(registry, False, seed=seeds[0]), register(registry, True, seed=seeds[1])
    registry.promote(good, "first model")
    clock[0] = now - timedelta(minutes=10)
    registry.promote(poisoned, "retrained on the latest batch")  # its labels were flipped upstream
    return registry, good, poisoned

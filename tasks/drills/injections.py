"""What a drill puts into the running stack: synthetic versions registered the way a training run registers them, a
champion that served for hours with a fallback behind it (synthetic or on a real data set), the drill's data
contract, and live traffic served through the real router into the stack's inference log with its true labels
recorded; and what it lifts afterwards (an emergency stop, the stop flag).

The faults themselves are plain functions (tasks/drills/faults.py); this module is where they meet the stack.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.errors import DrillError
from prefect_crisis.core.paths import default_storage
from prefect_crisis.core.prefect_compat import drain_events
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.drills.faults import Served, all_flipped, concept_drifted, keyed, positives_flipped, serve_rows, true_labels
from prefect_crisis.tasks.drills.real_models import RealModelStack, build_real_stack
from prefect_crisis.tasks.drills.scenario import ChampionState, Drill
from prefect_crisis.tasks.drills.synthetic import feature_names, make_batch
from prefect_crisis.tasks.response.emergency import EmergencyRecord
from prefect_crisis.tasks.serving.inference_log import open_inference_log, record_labels
from prefect_crisis.tasks.serving.router import FallbackRouter
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag
from prefect_crisis.tasks.validation.quarantine import storage_uri, write_parquet

__all__ = [
    "DRILL_CONTRACT",
    "FALLBACK_FEATURES",
    "FEATURES",
    "SERVED_ROWS",
    "all_flipped",
    "lift_emergency",
    "positives_flipped",
    "real_champion",
    "real_stack",
    "register_fallback",
    "register_synthetic",
    "save_drill_contract",
    "serve_and_label",
    "stable_champion",
    "synthetic_rows",
    "true_labels",
]

FEATURES = feature_names(20)
FALLBACK_FEATURES = ["f00", "f01", "f02"]
DRILL_CONTRACT = "drill-stream"
SERVED_ROWS = 300


class HoldsRealStack(Protocol):
    """A drill state that keeps the real model `real_champion` built."""

    stack: RealModelStack | None


RealStateT = TypeVar("RealStateT", bound=HoldsRealStack)


# -- versions ---------------------------------------------------------------------------


def register_synthetic(
    registry: ModelRegistry,
    seed: int,
    labels: Callable[[np.ndarray, np.random.Generator], np.ndarray] = true_labels,
    features: list[str] | None = None,
) -> str:
    """Train a logistic model on a synthetic batch whose training labels are `labels(y, rng)`, log its holdout
    accuracy on those labels (what a poisoned pipeline sees of itself) and register it; returns the version."""
    from sklearn.linear_model import LogisticRegression

    features = features or FEATURES
    batch = make_batch(3_000, seed=seed)
    X = batch[features].to_numpy()
    y = labels(batch["label"].to_numpy(), np.random.default_rng(seed))
    model = LogisticRegression(max_iter=500).fit(X[:2_400], y[:2_400])
    client = registry.client
    run = client.create_run(training_experiment(client, registry.model_name))
    client.log_metric(run.info.run_id, "accuracy", float(model.score(X[2_400:], y[2_400:])))
    info = log_candidate(model, X, run.info.run_id, client)
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(features)}).version


def register_fallback(registry: ModelRegistry, seed: int) -> str:
    """A small model on three columns under the `fallback` alias, tagged as the fallback model."""
    version = register_synthetic(registry, seed, features=FALLBACK_FEATURES)
    registry.client.set_model_version_tag(registry.model_name, version, TagKey.ROLE, "fallback")
    registry.move_alias(registry.fallback_alias, version, "the simple model")
    return version


def stable_champion(model: str, seed: int, *, with_fallback: bool = True, served_for: timedelta = timedelta(hours=3)) -> tuple[ModelRegistry, str]:
    """A model whose good version has served `served_for` (the registry's clock set back while promoting it),
    with a fallback model behind it: (registry on the real clock, the good version)."""
    now = datetime.now(UTC)
    back = ModelRegistry(model_name=model).use(clock=lambda: now - served_for)
    good = register_synthetic(back, seed)
    if with_fallback:
        register_fallback(back, seed + 7)
    back.promote(good, "first model")
    return ModelRegistry(model_name=model), good


def synthetic_champion(drill: Drill[Any]) -> None:
    """The drill's model as a synthetic champion that served 3 h with its fallback: `drill.registry`, and the
    versions in the drill's state (a `ChampionState`)."""
    state: ChampionState = drill.state
    registry, state.good = stable_champion(drill.model, drill.seed)
    drill.registry = registry
    fallback = registry.version_by_alias(registry.fallback_alias)
    if fallback is None:
        raise DrillError(f"drill model {drill.model!r} has no {registry.fallback_alias!r} version after its setup registered one")
    state.fallback = fallback.version


def real_champion(drill: Drill[Any], dataset: str) -> RealModelStack:
    """The drill's model as a real model on `dataset` (tasks/drills/real_models.py): a good scaled logistic version
    that served 3 h, the weak 3-feature fallback behind it; its versions in the drill's state (a `ChampionState`)."""
    with warnings.catch_warnings():  # digits' blank border pixels: the fallback's feature ranking says so, a terminal need not
        warnings.filterwarnings("ignore", message="Features .* are constant", category=UserWarning)
        stack = build_real_stack(drill.model, dataset, seed=drill.seed)
    drill.registry = stack.registry
    state: ChampionState = drill.state
    state.good, state.fallback = stack.good, stack.fallback
    return stack


def real_stack(drill: Drill[RealStateT]) -> RealModelStack:
    """The real model the drill's setup built (its state's `stack`, from `real_champion`).

    Raises:
        DrillError: the scenario read it before its setup built one.
    """
    if drill.state.stack is None:
        raise DrillError(f"drill {drill.scenario!r} has no real model yet: its setup builds one (real_champion)")
    return drill.state.stack


def save_drill_contract(drill: Drill[Any], name: str = DRILL_CONTRACT, keyed_rows: bool = True) -> None:
    """A DataContract block for the drill (`drill-stream`: keyed by event_id), learnt from a clean synthetic reference."""
    reference = make_batch(2_000, seed=10_000)
    reference = keyed(reference) if keyed_rows else reference
    uri = storage_uri(default_storage(), drill.model, "reference.parquet")
    write_parquet(reference, uri)
    DataContract.from_reference(
        reference, key_column="event_id" if keyed_rows else None, label_column="label", reference_uri=uri, max_quarantine_ratio=0.1
    ).save(name, overwrite=True)


# -- traffic ----------------------------------------------------------------------------


def synthetic_rows(seed: int, rows: int = SERVED_ROWS, drift: bool = False) -> pd.DataFrame:
    batch = make_batch(rows, seed=seed)
    return concept_drifted(batch, seed) if drift else batch


def serve_and_label(drill: Drill[Any], batch: pd.DataFrame, name: str, emit: bool = True) -> Served:
    """Serve `batch` (features and their true `label`: synthetic rows or a real data set's) through the champion into
    the stack's inference log, then record the true labels (with `emit`, `ml.labels.recorded`: the evidence the ladder
    acts on). Stamps the injection time at the labels."""
    log = InferenceLog()
    router = FallbackRouter(drill.model_registry, log=open_inference_log(log), close_log=True).start(refresh_in_background=False)
    try:
        served = serve_rows(router, batch, prefix=f"{drill.model}-{name}")
    finally:
        router.close()
    drill.require(served.rows_lost == 0, f"{served.failed_requests} requests and {served.rows_failed} rows failed to the client")
    drill.inject_now()
    record_labels(log, served.keys, served.labels, emit=emit)
    if emit:
        drain_events()
    drill.facts.update(rows_served=served.rows_sent, rows_lost=drill.facts.get("rows_lost", 0) + served.rows_lost)
    return served


# -- clean-up ---------------------------------------------------------------------------


def lift_emergency(drill: Drill[Any]) -> None:
    """Leave no stop in force: a drill's emergency is resolved by the drill, as an operator would after it."""
    if EmergencyRecord.read(drill.model) is not None:
        EmergencyRecord.clear(drill.model)
    clear_stop_flag(drill.model)

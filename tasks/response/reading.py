"""The response's reads of the registry (an adapter: it talks to MLflow through the `ModelRegistry` block).

A response reads the model's versions and its audit once (`read_serving_history`) and hands the resulting
`ServingHistory` to every later step (measure, decide, verify), instead of each rebuilding it from the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import AuditSnapshot, ModelRegistry, is_unavailable, reset_store_connections
from prefect_crisis.tasks.response.candidates import Candidate, ServingHistory, features_of, serving_history

STORE_RETRY_DELAYS: list[float] = [1, 2, 4, 8]  # seconds between a response step's tries while the MLflow store is unavailable (15 s in all)


def store_unavailable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition of the response's steps: try again only when the MLflow store was unavailable
    (down, locked, unreachable), never after a refusal or a bug."""
    error = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    while error is not None:
        if is_unavailable(error):
            from mlflow import MlflowClient

            from prefect_crisis.core.paths import default_tracking_uri

            reset_store_connections(MlflowClient(tracking_uri=default_tracking_uri(), registry_uri=default_tracking_uri()))
            return True
        error = error.__cause__
    return False


def serving_history_of(registry: ModelRegistry, audit: AuditSnapshot | None = None) -> ServingHistory:
    """The registry's versions and the champion alias's audit (the incident's snapshot, or read now), as one value.

    Raises:
        RegistryUnavailableError: the store cannot be read now.
    """
    trail = audit.of_alias(registry.champion_alias) if audit is not None else registry.audit_trail(registry.champion_alias)
    return serving_history(trail, registry.versions(), registry.champion_alias, registry.fallback_alias)


def candidates_from_registry(
    registry: ModelRegistry, audit: AuditSnapshot | None = None
) -> tuple[Candidate | None, list[Candidate], datetime | None]:
    """Champion, every version with its latest serving interval, and the last rollback time (see
    `candidates.serving_history`), read from the registry and its audit.

    Args:
        registry: a `ModelRegistry`.
        audit: the incident's `AuditSnapshot`; the audit is read when not given.
    """
    history = serving_history_of(registry, audit)
    return history.champion, list(history.candidates), history.last_rollback_at


@task(
    name="read-serving-history",
    cache_policy=NO_CACHE,
    retries=len(STORE_RETRY_DELAYS),
    retry_delay_seconds=STORE_RETRY_DELAYS,
    retry_condition_fn=store_unavailable,
)
def read_serving_history(registry: ModelRegistry, audit: AuditSnapshot) -> ServingHistory:
    """Read the model's versions once for a response (retried while the store is unavailable); every later step takes it."""
    return serving_history_of(registry, audit)


def model_features(registry: ModelRegistry, history: ServingHistory | None = None) -> list[str]:
    """Every feature any version of the model reads (their `crisis.features` tags); from `history` when it is given."""
    return list(history.features if history is not None else features_of(registry.versions()))

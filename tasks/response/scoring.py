"""Scoring registered versions on the incident's labelled window: the rows every version can be scored on, a version's
predictions, the window as the rollback rules see it, the candidates' measurements and the verifier of a repair."""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import AuditSnapshot, ModelRegistry, VersionInfo, first_line
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.response.candidates import ServingHistory, eligible_versions, last_served
from prefect_crisis.tasks.response.reading import STORE_RETRY_DELAYS, serving_history_of, store_unavailable
from prefect_crisis.tasks.response.recovery import Verification, verify_on_window
from prefect_crisis.tasks.response.rules import LiveWindow
from prefect_crisis.tasks.serving.inference_log import LATENCY_COLUMN


def predict_with(registry: ModelRegistry, version: str, window: pd.DataFrame, info: VersionInfo | None = None):
    """Predictions (and probabilities) of a registered version on the window (`info`: the version, when already read)."""
    info = info if info is not None else registry.version(version)
    features = [name for name in info.tags.get(TagKey.FEATURES, "").split(",") if name]
    missing = [name for name in features if name not in window.columns]
    if not features or missing:
        raise RegistryError(f"v{version} of {registry.model_name!r} needs features {missing or '(unknown)'} the window lacks")
    model = load_sklearn_model(registry.client, registry.model_name, version)
    X = window[features].to_numpy(dtype=float)
    return model.predict(X), (model.predict_proba(X) if hasattr(model, "predict_proba") else None)


def live_window(y_true: np.ndarray, y_pred: np.ndarray, latencies_ms=()) -> LiveWindow:
    """The labelled window as the rollback rules see it; error_rate is derived from accuracy."""
    return LiveWindow({"accuracy": int((y_true == y_pred).sum())}, {"accuracy": len(y_true)}, tuple(latencies_ms))


def scorable_rows(window: pd.DataFrame, label: str, features: Collection[str] | None = None) -> pd.DataFrame:
    """The window's rows every version can be scored on: a label, and a finite number in every feature the versions read
    (`features`; every numeric column when not given). A row serving answered by the fallback because the primary's
    inputs were invalid (NaN, text) cannot judge the primary.

    Example:
        >>> frame = pd.DataFrame({"x": [1.0, float("nan"), 3.0, 4.0], "t": ["a", "b", "c", "n/a"], "label": [0, 1, None, 1]})
        >>> scorable_rows(frame, "label")["x"].tolist()
        [1.0, 4.0]
        >>> scorable_rows(frame.assign(t=["1", "2", "3", "n/a"]), "label", features=["x", "t"])["x"].tolist()
        [1.0]
    """
    if features is None:
        columns = (
            window.drop(columns=[c for c in (label, "timestamp", LATENCY_COLUMN) if c in window.columns]).select_dtypes(include="number").columns
        )
    else:
        columns = [column for column in features if column in window.columns]
    values = np.column_stack([pd.to_numeric(window[column], errors="coerce").to_numpy(dtype=float) for column in columns]) if len(columns) else None
    finite = np.isfinite(values).all(axis=1) if values is not None else np.ones(len(window), dtype=bool)
    keep = finite & window[label].notna().to_numpy()
    return window if keep.all() else window[keep]


MEASURED_VERSIONS = 6  # versions scored on the window besides the champion: the most recent that served, and the fallback


@task(
    name="measure-versions",
    cache_policy=NO_CACHE,
    retries=len(STORE_RETRY_DELAYS),
    retry_delay_seconds=STORE_RETRY_DELAYS,
    retry_condition_fn=store_unavailable,
)
def measure_versions(
    registry: ModelRegistry,
    audit: AuditSnapshot,
    window: pd.DataFrame,
    label: str,
    timeline: Timeline,
    history: ServingHistory | None = None,
) -> tuple[dict[str, LiveWindow], frozenset[str]]:
    """Score the versions a repair may go to on the incident's labelled window (the same rows the champion is judged on):
    the most recent versions that served and are not implicated, and the fallback. Returns the measurements and the
    versions the window cannot feed (features it lacks, values they cannot read): never a repair's target. `history`: the
    response's one read of the registry (read here when not given)."""
    history = history if history is not None else serving_history_of(registry, audit)
    champion, candidates = history.champion, history.candidates
    logger = timeline.logger(get_run_logger(), registry.model_name, champion.version if champion else None)
    current = champion.version if champion else None
    served = sorted(eligible_versions(candidates, current), key=last_served, reverse=True)[:MEASURED_VERSIONS]
    fallback = [c for c in candidates if c.holds_fallback_alias and c.version != current]
    truth = window[label].to_numpy()
    measured: dict[str, LiveWindow] = {}
    unscorable: set[str] = set()
    for candidate in [*served, *fallback]:
        try:
            y_pred, _ = predict_with(registry, candidate.version, window)
        except (RegistryError, ValueError) as error:
            logger.warning("v%s cannot be scored on the window (never a target): %s", candidate.version, first_line(str(error)))
            unscorable.add(candidate.version)
            continue
        measured[candidate.version] = live_window(truth, y_pred)
    shown = ", ".join(f"v{v} {w.successes['accuracy'] / max(w.samples['accuracy'], 1):.1%}" for v, w in measured.items()) or "none"
    logger.info("measured on the window's %d labelled rows: %s", len(window), shown)
    return measured, frozenset(unscorable)


def verifier(
    registry: ModelRegistry,
    policy: RollbackPolicy,
    audit: AuditSnapshot,
    window: pd.DataFrame,
    label: str,
    before: Verification | None,
    min_samples_cap: int | None = None,
    history: ServingHistory | None = None,
) -> Callable[[str], Verification]:
    """Verification of a version on the window against its *own* baseline (none looser than the version it was promoted
    over); the fallback model, a stopgap, verifies when it is measured no worse than what served before
    (`recovery.verify_on_window` judges; this scores the version)."""
    candidates = (history if history is not None else serving_history_of(registry, audit)).candidates
    truth = window[label].to_numpy()

    def verify(version: str) -> Verification:
        try:
            y_pred, _ = predict_with(registry, version, window)
        except (RegistryError, ValueError) as error:
            return Verification(False, f"v{version} cannot be scored on the window: {first_line(str(error))}")
        return verify_on_window(version, live_window(truth, y_pred), candidates, policy, before, min_samples_cap=min_samples_cap)

    return verify

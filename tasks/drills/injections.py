"""The pieces a recovery drill is made of: synthetic versions registered the way a
training run registers them, live traffic served through the real router into the
stack's inference log, faults injected into a served primary, and the readers that
find out, from Prefect events and the MLflow audit, when the system noticed and
when it repaired.

Drill models are named `drill-<scenario>-<tag>`: every flow the ladder starts for
such a model knows it is a drill (its incident is marked so), and the ladder's
pages skip them (`core.vocabulary.is_drill_model`), so a drill never pages anyone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent

from prefect_crisis.blocks.registry import AliasMove, ModelRegistry
from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.vocabulary import DRILL_PREFIX, MODEL_RESOURCE, AliasAction, CrisisEvent, Responder, TagKey
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.response.report import read_events
from prefect_crisis.tasks.training.promotion import log_candidate
from prefect_crisis.tasks.drills.synthetic import feature_names, make_batch

FEATURES = feature_names(20)
# The scenarios of flows/drill.py, in the order a full drill runs them.
SCENARIO_NAMES = ("corrupted-batch", "poisoned-retrain", "concept-drift", "primary-raising", "latency-spike", "registry-unavailable",
                  "training-killed", "duplicate-event", "real-bad-release", "real-poisoned-retrain", "real-rejected-batch", "monitor-silent")
PROGRESS = logging.getLogger("prefect_crisis.drill")  # a line per step for a terminal (`crisis drill` shows it); the run log has them too
FALLBACK_FEATURES = ["f00", "f01", "f02"]
# A labelling pipeline that turns 65% of the positives into negatives: the retrain's own holdout (scored on
# those labels) still passes it, while on true labels it lands in the monitor's CRITICAL band (error ~0.4).
POSITIVES_FLIPPED = 0.65
# A drill passes on its end state. The accuracy of what serves after the response, on fresh labelled rows the response
# never saw, may fall at most this far below the pre-crisis version's on the same rows. The comparison is paired: a
# response that returns to the pre-crisis version scores exactly what it did, and another version (the fallback as a
# stopgap under drift) differs by the rows' noise, one standard deviation under 0.016 on FRESH_ROWS synthetic rows; a
# wrong end state on the real sets costs far more (digits' weak fallback 0.4, a poisoned release 0.4 to 0.9).
END_STATE_TOLERANCE = 0.03
FRESH_ROWS = 2_000  # fresh labelled rows of the synthetic scenarios (the real ones use their data set's fresh part)


def scenario_names(names: list[str] | None) -> list[str]:
    """The scenarios asked for, in the catalogue's order; all of them when none is named.

    Raises:
        CrisisError: a name is not a scenario (the message lists them).

    Example:
        >>> scenario_names(["latency-spike", "corrupted-batch"])
        ['corrupted-batch', 'latency-spike']
    """
    if not names:
        return list(SCENARIO_NAMES)
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        raise CrisisError(f"no drill scenario {', '.join(map(repr, unknown))}; the scenarios are {', '.join(SCENARIO_NAMES)}")
    return [name for name in SCENARIO_NAMES if name in names]


def drill_model_name(scenario: str, tag: str | None = None) -> str:
    """`drill-<scenario>-<tag>`, a fresh tag unless given.

    Example:
        >>> drill_model_name("latency-spike", "0001")
        'drill-latency-spike-0001'
    """
    return f"{DRILL_PREFIX}{scenario}-{tag or uuid.uuid4().hex[:6]}"


# -- versions ---------------------------------------------------------------------------

def true_labels(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return y


def positives_flipped(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels from a broken labelling pipeline: POSITIVES_FLIPPED of the positives recorded as negatives."""
    return (y & ~(rng.random(len(y)) < POSITIVES_FLIPPED)).astype(y.dtype)


def all_flipped(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1 - y


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
    now = datetime.now(timezone.utc)
    back = ModelRegistry(model_name=model).use(clock=lambda: now - served_for)
    good = register_synthetic(back, seed)
    if with_fallback:
        register_fallback(back, seed + 7)
    back.promote(good, "first model")
    return ModelRegistry(model_name=model), good


# -- traffic ----------------------------------------------------------------------------

@dataclass
class Served:
    """What a stretch of traffic left: the row keys and true labels, and what the client saw."""

    keys: list[tuple[str, str]]
    labels: list[int]
    requests: int = 0
    failed_requests: int = 0
    rows_failed: int = 0
    rows_by_fallback: int = 0
    rows_sent: int = 0

    @property
    def rows_lost(self) -> int:
        """Rows sent that no model answered: those of failed requests and the rows marked failed."""
        return self.rows_sent - (len(self.keys) - self.rows_failed)

    def extend(self, other: "Served") -> None:
        self.keys += other.keys
        self.labels += other.labels
        self.requests += other.requests
        self.failed_requests += other.failed_requests
        self.rows_failed += other.rows_failed
        self.rows_by_fallback += other.rows_by_fallback
        self.rows_sent += other.rows_sent


def serve_rows(router: Any, batch: pd.DataFrame, request_rows: int = 10, prefix: str | None = None, pause: float = 0.0) -> Served:
    """Send `batch` (features and its true `label`: synthetic rows or a real data set's) through the router
    `request_rows` at a time, as clients would; an exception is a failed request."""
    prefix = prefix or uuid.uuid4().hex[:8]
    served = Served([], [])
    for start in range(0, len(batch), request_rows):
        part = batch.iloc[start:start + request_rows]
        served.requests += 1
        served.rows_sent += len(part)
        try:
            answer = router.predict(part.drop(columns=["label"]), request_id=f"{prefix}-{start // request_rows}")
        except Exception:  # noqa: BLE001 - what a client sees: its request failed
            served.failed_requests += 1
            continue
        served.keys += [(str(request), str(row)) for request, row in zip(answer["request_id"], answer["row_id"])]
        served.labels += part["label"].astype(int).tolist()
        served.rows_failed += int((answer["answered_by"] == Responder.NONE.value).sum())
        served.rows_by_fallback += int((answer["answered_by"] == Responder.FALLBACK.value).sum())
        if pause:
            time.sleep(pause)
    return served


def concept_drifted(batch: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same inputs under a new concept: the label now follows f10..f14 instead of f00..f04 (a market that changed
    what drives the outcome), so every version trained before the change is wrong about half the time."""
    rng = np.random.default_rng(seed)
    signal = batch[[f"f{i:02d}" for i in range(10, 15)]].to_numpy() @ np.linspace(1.0, 0.2, 5)
    drifted = batch.copy()
    drifted["label"] = (signal + 0.5 * rng.standard_normal(len(batch)) > 0).astype(np.int64)
    return drifted


class FaultyEstimator:
    """A served estimator with a fault switch, the way a chaos tool breaks a dependency: `fault` None answers
    as the wrapped estimator; "raise" raises; a number sleeps that many seconds before answering."""

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.fault: str | float | None = None
        self.calls = 0
        self.faulted_calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.estimator, name)

    def _maybe_fail(self) -> None:
        with self._lock:
            self.calls += 1
            fault = self.fault
            if fault is not None:
                self.faulted_calls += 1
        if fault == "raise":
            raise RuntimeError("drill: the primary model raises")
        if isinstance(fault, (int, float)):
            time.sleep(float(fault))

    def predict_proba(self, X: Any) -> Any:
        self._maybe_fail()
        return self.estimator.predict_proba(X)

    def predict(self, X: Any) -> Any:
        self._maybe_fail()
        return self.estimator.predict(X)


def corrupt_real(batch: pd.DataFrame, rows: int, seed: int, classes: Iterable[int], label: str = "label") -> pd.DataFrame:
    """Break `rows` rows of a real batch, in equal parts: a missing value, text in a numeric column, a class the model
    never saw, a value far out of range (1e6), each in a feature chosen by `seed`. Returns the broken batch (the columns
    given text become text columns).

    Example:
        >>> batch = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [5, 6, 7, 8], "label": [0, 1, 0, 1]})
        >>> broken = corrupt_real(batch, 4, seed=0, classes=[0, 1])
        >>> int(broken["a"].isna().sum() + broken["b"].isna().sum()), sorted(broken["label"].unique().tolist())
        (1, [0, 1, 2])
    """
    rng = np.random.default_rng(seed)
    features = [name for name in batch.columns if name != label]
    broken = batch.astype(object)
    values = (np.nan, "n/a", max(classes) + 1, 1e6)
    for number, row in enumerate(rng.choice(len(batch), size=rows, replace=False)):
        kind = number % 4
        column = label if kind == 2 else str(rng.choice(features))
        broken.iat[row, broken.columns.get_loc(column)] = values[kind]
    for name in broken.columns:  # numbers stay numbers; a column given text is a text column, as it arrives
        if not broken[name].map(lambda value: isinstance(value, str)).any():
            broken[name] = pd.to_numeric(broken[name])
    return broken


def inject_into_primary(router: Any) -> FaultyEstimator:
    """Put a fault switch in front of the router's loaded primary (the served process's own model object)."""
    from dataclasses import replace

    faulty = FaultyEstimator(router.primary.estimator)
    router._loaded[router.primary.version] = faulty
    router.primary = replace(router.primary, estimator=faulty)
    return faulty


# -- what happened ----------------------------------------------------------------------

def model_events(model: str, names: Iterable[CrisisEvent], since: datetime) -> list[ReceivedEvent]:
    """The model's events of these names since `since`, oldest first."""
    return read_events(EventFilter(
        occurred=EventOccurredFilter(since=since - timedelta(seconds=1), until=datetime.now(timezone.utc) + timedelta(minutes=1)),
        event=EventNameFilter(name=[name.value for name in names]),
        resource=EventResourceFilter(id=[f"{MODEL_RESOURCE}{model}"]),
    ))


def first_event(model: str, names: Iterable[CrisisEvent], since: datetime) -> ReceivedEvent | None:
    found = [event for event in model_events(model, names, since) if event.occurred >= since]
    return found[0] if found else None


def incidents_opened(model: str, since: datetime) -> list[ReceivedEvent]:
    """The model's `ml.incident.opened` events since `since`: a response that joins the open incident emits
    `ml.incident.joined` instead, so this counts the incidents of the episode."""
    return [event for event in model_events(model, [CrisisEvent.INCIDENT_OPENED], since) if event.occurred >= since]


def champion_moves(registry: ModelRegistry, since: datetime) -> list[AliasMove]:
    """Every applied move of the champion alias at or after `since`, whatever its action, oldest first."""
    return [move for move in registry.audit_trail(registry.champion_alias) if move.applied and move.at >= since]


def applied_moves(registry: ModelRegistry, action: AliasAction, since: datetime) -> list[AliasMove]:
    """The champion's applied moves of `action` at or after `since`, oldest first."""
    return [move for move in registry.audit_trail(registry.champion_alias) if move.action == action and move.applied and move.at >= since]


def seconds(since: datetime, at: datetime | None) -> float | None:
    """Seconds from `since` to `at` (None stays None)."""
    return None if at is None else round((at - since).total_seconds(), 3)


def wait_until(read: Callable[[], Any], limit: float, every: float = 0.25) -> Any:
    """Poll `read` until it gives something truthy or `limit` seconds pass; returns its last value."""
    deadline = time.monotonic() + limit
    value = read()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value


# -- processes ----------------------------------------------------------------------------

def flow_run_processes(flow_run_id: str) -> list:
    """This machine's processes that run the flow run (a worker gives them `PREFECT__FLOW_RUN_ID`), children last."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return sorted(found, key=lambda process: len(process.parents()) if process.is_running() else 0)


def training_runs(registry: ModelRegistry) -> list:
    """The model's MLflow training runs, oldest first."""
    client = registry.client
    return client.search_runs([training_experiment(client, registry.model_name)], order_by=["attributes.start_time ASC"])

"""The faults a drill injects, as plain functions over plain data: labels a broken pipeline recorded, a concept that
changed, broken batches (synthetic and real), a fault switch in front of a served primary, and live traffic sent
through a router the way clients send it (`Served`: what they saw)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from prefect_crisis.core.vocabulary import Responder

# A labelling pipeline that turns 65% of the positives into negatives: the retrain's own holdout (scored on
# those labels) still passes it, while on true labels it lands in the monitor's CRITICAL band (error ~0.4).
POSITIVES_FLIPPED = 0.65


def true_labels(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return y


def positives_flipped(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels from a broken labelling pipeline: POSITIVES_FLIPPED of the positives recorded as negatives."""
    return (y & ~(rng.random(len(y)) < POSITIVES_FLIPPED)).astype(y.dtype)


def all_flipped(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1 - y


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

    def extend(self, other: Served) -> None:
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
        part = batch.iloc[start : start + request_rows]
        served.requests += 1
        served.rows_sent += len(part)
        try:
            answer = router.predict(part.drop(columns=["label"]), request_id=f"{prefix}-{start // request_rows}")
        except Exception:
            served.failed_requests += 1
            continue
        served.keys += [(str(request), str(row)) for request, row in zip(answer["request_id"], answer["row_id"], strict=True)]
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
    """Put a fault switch in front of the router's loaded primary (the served process's own model object), in the
    router's cache of loaded versions too (`LoadedVersions`: estimator, routing, note, loaded at), so a refresh keeps it."""
    faulty = FaultyEstimator(router.primary.estimator)
    loaded = router._loaded._loaded
    _estimator, *kept = loaded[router.primary.version]
    loaded[router.primary.version] = (faulty, *kept)
    router.primary = replace(router.primary, estimator=faulty)
    return faulty


def keyed(batch: pd.DataFrame, start: int = 0) -> pd.DataFrame:
    """The batch with an `event_id` key column first (`e0000000`, ...), as the drill's contract expects.

    Example:
        >>> keyed(pd.DataFrame({"a": [1, 2]}), start=5)["event_id"].tolist()
        ['e0000005', 'e0000006']
    """
    batch = batch.copy()
    batch.insert(0, "event_id", [f"e{start + i:07d}" for i in range(len(batch))])
    return batch


def corrupt(batch: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Break `rows` rows of the batch, in equal parts: a missing value, inf, a value far out of range, text in a
    numeric column, a duplicated key. Returns the broken batch (text makes its column a text column)."""
    rng = np.random.default_rng(seed)
    broken = batch.astype({"f04": object}).copy()
    chosen = rng.choice(len(batch) - 1, size=rows, replace=False) + 1
    for number, row in enumerate(chosen):
        kind = number % 5
        if kind == 0:
            broken.iat[row, broken.columns.get_loc("f01")] = np.nan
        elif kind == 1:
            broken.iat[row, broken.columns.get_loc("f02")] = np.inf
        elif kind == 2:
            broken.iat[row, broken.columns.get_loc("f03")] = 1e6
        elif kind == 3:
            broken.iat[row, broken.columns.get_loc("f04")] = "n/a"
        else:
            broken.iat[row, broken.columns.get_loc("event_id")] = broken.iat[row - 1, broken.columns.get_loc("event_id")]
    return broken


# A value far out of range: an `outlier` past a contract's learnt tolerance bands, `out_of_range` past a hard limit.
FAR_OUT = {"outlier", "out_of_range"}

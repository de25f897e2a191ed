"""Serving with a fallback (seed slide 2): per-row routing between the primary
(`@champion`) and the fallback (`@fallback`), a circuit breaker in front of the
primary, and hot swaps when the registry's aliases move.

A row is answered by whichever model can answer it. The primary answers with
its own `predict()`; a row whose primary columns are missing or invalid (NaN,
infinite, beyond float32's range, text, a boolean) goes to the fallback when
the fallback's own columns are valid; a row under the primary version's fitted
confidence threshold goes to the fallback (`prefect_crisis.tasks.serving.confidence_routing`: a
version without a fitted calibration gets no confidence routing unless the
policy sets a threshold); a primary that raises or times out sends its rows to
the fallback and counts against the breaker, which stops calling it and tries
again after a cool-down. Every answer says which model gave it, its version,
its confidence and, for the fallback's rows, why; a row nobody could answer is
marked failed with the reason, never answered silently.

Events (`ml.fallback.engaged` / `released`) and inference-log records leave on
background threads, off the request path.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.registry import ModelRegistry, VersionInfo
from prefect_crisis.core.errors import CrisisError, ServingError, ServingInputError
from prefect_crisis.core.timeline import Timeline, utc_now
from prefect_crisis.core.vocabulary import BreakerState, CrisisEvent, Responder, TagKey
from prefect_crisis.tasks.serving.breaker import CircuitBreaker, StateChange
from prefect_crisis.tasks.serving.inference_log import PredictionBatch, RequestError
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.serving.confidence_routing import (
    DECISION, PROBABILITY, ROUTING_ARTIFACT, RoutingCalibration, RoutingPlan, load_routing, plan_routing, raw_confidence, score_output, top_two,
)

logger = logging.getLogger("prefect_crisis.serving")

PRIMARY, FALLBACK, NONE = 0, 1, 2  # codes of the answered_by column
RESPONDERS = [Responder.PRIMARY.value, Responder.FALLBACK.value, Responder.NONE.value]
# Categorical columns with dtypes built once: 10,000 strings per answer would cost more than the prediction.
RESPONDER_DTYPE = pd.CategoricalDtype(RESPONDERS)
# scikit-learn's trees read float32: a larger value is infinite to them, and one such row would fail the whole batch.
FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING, NOT_FINITE, NOT_A_NUMBER, BOOLEAN, ABSENT = range(5)  # why a cell is invalid
INVALID = {MISSING: "is missing", NOT_FINITE: "is infinite or beyond float32's range", NOT_A_NUMBER: "is not a number",
           BOOLEAN: "is a boolean, not a number", ABSENT: "is not in the input"}
ROUTING_WAIT_SECONDS = 900.0  # how long serving looks again for the routing.json of a champion loaded without one
LOGS_REASONS = "reasons" in {field.name for field in fields(PredictionBatch)}  # an inference log with a reason column


@functools.lru_cache(maxsize=64)
def version_dtype(versions: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(versions))


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded registered version, the columns it reads (its `crisis.features` tag) and its fitted routing
    (`routing.json` of its run), or why it has none."""

    version: str
    features: tuple[str, ...]
    estimator: Any
    routing: RoutingCalibration | None = None
    routing_note: str = ""

    @classmethod
    def of(cls, info: VersionInfo, estimator: Any, routing: RoutingCalibration | None = None, routing_note: str = "") -> "ServedVersion":
        features = tuple(name for name in info.tags.get(TagKey.FEATURES, "").split(",") if name)
        if not features:
            raise ServingError(f"v{info.version} has no {TagKey.FEATURES} tag: it cannot be served (register it through prefect-crisis)")
        return cls(info.version, features, estimator, routing, routing_note)


@dataclass(frozen=True, eq=False)
class Features:
    """A request's needed columns as floats, and which cells are valid (None: all are); `flags` marks cells that
    are invalid for a reason the float value does not show: (column index, row mask, cause: text, boolean, absent)."""

    frame: pd.DataFrame
    values: np.ndarray
    valid: np.ndarray | None
    flags: tuple[tuple[int, np.ndarray, int], ...] = ()


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A column that is not plainly numeric as floats, with masks of its booleans and of its text (None: none)."""
    if column.dtype.kind == "b":
        return np.full(len(column), np.nan), np.ones(len(column), dtype=bool), None
    if column.dtype.kind in "mMcV":  # times, durations, complex numbers, raw bytes: not a feature value
        return np.full(len(column), np.nan), None, np.ones(len(column), dtype=bool)
    objects = column.to_numpy(dtype=object)
    booleans = np.fromiter((isinstance(value, (bool, np.bool_)) for value in objects), dtype=bool, count=len(objects))
    present = pd.notna(objects) & ~booleans
    try:
        values = pd.to_numeric(pd.Series(np.where(booleans, None, objects), dtype=object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    except (OverflowError, TypeError, ValueError):  # an integer too large for a float: parse value by value
        values = np.array([_number(value) for value in objects], dtype=np.float64)
        values[booleans] = np.nan
    text = present & np.isnan(values)
    return values, booleans if booleans.any() else None, text if text.any() else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (OverflowError,):
        return math.inf
    except (TypeError, ValueError):
        return math.nan


def read_features(frame: Any, needed: tuple[str, ...], answerable: tuple[tuple[str, ...], ...]) -> Features:
    """The needed columns of a request as floats, with the valid cells marked.

    A cell is valid when it is a finite number within float32's range; text and booleans are invalid, never coerced
    (numbers sent as text are numbers). Columns absent from the input are invalid on every row.

    Raises:
        ServingInputError: not a table, or no model in `answerable` (their column lists) finds all its columns.

    Example:
        >>> read = read_features(pd.DataFrame({"a": [1.0, np.nan], "b": ["2", "x"]}), ("a", "b"), (("a", "b"),))
        >>> read.values.tolist(), read.valid.tolist()
        ([[1.0, 2.0], [nan, nan]], [[True, True], [False, False]])
    """
    if not isinstance(frame, pd.DataFrame):
        try:
            frame = pd.DataFrame(frame)
        except (ValueError, TypeError) as error:
            raise ServingInputError(f"the input is not a table of rows ({error}): send a dataframe_split or dataframe_records body") from None
    present = set(frame.columns)
    absent = [name for name in needed if name not in present]
    if absent and not any(all(name in present for name in columns) for columns in answerable):
        shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
        raise ServingInputError(f"the input lacks column(s) {shown}: the served models read {len(needed)} columns ({', '.join(needed[:8])}{', ...' if len(needed) > 8 else ''})")
    dtypes, rows = frame.dtypes, len(frame)
    flags: list[tuple[int, np.ndarray, int]] = []
    if not absent and all(dtypes[name].kind in "iuf" for name in needed):
        # The usual request: plain numbers, and no column lookup when the frame is exactly the needed columns.
        same = len(frame.columns) == len(needed) and tuple(frame.columns) == needed
        values = (frame if same else frame[list(needed)]).to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        columns = []
        for index, name in enumerate(needed):
            if name not in present:
                columns.append(np.full(rows, np.nan))
                flags.append((index, np.ones(rows, dtype=bool), ABSENT))
            elif dtypes[name].kind in "iuf":
                columns.append(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                values, booleans, text = _numbers(frame[name])
                columns.append(values)
                flags += [(index, mask, cause) for mask, cause in ((text, NOT_A_NUMBER), (booleans, BOOLEAN)) if mask is not None]
        values = np.column_stack(columns) if columns else np.empty((rows, 0))
    # Two reductions decide the usual request (all valid) without a mask; NaN fails both comparisons.
    if not flags and (not values.size or (values.min() >= -FLOAT32_MAX and values.max() <= FLOAT32_MAX)):
        return Features(frame, values, None)
    with np.errstate(invalid="ignore"):
        valid = np.abs(values) <= FLOAT32_MAX  # False for NaN and +-inf too
    return Features(frame, values, valid, tuple(flags))


def invalid_reasons(features: Features, rows: np.ndarray, columns: list[int], needed: tuple[str, ...]) -> np.ndarray:
    """Per row of `rows` (each with an invalid cell among `columns`), its first invalid column and why, as text.

    Built per distinct (column, cause), not per row: a feed that drops a column sends thousands of such rows.
    """
    columns_array = np.asarray(columns)
    column = columns_array[np.argmin(features.valid[np.ix_(rows, columns_array)], axis=1)]
    cause = np.where(np.isnan(features.values[rows, column]), MISSING, NOT_FINITE)
    for index, mask, flagged in features.flags:
        cause[(column == index) & mask[rows]] = flagged
    keys, inverse = np.unique(column * 8 + cause, return_inverse=True)
    texts = np.array([f"{needed[key // 8]!r} {INVALID[key % 8]}" for key in keys.tolist()], dtype=object)
    return texts[inverse.reshape(-1)]


def confidence_of(probabilities: np.ndarray, measure: str = "max_probability") -> np.ndarray:
    """Per-row confidence: the largest class probability, or its margin over the second; NaN where not finite.

    Example:
        >>> confidence_of(np.array([[0.9, 0.1], [0.55, 0.45]])).round(2).tolist()
        [0.9, 0.55]
        >>> confidence_of(np.array([[0.9, 0.1], [0.55, 0.45]]), "margin").round(2).tolist()
        [0.8, 0.1]
    """
    # Column by column: numpy's reductions along a row of 2-10 classes are ~30x slower than
    # elementwise passes over the columns, and this runs on every request.
    columns = [probabilities[:, j] for j in range(probabilities.shape[1])]
    top, total = columns[0].copy(), columns[0].copy()
    for column in columns[1:]:
        np.maximum(top, column, out=top)  # NaN propagates
        np.add(total, column, out=total)  # so does +-inf
    if measure == "margin" and len(columns) > 1:
        if len(columns) == 2:
            top = np.abs(columns[0] - columns[1])
        else:
            ranked = np.sort(probabilities, axis=1)
            top = ranked[:, -1] - ranked[:, -2]
    top[~np.isfinite(total)] = np.nan
    return top


def primary_outputs(estimator: Any, X: np.ndarray, score: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The primary's answers, exactly its `predict()`, and the output its confidence is read from (None: no score)."""
    if score is None:
        return np.asarray(estimator.predict(X)), None
    output = score_output(estimator, X, score)
    return predicted(estimator, X, output, score), output


@functools.cache
def _argmax_rules() -> tuple[frozenset, frozenset, Any, Any]:
    """scikit-learn's `predict` methods that are the argmax of predict_proba even on ties (trees, forests, calibrated
    classifiers), those that are its argmax where it is strict (a monotone map of the same scores: linear models,
    naive Bayes, MLPs), the linear models' `predict` (the sign or argmax of decision_function), and Pipeline.predict."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble._forest import ForestClassifier
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.naive_bayes import _BaseNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import BaseDecisionTree

    exact = frozenset({BaseDecisionTree.predict, ForestClassifier.predict, CalibratedClassifierCV.predict})
    strict = frozenset({LinearClassifierMixin.predict, _BaseNB.predict, MLPClassifier.predict})
    return exact, strict, LinearClassifierMixin.predict, Pipeline.predict


def predicted(estimator: Any, X: np.ndarray, output: np.ndarray, score: str) -> np.ndarray:
    """Exactly the estimator's `predict(X)`, read off `output` (its predict_proba or decision_function on X) where that
    is how its `predict` computes the answer, so the model is called once; `predict` itself answers the rest: rows
    whose top probabilities tie (saturated probabilities of a linear model), and models this does not know.

    Example:
        >>> from sklearn.linear_model import SGDClassifier
        >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
        >>> model = SGDClassifier(loss="log_loss", random_state=0).fit(X[:2], ["b", "a"])
        >>> model.coef_ *= 1e6  # probabilities saturate: [0., 1.] and [1., 0.]
        >>> predicted(model, X, model.predict_proba(X), "probability").tolist() == model.predict(X).tolist()
        True
    """
    exact, strict, linear_predict, pipeline_predict = _argmax_rules()
    final = estimator
    while type(final).predict is pipeline_predict:  # a Pipeline's predict is its last step's on the transformed rows
        final = final.steps[-1][1]
    method, classes, output = getattr(type(final), "predict", None), getattr(final, "classes_", None), np.asarray(output)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        if score == DECISION and method is linear_predict:
            return classes.take((output > 0).astype(np.intp) if output.ndim == 1 else np.argmax(output, axis=1), axis=0)
        if score == PROBABILITY and (method in exact or method in strict) and output.ndim == 2 and output.shape[1] == len(classes):
            answers = classes.take(np.argmax(output, axis=1), axis=0)
            if method in strict:
                top, second = top_two(output)
                tied = np.flatnonzero(~(top > second) & np.isfinite(top))  # not finite: routed, not answered
                if len(tied):
                    answers[tied] = np.asarray(estimator.predict(X[tied]))
            return answers
    return np.asarray(estimator.predict(X))


def fallback_outputs(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The fallback's answers (its `predict()`) and probabilities (None without predict_proba).

    Raises:
        ValueError: its probabilities are not finite (its answers would not be either).
    """
    if not hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict(X)), None
    probabilities = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    if not np.isfinite(probabilities).all():
        raise ValueError("non-finite probabilities")
    return predicted(estimator, X, probabilities, PROBABILITY), probabilities


def _row_count(frame: Any) -> int:
    try:
        return len(frame)
    except TypeError:  # a scalar, or a 0-d array: no rows
        return 0


def _placed(answers: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    placed = np.zeros(count, dtype=answers.dtype)
    placed[rows] = answers
    return placed


class RoutedShare:
    """The share of recent rows the fallback answered, over the last `window_rows` rows (by request)."""

    def __init__(self, window_rows: int):
        self.window_rows = window_rows
        self._requests: deque[tuple[int, int]] = deque()
        self.rows = 0
        self.routed = 0

    def add(self, rows: int, routed: int) -> None:
        self._requests.append((rows, routed))
        self.rows += rows
        self.routed += routed
        while len(self._requests) > 1 and self.rows - self._requests[0][0] >= self.window_rows:
            old_rows, old_routed = self._requests.popleft()
            self.rows -= old_rows
            self.routed -= old_routed

    @property
    def share(self) -> float:
        return self.routed / self.rows if self.rows else 0.0


class FallbackRouter:
    """The serving logic as a plain object: route rows, guard the primary, follow the aliases.

    Args:
        registry: the model's registry block (its client resolves `@champion` and `@fallback`).
        policy: thresholds, breaker and refresh interval.
        log: an inference log writer (`InferenceLog(...).writer()`), or None: every request is
            handed to it as one item, turned into records on its own thread.
        close_log: close the writer with the router (when the router made it).
        timeline: where `ml.fallback.*` go (events are sent from a background thread).
        clock: the breaker's monotonic clock.
        wall_clock: request times (UTC).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        policy: FallbackPolicy | None = None,
        *,
        log: Any | None = None,
        timeline: Timeline | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        close_log: bool = False,
    ):
        self.registry = registry
        self.close_log = close_log  # the router made the writer (a served wrapper): it closes it too
        self.policy = policy or FallbackPolicy()
        self.log = log
        self.timeline = timeline or Timeline()
        self.wall_clock = wall_clock
        self.breaker = CircuitBreaker(
            self.policy.failure_threshold, self.policy.failure_window_seconds, self.policy.cooldown_seconds, clock=clock
        )
        self.breaker.add_listener(self._on_breaker_change)
        self.primary: ServedVersion | None = None
        self.fallback: ServedVersion | None = None
        # version -> (estimator, routing, why none, loaded at): a swap back costs no download
        self._loaded: dict[str, tuple[Any, RoutingCalibration | None, str, float]] = {}
        self._plans: dict[tuple, RoutingPlan] = {}  # (primary, fallback) -> how its rows are routed; its note is logged once
        self._share = RoutedShare(self.policy.share_window_rows)
        self._engaged = False
        self._state_lock = threading.Lock()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="crisis-primary") if self.policy.primary_timeout_seconds else None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.clock = clock
        self._errors: deque[tuple[float, int]] = deque()  # (when, failed rows or refused requests)
        self._last_burst = -math.inf
        self.swaps = 0

    # -- the versions --------------------------------------------------------------

    def _load(self, info: VersionInfo) -> ServedVersion:
        if info.version not in self._loaded:
            estimator = load_sklearn_model(self.registry.client, self.registry.model_name, info.version)
            try:
                routing = load_routing(self.registry.client, info.run_id)
            except ServingError as error:  # served without confidence routing, which never lowers accuracy
                routing, note = None, str(error)
            else:
                note = "" if routing is not None else f"no {ROUTING_ARTIFACT} in its run {info.run_id}"
            self._loaded[info.version] = (estimator, routing, note, self.clock())
        estimator, routing, note, _loaded_at = self._loaded[info.version]
        return ServedVersion.of(info, estimator, routing, note)

    def _routing_arrived(self, info: VersionInfo) -> ServedVersion | None:
        """The served champion with its `routing.json`, when it was loaded without one and training has logged it since
        (a version can be promoted before its training fits the routing); looked for up to ROUTING_WAIT_SECONDS."""
        estimator, routing, note, loaded_at = self._loaded[info.version]
        if routing is not None or self.clock() - loaded_at > ROUTING_WAIT_SECONDS:
            return None
        try:
            routing = load_routing(self.registry.client, info.run_id)
        except ServingError:
            return None
        if routing is None:
            return None
        self._loaded[info.version] = (estimator, routing, "", loaded_at)
        logger.info("serving %s: v%s's %s arrived after it was loaded", self.registry.model_name, info.version, ROUTING_ARTIFACT)
        return ServedVersion.of(info, estimator, routing)

    def routing_plan(self, primary: ServedVersion, fallback: ServedVersion | None) -> RoutingPlan:
        """How `primary`'s rows are routed on confidence with `fallback` behind it; the reason is logged the first time."""
        key = (primary.version, id(primary.estimator), id(primary.routing), fallback.version if fallback else None)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_routing(
                primary.estimator, primary.routing, version=primary.version, explicit_threshold=self.policy.confidence_threshold,
                fallback_version=fallback.version if fallback else None, missing=primary.routing_note or f"no {ROUTING_ARTIFACT} in its run",
            )
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = plan
            logger.log(logging.WARNING if primary.routing is None else logging.INFO, "serving %s: %s", self.registry.model_name, plan.note)
        return plan

    def refresh(self) -> bool:
        """Re-read `@champion` and `@fallback`; load and swap in a moved version. True when something changed.

        A request in flight keeps the version it started with; the next one gets the new one.

        Raises:
            ServingError: there is no champion to serve (first call only; later, the old one keeps serving).
        """
        changed = False
        champion = self.registry.champion()
        if champion is None and self.primary is None:
            raise ServingError(
                f"{self.registry.model_name!r} has no @{self.registry.champion_alias} in {self.registry.display_tracking_uri}: "
                "train and promote a version first"
            )
        if champion is not None and (self.primary is None or champion.version != self.primary.version):
            old = self.primary.version if self.primary else None
            self.primary = self._load(champion)  # one reference assignment: atomic for readers
            changed = True
            if old is not None:
                self.swaps += 1
                logger.info("serving %s: @%s moved v%s -> v%s, swapped in", self.registry.model_name, self.registry.champion_alias, old, champion.version)
        elif champion is not None and self.primary.routing is None and champion.version in self._loaded:
            arrived = self._routing_arrived(champion)
            if arrived is not None:
                self.primary, changed = arrived, True
        fallback = self.registry.version_by_alias(self.registry.fallback_alias)
        if fallback is None:
            changed |= self.fallback is not None
            self.fallback = None
        elif self.fallback is None or fallback.version != self.fallback.version:
            self.fallback = self._load(fallback)
            changed = True
        return changed

    def start(self, *, refresh_in_background: bool = True) -> "FallbackRouter":
        """Load the versions, then follow the aliases and send events on background threads."""
        if self.primary is None:
            self.refresh()
        if self.fallback is None:
            logger.warning(
                "serving %s without a fallback: no version under @%s (low-confidence rows keep the primary's answer)",
                self.registry.model_name, self.registry.fallback_alias,
            )
        # Each thread runs in a copy of the starter's context: Prefect's settings (the API a `crisis` command or a
        # flow points at) live in context variables, which a new thread does not inherit; without them the
        # events would go to a temporary server of their own.
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._send_events,), name="crisis-serving-events", daemon=True)]
        if refresh_in_background:
            self._threads.append(threading.Thread(target=contextvars.copy_context().run, args=(self._follow_aliases,), name="crisis-serving-refresh", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _follow_aliases(self) -> None:
        while not self._stop.wait(self.policy.refresh_seconds):
            try:
                self.refresh()
            except (CrisisError, OSError, ValueError) as error:
                logger.warning("serving %s: could not re-read the registry (keeps serving v%s): %s",
                               self.registry.model_name, self.primary.version if self.primary else "?", error)
            except Exception as error:  # noqa: BLE001 - the refresh thread must outlive any registry hiccup
                logger.warning("serving %s: registry refresh failed (%s: %s); keeps serving", self.registry.model_name, type(error).__name__, error)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background threads (events still queued are sent first)."""
        self._stop.set()
        self._events.put(None)
        for thread in self._threads:
            thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.log is not None and self.close_log:
            self.log.close(timeout)

    # -- events ----------------------------------------------------------------------

    def _send_events(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            event, payload, version = item
            try:
                self.timeline.emit(event, self.registry.model_name, payload, version=version)
            except Exception as error:  # noqa: BLE001 - an unreachable event API must not stop serving
                logger.warning("could not emit %s for %s: %s", event.value, self.registry.model_name, error)

    def _on_breaker_change(self, change: StateChange) -> None:
        logger.warning("serving %s: breaker %s -> %s (%s)", self.registry.model_name, change.old.value, change.new.value, change.reason)
        self._judge(f"breaker {change.new.value}: {change.reason}")

    def _judge(self, reason: str) -> None:
        """Emit engaged/released on a change of 'the fallback carries the traffic' (breaker open, or a high routed share)."""
        breaker = self.breaker.state
        with self._state_lock:
            rows, routed, share = self._share.rows, self._share.routed, self._share.share
            judged = rows >= self.policy.min_share_rows
            if not self._engaged:
                engage = breaker is BreakerState.OPEN or (judged and share > self.policy.engage_share)
                if not engage:
                    return
                self._engaged, event = True, CrisisEvent.FALLBACK_ENGAGED
            else:
                release = breaker is BreakerState.CLOSED and judged and share < self.policy.release_share
                if not release:
                    return
                self._engaged, event = False, CrisisEvent.FALLBACK_RELEASED
        payload = {
            "reason": reason,
            "breaker_state": breaker.value,
            "rows": rows,
            "rows_routed": routed,
            "routed_share": round(share, 4),
            "primary_version": self.primary.version if self.primary else None,
            "fallback_version": self.fallback.version if self.fallback else None,
        }
        self._events.put((event, payload, payload["fallback_version"] if event is CrisisEvent.FALLBACK_ENGAGED else payload["primary_version"]))

    def _count_errors(self, count: int, example: str) -> None:
        """Count failed rows and refused requests; a burst emits ml.serving.errors (at most once a window)."""
        now, window = self.clock(), self.policy.error_burst_seconds
        with self._state_lock:
            self._errors.append((now, count))
            while self._errors and now - self._errors[0][0] > window:
                self._errors.popleft()
            total = sum(n for _, n in self._errors)
            if total < self.policy.error_burst_rows or now - self._last_burst < window:
                return
            self._last_burst = now
        payload = {"errors": total, "window_seconds": window, "example": example[:300],
                   "primary_version": self.primary.version if self.primary else None}
        self._events.put((CrisisEvent.SERVING_ERRORS, payload, payload["primary_version"]))

    @property
    def engaged(self) -> bool:
        return self._engaged

    # -- predictions -------------------------------------------------------------------

    def _call_primary(self, primary: ServedVersion, X: np.ndarray, score: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self._pool is None:
            return primary_outputs(primary.estimator, X, score)
        future = self._pool.submit(primary_outputs, primary.estimator, X, score)
        try:
            return future.result(timeout=self.policy.primary_timeout_seconds)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {self.policy.primary_timeout_seconds:g} s") from None

    def predict(self, frame: Any, request_id: str | None = None) -> pd.DataFrame:
        """Answer every row by whichever model can: the primary's own `predict()`, or the fallback for rows whose
        primary columns are invalid, whose confidence is under the plan's threshold, or when the primary fails.

        Raises:
            ServingInputError: the input is not a table, or lacks columns every model needs (nothing was predicted;
                an error record is logged). Invalid values fail or reroute their rows only.
        """
        started = time.perf_counter()
        received_at = self.wall_clock()
        request_id = request_id or uuid.uuid4().hex
        primary, fallback = self.primary, self.fallback  # this request's versions, whatever a swap does meanwhile
        if primary is None:
            raise ServingError("the serving model was not started: call start() (or refresh()) first")
        plan = self.routing_plan(primary, fallback)
        needed = primary.features + (tuple(n for n in fallback.features if n not in primary.features) if fallback else ())
        try:
            features = read_features(frame, needed, (primary.features,) + ((fallback.features,) if fallback else ()))
        except ServingInputError as error:
            self._submit_error(request_id, received_at, str(error), _row_count(frame))
            self._count_errors(1, str(error))
            raise
        frame, values, rows = features.frame, features.values, len(features.frame)
        width = len(primary.features)
        fallback_columns = [needed.index(name) for name in fallback.features] if fallback else []
        codes = np.zeros(rows, dtype=np.int8)  # who answered each row: PRIMARY, FALLBACK or NONE
        confidence = np.full(rows, np.nan)
        why = np.full(rows, None, dtype=object)  # why a row is not the primary's: set where it is routed
        to_fallback = np.zeros(rows, dtype=bool)
        has_answer = np.zeros(rows, dtype=bool)  # the primary gave a usable answer
        if features.valid is None:
            live, primary_valid, fallback_valid = slice(None), None, None
        else:
            primary_valid = features.valid[:, :width].all(axis=1)
            fallback_valid = features.valid[:, fallback_columns].all(axis=1) if fallback else np.zeros(rows, dtype=bool)
            invalid = np.flatnonzero(~primary_valid)
            if len(invalid):
                to_fallback[invalid] = True
                why[invalid] = "primary input invalid: " + invalid_reasons(features, invalid, list(range(width)), needed)
            live = np.flatnonzero(primary_valid)
        live_rows = len(range(rows)[live]) if isinstance(live, slice) else len(live)

        predictions = np.zeros(rows, dtype=getattr(primary.estimator, "classes_", np.zeros(0)).dtype)
        primary_failure: str | None = None
        if live_rows:
            if self.breaker.allow():
                try:
                    answers, output = self._call_primary(primary, values[live, :width], plan.score)
                except Exception as error:  # noqa: BLE001 - any failure of the primary is the fallback's job
                    first = str(error).splitlines()[0] if str(error) else ""
                    primary_failure = f"primary v{primary.version} failed: {type(error).__name__}: {first}"
                    self.breaker.record_failure(primary_failure)
                else:
                    self.breaker.record_success()
                    predictions = answers if live_rows == rows else _placed(answers, live, rows)
                    has_answer[live] = True
                    if output is not None:
                        self._judge_confidence(plan, output, live, confidence, to_fallback, has_answer, why)
            else:
                primary_failure = f"breaker open: primary v{primary.version} not called"
            if primary_failure is not None:
                to_fallback[live] = True
                why[live] = primary_failure

        errors: dict[int, str] = {}  # row -> why it failed; empty on the usual path
        routed_any = bool(to_fallback.any())
        if routed_any:
            predictions = self._answer_by_fallback(
                fallback, values, fallback_columns, features, needed, to_fallback, fallback_valid, has_answer, codes, predictions, confidence, why, errors
            )
            why[codes != FALLBACK] = None  # the reason column explains the fallback's rows; a failed row's is its error
        failed_rows = len(errors)
        if failed_rows:
            self._count_errors(failed_rows, errors[next(iter(errors))])
        answered_by_fallback = int(np.count_nonzero(codes == FALLBACK))
        with self._state_lock:
            self._share.add(rows if primary_valid is None else int(np.count_nonzero(primary_valid | fallback_valid)), answered_by_fallback)
        self._judge(primary_failure or "rows routed to the fallback")

        output = self._output(frame, request_id, primary, fallback, codes, predictions, confidence, errors, why)
        self._submit_batch(request_id, received_at, (time.perf_counter() - started) * 1000.0, frame, needed, output)
        return output

    def _judge_confidence(self, plan: RoutingPlan, output, live, confidence, to_fallback, has_answer, why) -> None:
        """Confidence of the primary's rows (calibrated when the plan has a map); routes the ones under the threshold
        and the ones whose output is not finite (blown-up weights: their answer is not one)."""
        if plan.confidence_map is not None:
            row_confidence = plan.confidence_map(raw_confidence(output, plan.score))
        else:
            row_confidence = confidence_of(np.asarray(output, dtype=np.float64), self.policy.confidence_measure)
        confidence[live] = row_confidence
        if plan.threshold is not None:
            low = row_confidence < plan.threshold  # False for NaN
            if low.any():
                rows = np.arange(len(confidence))[live][low]
                to_fallback[rows] = True
                why[rows] = f"primary confidence under {plan.threshold:.4g}" + (" (calibrated)" if plan.confidence_map is not None else "")
        broken = np.isnan(row_confidence)
        if broken.any():
            rows = np.arange(len(confidence))[live][broken]
            to_fallback[rows], has_answer[rows] = True, False
            why[rows] = f"primary gave non-finite {plan.score} scores"

    def _answer_by_fallback(
        self, fallback, values, fallback_columns, features, needed, to_fallback, fallback_valid, has_answer, codes, predictions, confidence, why, errors,
    ) -> np.ndarray:
        """Answer the routed rows the fallback can read; a routed row nobody can answer is marked failed with its reason,
        one the primary answered keeps that answer. Returns the predictions array (its dtype may widen)."""
        if fallback is None:
            routed = np.zeros(len(codes), dtype=bool)
        else:
            routed = to_fallback if fallback_valid is None else to_fallback & fallback_valid
        unreadable = to_fallback & ~routed  # the fallback cannot read them (or there is none)
        if unreadable.any():
            rows = np.flatnonzero(unreadable & ~has_answer)
            if len(rows):
                if fallback is None:
                    cause = np.full(len(rows), f"no fallback version under @{self.registry.fallback_alias}", dtype=object)
                else:
                    cause = "fallback input invalid: " + invalid_reasons(features, rows, fallback_columns, needed)
                self._fail(rows, why[rows] + "; " + cause, codes, confidence, errors)
        rows = np.flatnonzero(routed)
        if not len(rows):
            return predictions
        try:
            answers, probabilities = fallback_outputs(fallback.estimator, values[np.ix_(rows, fallback_columns)])
        except Exception as error:  # noqa: BLE001 - the rows keep the primary's answer or fail with the reason, never silently
            first = str(error).splitlines()[0] if str(error) else ""
            failed = rows[~has_answer[rows]]
            self._fail(failed, why[failed] + f"; fallback v{fallback.version} failed: {type(error).__name__}: {first}", codes, confidence, errors)
            return predictions
        if answers.dtype != predictions.dtype:
            predictions = predictions.astype(np.result_type(predictions.dtype, answers.dtype) if answers.dtype.kind in "biuf" and predictions.dtype.kind in "biuf" else object)
        codes[rows] = FALLBACK
        predictions[rows] = answers
        confidence[rows] = confidence_of(probabilities, self.policy.confidence_measure) if probabilities is not None else np.nan
        return predictions

    @staticmethod
    def _fail(rows: np.ndarray, messages: np.ndarray, codes, confidence, errors) -> None:
        codes[rows], confidence[rows] = NONE, np.nan
        errors.update(zip(rows.tolist(), messages.tolist()))

    def _output(self, frame, request_id, primary, fallback, codes, predictions, confidence, errors, reasons) -> pd.DataFrame:
        """The answer table. Categorical columns: building 10,000 strings would cost more than the prediction."""
        rows = len(codes)
        version_names = [primary.version] + ([fallback.version] if fallback and fallback.version != primary.version else [])
        fallback_code = version_names.index(fallback.version) if fallback else -1
        version_codes = np.where(codes == PRIMARY, 0, np.where(codes == FALLBACK, fallback_code, -1)).astype(np.int8)
        error_column = np.full(rows, None, dtype=object)
        if errors:
            failed = np.fromiter(errors, dtype=np.int64, count=len(errors))
            error_column[failed] = list(errors.values())
            predictions = predictions.astype(object)
            predictions[failed] = None
        if self.policy.id_column and self.policy.id_column in frame.columns:
            row_ids = frame[self.policy.id_column].to_numpy()
        else:
            row_ids = np.arange(rows)
        return pd.DataFrame(
            {
                "prediction": predictions,
                "answered_by": pd.Categorical.from_codes(codes, dtype=RESPONDER_DTYPE),
                "version": pd.Categorical.from_codes(version_codes, dtype=version_dtype(tuple(version_names))),
                "confidence": confidence,
                "error": pd.Series(error_column, dtype=object, copy=False),
                "reason": pd.Series(reasons, dtype=object, copy=False),
                "request_id": pd.Series(np.array([request_id], dtype=object).repeat(rows), dtype=object, copy=False),
                "row_id": row_ids,
            },
            copy=False,
        )

    # -- the inference log ----------------------------------------------------------------

    def _submit_batch(self, request_id, received_at, latency_ms, frame, needed, output) -> None:
        if self.log is None:
            return
        self.log.submit(
            PredictionBatch(
                request_id=request_id,
                model=self.registry.model_name,
                received_at=received_at,
                latency_ms=latency_ms,
                inputs=frame[[name for name in needed if name in frame.columns]],
                # Handed over as they are (Series): the writer's thread turns them into rows.
                row_ids=output["row_id"],
                predictions=output["prediction"],
                answered_by=output["answered_by"],
                versions=output["version"],
                confidence=output["confidence"],
                errors=output["error"],
                **({"reasons": output["reason"]} if LOGS_REASONS else {}),
            )
        )

    def _submit_error(self, request_id, received_at, reason, rows) -> None:
        if self.log is None:
            return
        self.log.submit(RequestError(request_id=request_id, model=self.registry.model_name, received_at=received_at, reason=reason, rows=rows))

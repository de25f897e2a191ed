"""Serving with a fallback (seed slide 2): per-row routing between the primary
(`@champion`) and the fallback (`@fallback`), a circuit breaker in front of the
primary, and hot swaps when the registry's aliases move.

The seed switched a whole batch to the fallback on one low mean confidence and
never switched back. Here a row whose primary confidence is under the policy's
threshold is answered by the fallback, the rest by the primary; a primary that
raises or times out sends the batch to the fallback and counts against the
breaker, which stops calling it and tries again after a cool-down. Every
answer says which model gave it, its version and its confidence; a row nobody
could answer is marked failed with the reason, never answered silently.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.registry import ModelRegistry, VersionInfo
from prefect_crisis.core.errors import CrisisError, ServingError, ServingInputError
from prefect_crisis.core.timeline import Timeline, utc_now
from prefect_crisis.core.vocabulary import BreakerState, CrisisEvent, Responder, TagKey
from prefect_crisis.tasks.breaker import CircuitBreaker, StateChange
from prefect_crisis.tasks.inference_log import PredictionBatch, RequestError
from prefect_crisis.tasks.models import load_sklearn_model

logger = logging.getLogger("prefect_crisis.serving")

PRIMARY, FALLBACK, NONE = 0, 1, 2  # codes of the answered_by column
RESPONDERS = [Responder.PRIMARY.value, Responder.FALLBACK.value, Responder.NONE.value]
# Categorical columns with dtypes built once: 10,000 strings per answer would cost more than the prediction.
RESPONDER_DTYPE = pd.CategoricalDtype(RESPONDERS)


@functools.lru_cache(maxsize=64)
def version_dtype(versions: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(versions))


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded registered version and the columns it reads (its `crisis.features` tag)."""

    version: str
    features: tuple[str, ...]
    estimator: Any

    @classmethod
    def of(cls, info: VersionInfo, estimator: Any) -> "ServedVersion":
        features = tuple(name for name in info.tags.get(TagKey.FEATURES, "").split(",") if name)
        if not features:
            raise ServingError(f"v{info.version} has no {TagKey.FEATURES} tag: it cannot be served (register it through prefect-crisis)")
        return cls(info.version, features, estimator)


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
        self._loaded: dict[str, Any] = {}  # version -> estimator: a swap back costs no download
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
            self._loaded[info.version] = load_sklearn_model(self.registry.client, self.registry.model_name, info.version)
        return ServedVersion.of(info, self._loaded[info.version])

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

    def _columns(self, frame: Any, needed: tuple[str, ...]) -> pd.DataFrame:
        if not isinstance(frame, pd.DataFrame):
            try:
                frame = pd.DataFrame(frame)
            except (ValueError, TypeError) as error:
                raise ServingInputError(f"the input is not a table of rows ({error}): send a dataframe_split or dataframe_records body") from None
        present = set(frame.columns)
        missing = [name for name in needed if name not in present]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise ServingInputError(f"the input lacks column(s) {shown}: the served models read {len(needed)} columns ({', '.join(needed[:8])}{', ...' if len(needed) > 8 else ''})")
        dtypes = frame.dtypes
        for name in needed:
            if dtypes[name].kind in "biuf":
                continue
            column = frame[name]
            numbers = pd.to_numeric(column, errors="coerce")
            wrong = column.notna() & numbers.isna()
            if wrong.any():
                position = int(np.flatnonzero(wrong.to_numpy())[0])
                raise ServingInputError(f"column {name!r} is not numeric ({column.iloc[position]!r} in row {position}): send numbers")
        return frame

    @staticmethod
    def _values(frame: pd.DataFrame, needed: tuple[str, ...]) -> np.ndarray:
        """The needed columns as floats; no column lookup when the frame is exactly them (the usual request)."""
        if len(frame.columns) == len(needed) and tuple(frame.columns) == needed:
            return frame.to_numpy(dtype=np.float64, na_value=np.nan)
        return frame[list(needed)].to_numpy(dtype=np.float64, na_value=np.nan)

    def _call_primary(self, primary: ServedVersion, X: np.ndarray) -> np.ndarray:
        if self._pool is None:
            return primary.estimator.predict_proba(X)
        future = self._pool.submit(primary.estimator.predict_proba, X)
        try:
            return future.result(timeout=self.policy.primary_timeout_seconds)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {self.policy.primary_timeout_seconds:g} s") from None

    def predict(self, frame: Any, request_id: str | None = None) -> pd.DataFrame:
        """Answer every row: by the primary when it is confident, else by the fallback; failed rows say why.

        Raises:
            ServingInputError: a needed column is missing or not numeric (nothing was predicted; an error record is logged).
        """
        started = time.perf_counter()
        received_at = self.wall_clock()
        request_id = request_id or uuid.uuid4().hex
        primary, fallback = self.primary, self.fallback  # this request's versions, whatever a swap does meanwhile
        if primary is None:
            raise ServingError("the serving model was not started: call start() (or refresh()) first")
        needed = primary.features + (tuple(n for n in fallback.features if n not in primary.features) if fallback else ())
        try:
            frame = self._columns(frame, needed)
        except ServingInputError as error:
            self._submit_error(request_id, received_at, str(error), len(frame) if hasattr(frame, "__len__") else 0)
            self._count_errors(1, str(error))
            raise
        rows = len(frame)
        values = self._values(frame, needed)
        codes = np.zeros(rows, dtype=np.int8)  # who answered each row: PRIMARY, FALLBACK or NONE
        predictions = np.zeros(rows, dtype=primary.estimator.classes_.dtype)
        confidence = np.full(rows, np.nan)
        errors: dict[int, str] = {}  # row -> why it failed; empty on the usual path

        scorable = np.isfinite(values).all(axis=1)
        all_scorable = bool(scorable.all())
        if not all_scorable:
            codes[~scorable] = NONE
            errors.update(dict.fromkeys(np.flatnonzero(~scorable).tolist(), "a needed feature is missing or not finite: neither model can answer the row"))
        live = slice(None) if all_scorable else np.flatnonzero(scorable)
        live_rows = rows if all_scorable else len(live)
        width = len(primary.features)

        to_fallback = np.zeros(rows, dtype=bool)
        primary_failure: str | None = None
        if live_rows:
            if self.breaker.allow():
                try:
                    probabilities = np.asarray(self._call_primary(primary, values[live, :width]), dtype=np.float64)
                except Exception as error:  # noqa: BLE001 - any failure of the primary is the fallback's job
                    first = str(error).splitlines()[0] if str(error) else ""
                    primary_failure = f"primary v{primary.version} failed: {type(error).__name__}: {first}"
                    self.breaker.record_failure(primary_failure)
                else:
                    self.breaker.record_success()
                    row_confidence = confidence_of(probabilities, self.policy.confidence_measure)
                    confidence[live] = row_confidence
                    # A row with non-finite probabilities has NaN confidence: routed below, its argmax never stands.
                    predictions[live] = primary.estimator.classes_[np.argmax(probabilities, axis=1)]
                    to_fallback[live] = ~(row_confidence >= self.policy.confidence_threshold)  # NaN confidence is low
            else:
                primary_failure = f"breaker open: primary v{primary.version} not called"
            if primary_failure is not None:
                to_fallback[live] = True

        routed = np.flatnonzero(to_fallback)
        if len(routed):
            predictions = self._answer_by_fallback(fallback, needed, values, routed, primary_failure, codes, predictions, confidence, errors)
        failed_rows = int(np.count_nonzero(codes == NONE))
        if failed_rows:
            self._count_errors(failed_rows, errors[next(iter(errors))])
        with self._state_lock:
            self._share.add(live_rows, int(np.count_nonzero(codes == FALLBACK)))
        self._judge(primary_failure or "low-confidence rows routed to the fallback")

        output = self._output(frame, request_id, primary, fallback, codes, predictions, confidence, errors)
        self._submit_batch(request_id, received_at, (time.perf_counter() - started) * 1000.0, frame, needed, output)
        return output

    def _answer_by_fallback(self, fallback, needed, values, routed, primary_failure, codes, predictions, confidence, errors) -> np.ndarray:
        """Answer the routed rows by the fallback (or mark them failed); returns the predictions array (its dtype may widen)."""
        if fallback is None:
            # Low confidence with nothing to route to: the primary's answer stands, unless it gave none
            # (it failed, or its probabilities were not finite).
            failed = routed if primary_failure is not None else routed[np.isnan(confidence[routed])]
            cause = primary_failure or f"primary v{self.primary.version if self.primary else '?'} gave non-finite probabilities"
            codes[failed] = NONE
            errors.update(dict.fromkeys(failed.tolist(), f"{cause}; no fallback version under @{self.registry.fallback_alias}"))
            return predictions
        columns = [needed.index(name) for name in fallback.features]
        try:
            probabilities = np.asarray(fallback.estimator.predict_proba(values[np.ix_(routed, columns)]), dtype=np.float64)
            if not np.all(np.isfinite(probabilities)):
                raise ValueError("non-finite probabilities")
        except Exception as error:  # noqa: BLE001 - the rows are marked failed with the reason, never answered silently
            codes[routed], confidence[routed] = NONE, np.nan
            cause = primary_failure or "primary not confident"
            errors.update(dict.fromkeys(routed.tolist(), f"{cause}; fallback v{fallback.version} failed: {type(error).__name__}: {error}"))
            return predictions
        answers = fallback.estimator.classes_[np.argmax(probabilities, axis=1)]
        if answers.dtype != predictions.dtype:
            predictions = predictions.astype(np.result_type(predictions.dtype, answers.dtype) if answers.dtype.kind in "biuf" else object)
        codes[routed] = FALLBACK
        predictions[routed] = answers
        confidence[routed] = confidence_of(probabilities, self.policy.confidence_measure)
        return predictions

    def _output(self, frame, request_id, primary, fallback, codes, predictions, confidence, errors) -> pd.DataFrame:
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
                inputs=frame[list(needed)],
                # Handed over as they are (Series): the writer's thread turns them into rows.
                row_ids=output["row_id"],
                predictions=output["prediction"],
                answered_by=output["answered_by"],
                versions=output["version"],
                confidence=output["confidence"],
                errors=output["error"],
            )
        )

    def _submit_error(self, request_id, received_at, reason, rows) -> None:
        if self.log is None:
            return
        self.log.submit(RequestError(request_id=request_id, model=self.registry.model_name, received_at=received_at, reason=reason, rows=rows))

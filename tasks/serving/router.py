"""Serving with a fallback (seed slide 2): the router that answers each request by the primary (`@champion`)
or the fallback (`@fallback`), a circuit breaker in front of the primary, and hot swaps when the registry's
aliases move.

The parts: how a request's cells are read (`row_features`), the models' answers (`answers`), how rows are
routed and the answer table (`row_routing`), the versions served and the fallback's share (`served`), the
loaded versions (`hot_swap`). This module is the I/O around them: loading from the registry, following the
aliases, the breaker's events and the inference log.

Every answer says which model gave it, its version, its confidence and, for the fallback's rows, why (a
RouteReason first, stored in the inference log's `reason` column too); a row nobody could answer is marked
failed with the reason, never answered silently. Events (`ml.fallback.engaged` / `released`) and
inference-log records leave on background threads, off the request path.
"""

from __future__ import annotations

import contextvars
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
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.errors import CrisisError, ServingError, ServingInputError
from prefect_crisis.core.timeline import Timeline, utc_now
from prefect_crisis.core.vocabulary import CrisisEvent
from prefect_crisis.tasks.serving.answers import confidence_of, fallback_outputs, predicted, primary_outputs
from prefect_crisis.tasks.serving.breaker import CircuitBreaker, StateChange
from prefect_crisis.tasks.serving.confidence_routing import ROUTING_ARTIFACT, RoutingPlan, plan_routing
from prefect_crisis.tasks.serving.hot_swap import ROUTING_WAIT_SECONDS, LoadedVersions
from prefect_crisis.tasks.serving.log_writer import PredictionBatch, RequestError
from prefect_crisis.tasks.serving.row_features import (
    FLOAT32_MAX,
    INVALID,
    RESPONDER_DTYPE,
    RESPONDERS,
    Features,
    invalid_reasons,
    read_features,
    row_count,
    version_dtype,
)
from prefect_crisis.tasks.serving.row_routing import answer_table, route_rows
from prefect_crisis.tasks.serving.served import RoutedShare, ServedVersion, engagement_change

__all__ = [
    "FLOAT32_MAX",
    "INVALID",
    "LOGS_REASONS",
    "RESPONDERS",
    "RESPONDER_DTYPE",
    "ROUTING_WAIT_SECONDS",
    "FallbackRouter",
    "Features",
    "RoutedShare",
    "ServedVersion",
    "confidence_of",
    "fallback_outputs",
    "invalid_reasons",
    "predicted",
    "primary_outputs",
    "read_features",
    "version_dtype",
]

logger = logging.getLogger("prefect_crisis.serving")

LOGS_REASONS = True  # the inference log stores each row's reason (kept for code that checked)


class FallbackRouter:
    """The serving logic as a plain object: route rows, guard the primary, follow the aliases.

    Args:
        registry: the model's registry block (its client resolves `@champion` and `@fallback`).
        policy: thresholds, breaker and refresh interval.
        log: an inference log writer (`open_inference_log(InferenceLog(...))`), or None: every request is
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
        self.breaker = CircuitBreaker(self.policy.failure_threshold, self.policy.failure_window_seconds, self.policy.cooldown_seconds, clock=clock)
        self.breaker.add_listener(self._on_breaker_change)
        self.primary: ServedVersion | None = None
        self.fallback: ServedVersion | None = None
        self._loaded = LoadedVersions(registry, clock)  # a swap back costs no download
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

    def routing_plan(self, primary: ServedVersion, fallback: ServedVersion | None) -> RoutingPlan:
        """How `primary`'s rows are routed on confidence with `fallback` behind it; the reason is logged the first time."""
        key = (primary.version, id(primary.estimator), id(primary.routing), fallback.version if fallback else None)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_routing(
                primary.estimator,
                primary.routing,
                version=primary.version,
                explicit_threshold=self.policy.confidence_threshold,
                fallback_version=fallback.version if fallback else None,
                missing=primary.routing_note or f"no {ROUTING_ARTIFACT} in its run",
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
            self.primary = self._loaded.load(champion)  # one reference assignment: atomic for readers
            changed = True
            if old is not None:
                self.swaps += 1
                logger.info(
                    "serving %s: @%s moved v%s -> v%s, swapped in", self.registry.model_name, self.registry.champion_alias, old, champion.version
                )
        elif champion is not None and self.primary is not None and self.primary.routing is None and champion.version in self._loaded:
            arrived = self._loaded.routing_arrived(champion)
            if arrived is not None:
                self.primary, changed = arrived, True
        fallback = self.registry.version_by_alias(self.registry.fallback_alias)
        if fallback is None:
            changed |= self.fallback is not None
            self.fallback = None
        elif self.fallback is None or fallback.version != self.fallback.version:
            self.fallback = self._loaded.load(fallback)
            changed = True
        return changed

    def start(self, *, refresh_in_background: bool = True) -> FallbackRouter:
        """Load the versions, then follow the aliases and send events on background threads."""
        if self.primary is None:
            self.refresh()
        if self.fallback is None:
            logger.warning(
                "serving %s without a fallback: no version under @%s (low-confidence rows keep the primary's answer)",
                self.registry.model_name,
                self.registry.fallback_alias,
            )
        # Each thread runs in a copy of the starter's context: Prefect's settings (the API a `crisis` command or a
        # flow points at) live in context variables, which a new thread does not inherit; without them the
        # events would go to a temporary server of their own.
        self._threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(self._send_events,), name="crisis-serving-events", daemon=True)
        ]
        if refresh_in_background:
            self._threads.append(
                threading.Thread(target=contextvars.copy_context().run, args=(self._follow_aliases,), name="crisis-serving-refresh", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        return self

    def _follow_aliases(self) -> None:
        while not self._stop.wait(self.policy.refresh_seconds):
            try:
                self.refresh()
            except (CrisisError, OSError, ValueError) as error:
                logger.warning(
                    "serving %s: could not re-read the registry (keeps serving v%s): %s",
                    self.registry.model_name,
                    self.primary.version if self.primary else "?",
                    error,
                )
            except Exception as error:
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
            except Exception as error:
                logger.warning("could not emit %s for %s: %s", event.value, self.registry.model_name, error)

    def _on_breaker_change(self, change: StateChange) -> None:
        logger.warning("serving %s: breaker %s -> %s (%s)", self.registry.model_name, change.old.value, change.new.value, change.reason)
        self._judge(f"breaker {change.new.value}: {change.reason}")

    def _judge(self, reason: str) -> None:
        """Emit engaged/released on a change of 'the fallback carries the traffic' (breaker open, or a high routed share)."""
        breaker = self.breaker.state
        with self._state_lock:
            rows, routed, share = self._share.rows, self._share.routed, self._share.share
            event = engagement_change(
                self._engaged,
                breaker,
                self._share,
                min_rows=self.policy.min_share_rows,
                engage_share=self.policy.engage_share,
                release_share=self.policy.release_share,
            )
            if event is None:
                return
            self._engaged = event is CrisisEvent.FALLBACK_ENGAGED
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
        payload = {
            "errors": total,
            "window_seconds": window,
            "example": example[:300],
            "primary_version": self.primary.version if self.primary else None,
        }
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
            self._submit_error(request_id, received_at, str(error), row_count(frame))
            self._count_errors(1, str(error))
            raise
        routed = route_rows(
            features,
            needed,
            primary,
            fallback,
            plan,
            self.breaker,
            self._call_primary,
            confidence_measure=self.policy.confidence_measure,
            fallback_alias=self.registry.fallback_alias,
        )
        if routed.errors:
            self._count_errors(len(routed.errors), routed.errors[next(iter(routed.errors))])
        with self._state_lock:
            self._share.add(routed.readable_rows, routed.fallback_rows)
        self._judge(routed.primary_failure or "rows routed to the fallback")

        output = answer_table(features.frame, request_id, primary, fallback, routed, self.policy.id_column)
        self._submit_batch(request_id, received_at, (time.perf_counter() - started) * 1000.0, features.frame, needed, output)
        return output

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
                reasons=output["reason"],
            )
        )

    def _submit_error(self, request_id, received_at, reason, rows) -> None:
        if self.log is None:
            return
        self.log.submit(RequestError(request_id=request_id, model=self.registry.model_name, received_at=received_at, reason=reason, rows=rows))

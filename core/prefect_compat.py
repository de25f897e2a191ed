"""Every use of Prefect's internals, in one place.

The project keeps to Prefect's public API (flows, tasks, blocks, the client, events,
automations, artifacts, variables). Where it needs more - sending events patiently while a
server is away, draining the events queue before a command prints its result, running a
flow run in a warm process, refreshing settings after pointing a process at a stack - it
does so here, so that a Prefect upgrade is checked against one module (and its tests).
Nothing else in the project imports `prefect.events.worker`, `prefect.events.clients`,
`prefect.flow_engine`, `prefect.logging.configuration`, `prefect.logging.handlers` or
`prefect.context`'s settings refresh (checked by tests/unit/test_layers.py).
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import datetime
from typing import Any

from prefect_crisis.core.uris import mask_uri
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

# How events outlast a Prefect server that is away (restarted, upgraded, briefly down). Prefect's events client
# keeps each event it has not seen confirmed and sends it again when it reconnects, but it looks for a lost server
# only every 30 s, and it spends its ~8 s of reconnection attempts on every event emitted while the server is away
# (a process exiting then waits that long per event). Ours spends them once per outage: from then on an event is
# held at once, and the held events are sent again every 2 s until the server answers, so an event emitted during
# a restart reaches the automations within seconds of the server's return. Nothing is written to disk: a process
# that exits (or drains its events) while the server is away looks for it 5 s more, then loses what it held, and
# its log says so.
RESEND_EVERY_SECONDS = 2.0
FLUSH_ON_CLOSE_SECONDS = 5.0  # a drain or the process's exit waits this long for an away server, once
DELIVERY = logging.getLogger("prefect_crisis.events")


@functools.cache  # one class: the worker instances are keyed by it
def _patient_client_type():
    import time

    from prefect.events.clients import RETRYABLE_EXCEPTIONS, PrefectEventsClient

    from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed

    class PatientEventsClient(PrefectEventsClient):
        """Prefect's events client that holds events while the server is away and resends them every 2 s."""

        def __init__(self, api_url: str | None = None):
            super().__init__(api_url=api_url, checkpoint_interval=RESEND_EVERY_SECONDS)
            self._away_since: float | None = None

        def _went_away(self, error: Exception) -> None:
            self._away_since = self._away_since or time.monotonic()
            DELIVERY.warning(
                "the Prefect server at %s does not answer (%s): events are held in this process and sent "
                "again when it answers; they are lost if the process ends first",
                mask_uri(self._api_url),
                error,
            )

        async def __aenter__(self):
            try:
                return await super().__aenter__()
            except RETRYABLE_EXCEPTIONS as error:  # started while the server is away: hold, and look for it every 2 s
                self._went_away(error)
                self._start_checkpoint_task()
                return self

        async def _emit(self, event) -> None:
            if self._away_since is not None and self._websocket is None:
                self._unconfirmed_events.append(event)  # held: the resend loop sends it when the server answers
                return
            try:
                await super()._emit(event)  # Prefect's: keeps the event until confirmed, tries to reconnect ~8 s
            except RETRYABLE_EXCEPTIONS as error:
                self._went_away(error)

        def _log_connection_error(self, error: Exception) -> None:
            return None  # said once per outage, in our words, by _emit

        async def __aexit__(self, *exc_info) -> None:
            """On close (a drain, the process's exit) with events held: look for the server a few seconds more."""
            self._stop_checkpoint_task()  # one reconnect at a time: the resend loop's or this one
            async for _attempt in Retrying(stop=stop_after_delay(FLUSH_ON_CLOSE_SECONDS), wait=wait_fixed(0.5)).aattempts():
                if self._away_since is None or not self._unconfirmed_events:
                    break
                try:
                    await self._reconnect()  # sends them
                except Exception:
                    continue
            if self._away_since is not None and self._unconfirmed_events:
                DELIVERY.warning(
                    "the Prefect server at %s still does not answer: %d held events lost", mask_uri(self._api_url), len(self._unconfirmed_events)
                )
            await super().__aexit__(*exc_info)

        async def _reconnect(self) -> None:
            held = len(self._unconfirmed_events)
            await super()._reconnect()  # on success it has sent every held event again
            if self._away_since is not None:
                DELIVERY.warning(
                    "the Prefect server at %s answers again after %.0f s: %d held events sent",
                    mask_uri(self._api_url),
                    time.monotonic() - self._away_since,
                    held,
                )
                self._away_since = None

    return PatientEventsClient


def _events_worker(api_url: str):
    """The events worker of this process for `api_url`: Prefect's EventsWorker with the patient client."""
    from prefect.events.worker import EventsWorker

    # keyed by server: a process that talks to two servers in turn never sends one's events to the other
    worker = super(EventsWorker, EventsWorker).instance.__func__(EventsWorker, _patient_client_type(), (("api_url", api_url),))
    _flush_before_exit(worker)
    return worker


_FLUSHED_AT_EXIT: set[int] = set()


def _flush_before_exit(worker, waiting=None) -> None:
    """At the process's exit, let `worker` send what it has queued before Prefect drains it.

    Prefect drains its events worker at exit and warns "Still processing items: N items remaining..." when the
    queue is not empty at that moment, though it then sends them: a script that emitted its last events just
    before ending printed that warning. This waits (FLUSH_ON_CLOSE_SECONDS at most) for the queue to empty
    first; registered after the worker started, it runs before Prefect's drain (those hooks run last-in first-out).
    """
    if id(worker) in _FLUSHED_AT_EXIT:
        return
    _FLUSHED_AT_EXIT.add(id(worker))
    waiting = waiting or Retrying(stop=stop_after_delay(FLUSH_ON_CLOSE_SECONDS), wait=wait_fixed(0.05))
    threading._register_atexit(lambda: queue_emptied(worker, waiting))  # the hook Prefect's services use for the same reason


def queue_emptied(worker, waiting) -> bool:
    """True once `worker`'s queue is empty (polled by `waiting`); False when its budget ran out first."""
    queue = getattr(worker, "_queue", None)
    return queue is None or bool(waiting.poll(lambda: queue.qsize() == 0))


def send_event(name: str, resource: dict[str, str], related: list[dict[str, str]], payload: dict[str, Any], occurred: datetime) -> Any:
    """Send one event: through the patient events worker to a running server, or Prefect's own path (`emit_event`)
    for Prefect Cloud, an ephemeral server and a process with events turned off."""
    from prefect.events import Event, emit_event
    from prefect.events.worker import emit_events_to_cloud, should_emit_events_to_running_server
    from prefect.settings import PREFECT_API_URL

    if emit_events_to_cloud() or not should_emit_events_to_running_server():
        return emit_event(event=name, resource=resource, related=related, payload=payload, occurred=occurred)
    sent = Event(event=name, resource=resource, related=related, payload=payload, occurred=occurred)
    _events_worker(PREFECT_API_URL.value()).send(sent)
    return sent


def drain_events(timeout: float | None = None, *, at_exit: bool = False) -> None:
    """Wait until this process's events have left for the server (`timeout` seconds at most)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout, at_exit=at_exit)


def refresh_settings() -> None:
    """Let Prefect, which read its settings at import, see the environment as it is now."""
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def ensure_logging() -> None:
    """Configure Prefect's loggers now (Prefect does it lazily), so a plain script's first line shows."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


def prefect_console_handlers() -> list[logging.Handler]:
    """The root logger's Prefect console handlers (a command quiets them while it draws its own output)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    return [handler for handler in logging.getLogger().handlers if isinstance(handler, PrefectConsoleHandler)]


def run_flow_in_this_process(flow: Any, flow_run: Any, **options: Any) -> Any:
    """Run a flow run of a deployment here (the warm worker's process), as Prefect's engine would in a new one
    (`options`: the engine's, e.g. `return_type="state"`, `error_logger`)."""
    from prefect.flow_engine import run_flow

    return run_flow(flow, flow_run=flow_run, **options)


PRIVATE_MODULES = (
    "prefect.events.worker",
    "prefect.events.clients",
    "prefect.flow_engine",
    "prefect.logging.configuration",
    "prefect.logging.handlers",
)
PRIVATE_NAMES = ("refresh_global_settings_context", "_register_atexit")

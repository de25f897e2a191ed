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

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from prefect_crisis.core.uris import mask_uri
from prefect_crisis.core.waiting import Retrying, stop_after_delay, stop_never, wait_fixed

# How events outlast a Prefect server that is away (restarted, upgraded, briefly down). Our events client implements
# Prefect's `EventsClient` interface and sends each event through a connection of its own (a `PrefectEventsClient` it
# opens and closes, used through `__aenter__`, `emit` and `__aexit__` only). An event is held in our list until its
# connection has confirmed it (the server answered a ping sent after it), so an event confirmed is never sent again
# and one not confirmed is never dropped while the process lives. When a connection fails, one fresh connection is
# tried at once (a proxy or the server may close an idle one); when that fails too the server is away: from then on
# an event is held at once, and the held events are sent again every 2 s until the server answers, so an event
# emitted during a restart reaches the automations within seconds of the server's return. Nothing is written to disk:
# a process that exits (or drains its events) while the server is away looks for it 5 s more, then loses what it
# held, and its log says so.
RESEND_EVERY_SECONDS = 2.0
FLUSH_ON_CLOSE_SECONDS = 5.0  # a drain or the process's exit waits this long for an away server, once
DELIVERY = logging.getLogger("prefect_crisis.events")


class Connection(Protocol):
    """What the patient sender needs of a connection: Prefect's events client's public surface."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...

    async def emit(self, event: Any) -> None: ...


class PatientSender:
    """Sends events in order over connections it opens itself; holds them while the server is away and sends them
    again every `resending` pause until it answers; on `close`, looks for an away server for `flushing`'s budget.

    An event leaves the held list only once `connection.emit` returned for it (a connection that confirms each event
    before returning, as ours does), so a confirmed event is never sent twice and an unconfirmed one never dropped.
    `away_errors` are the errors that mean "the server does not answer"; any other error is raised to the caller
    and the event stays held for the next delivery.

    Example:
        >>> class Server:  # a connection that accepts everything
        ...     received = []
        ...     async def __aenter__(self): return self
        ...     async def __aexit__(self, *exc_info): return None
        ...     async def emit(self, event): self.received.append(event)
        >>> async def two_events():
        ...     sender = PatientSender("http://prefect:4200/api", connect=Server)
        ...     await sender.send("one")
        ...     await sender.send("two")
        ...     await sender.close()
        ...     return Server.received, sender.held
        >>> asyncio.run(two_events())
        (['one', 'two'], [])
    """

    def __init__(
        self,
        api_url: str,
        connect: Callable[[], Connection],
        away_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
        resending: Retrying | None = None,
        flushing: Retrying | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api_url = api_url
        self.held: list[Any] = []  # emitted, not yet confirmed: sent again until they are
        self.away_since: float | None = None
        self._connect = connect
        self._away_errors = away_errors
        self._resending = resending or Retrying(stop=stop_never(), wait=wait_fixed(RESEND_EVERY_SECONDS))
        self._flushing = flushing or Retrying(stop=stop_after_delay(FLUSH_ON_CLOSE_SECONDS), wait=wait_fixed(0.5))
        self._clock = clock
        self._connection: Connection | None = None
        self._sending = asyncio.Lock()  # one delivery at a time (an emit's, the resend loop's, the close's): order, no doubles
        self._resend_task: asyncio.Task[None] | None = None

    async def send(self, event: Any) -> None:
        """Send `event` (after any held before it), or hold it while the server is away."""
        self.held.append(event)
        if self.away_since is not None:
            return  # held: the resend loop sends it when the server answers
        async with self._sending:
            try:
                await self._deliver()
            except self._away_errors as error:
                self._went_away(error)

    async def close(self) -> None:
        """On close (a drain, the process's exit) with events held: look for the server a few seconds more, then
        say how many are lost."""
        task, self._resend_task = self._resend_task, None
        if task is not None:
            async with self._sending:  # not in the middle of a send: a half-sent event would be sent twice
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.held:
            async for _attempt in self._flushing.aattempts():
                if await self._try_delivery():
                    break
        if self.held:
            DELIVERY.warning("the Prefect server at %s still does not answer: %d held events lost", mask_uri(self.api_url), len(self.held))
        await self._disconnect()

    async def _deliver(self) -> int:
        """Send the held events in order, each dropped from the list once its connection confirmed it; how many."""
        sent = 0
        while self.held:
            reused = self._connection is not None
            try:
                if self._connection is None:
                    self._connection = self._connect()
                    await self._connection.__aenter__()
                await self._connection.emit(self.held[0])
            except BaseException as error:
                await self._disconnect()
                if reused and isinstance(error, self._away_errors):
                    continue  # a connection lost while idle (a proxy's timeout, a restart since): one fresh one at once
                raise
            self.held.pop(0)  # confirmed: never sent again
            sent += 1
        return sent

    async def _try_delivery(self) -> bool:
        """One delivery of the held events; True when none is left (and the server, if it was away, is back)."""
        async with self._sending:
            try:
                sent = await self._deliver()
            except Exception as error:
                DELIVERY.debug("the Prefect server at %s still does not answer (%s)", mask_uri(self.api_url), error)
                return False
        if self.away_since is not None:
            DELIVERY.warning(
                "the Prefect server at %s answers again after %.0f s: %d held events sent",
                mask_uri(self.api_url),
                self._clock() - self.away_since,
                sent,
            )
            self.away_since = None
        return True

    def _went_away(self, error: BaseException) -> None:
        self.away_since = self._clock()
        DELIVERY.warning(
            "the Prefect server at %s does not answer (%s): events are held in this process and sent "
            "again when it answers; they are lost if the process ends first",
            mask_uri(self.api_url),
            error,
        )
        self._resend_task = asyncio.get_running_loop().create_task(self._resend_while_away())

    async def _resend_while_away(self) -> None:
        async for attempt in self._resending.aattempts():
            if attempt.number > 1 and await self._try_delivery():  # the first attempt is the one that just failed
                self._resend_task = None
                return

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.__aexit__(None, None, None)
        except Exception as error:  # a connection to a server that is gone may not close cleanly; it is dropped either way
            DELIVERY.debug("closing a connection to the Prefect server at %s: %s", mask_uri(self.api_url), error)


# Set while a connection of ours talks to the server: Prefect's own "Unable to connect" warning is then left out, as
# the sender says it once per outage, in its words (Prefect's would come every 2 s and say the events may be lost).
_OUR_CONNECTION: contextvars.ContextVar[bool] = contextvars.ContextVar("prefect_crisis_our_connection", default=False)


class _SaidOnceByTheSender(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_OUR_CONNECTION.get() and record.levelno >= logging.WARNING and str(record.msg).startswith("Unable to connect"))


@functools.cache  # one class, subclassed once per server by `_patient_client_type`
def patient_events_client_type() -> Any:
    """`PatientEventsClient`, Prefect's `EventsClient` interface over a `PatientSender` (built on first use, so that
    importing this module does not import Prefect)."""
    from prefect.events.clients import RETRYABLE_EXCEPTIONS, EventsClient, PrefectEventsClient
    from prefect.settings import PREFECT_API_URL

    logging.getLogger("prefect.events.clients").addFilter(_SaidOnceByTheSender())

    class QuietConnection:
        """One connection: Prefect's events client, confirming each event before `emit` returns, never
        reconnecting or resending by itself (the sender does)."""

        def __init__(self, api_url: str):
            self.client = PrefectEventsClient(api_url, reconnection_attempts=0, checkpoint_every=1, checkpoint_interval=float("inf"))

        async def __aenter__(self) -> QuietConnection:
            token = _OUR_CONNECTION.set(True)
            try:
                await self.client.__aenter__()
            finally:
                _OUR_CONNECTION.reset(token)
            return self

        async def __aexit__(self, *exc_info: Any) -> None:
            await self.client.__aexit__(*exc_info)

        async def emit(self, event: Any) -> None:
            token = _OUR_CONNECTION.set(True)
            try:
                await self.client.emit(event)
            finally:
                _OUR_CONNECTION.reset(token)

    class PatientEventsClient(EventsClient):
        """An events client that holds events while the Prefect server is away and sends them every 2 s until it answers."""

        server_api_url: str | None = None  # set by `_patient_client_type` for one server

        def __init__(self, api_url: str | None = None, **policies: Any):
            url = api_url or self.server_api_url or PREFECT_API_URL.value()
            self.sender = PatientSender(url, connect=lambda: QuietConnection(url), away_errors=RETRYABLE_EXCEPTIONS, **policies)

        async def _emit(self, event: Any) -> None:
            await self.sender.send(event)

        async def __aexit__(self, *exc_info: Any) -> None:
            try:
                await self.sender.close()
            finally:
                await super().__aexit__(*exc_info)

    return PatientEventsClient


@functools.cache  # one class per server: the worker instances are keyed by it
def _patient_client_type(api_url: str) -> Any:
    return type("PatientEventsClient", (patient_events_client_type(),), {"server_api_url": api_url})


def _events_worker(api_url: str):
    """The events worker of this process for `api_url`: Prefect's EventsWorker with the patient client."""
    from prefect.events.worker import EventsWorker

    # keyed by server (one client type per server: `EventsWorker.instance` takes a type, no options), so a process
    # that talks to two servers in turn never sends one's events to the other
    worker = EventsWorker.instance(_patient_client_type(api_url))
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
    sent = Event.model_validate({"event": name, "resource": resource, "related": related, "payload": payload, "occurred": occurred})
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

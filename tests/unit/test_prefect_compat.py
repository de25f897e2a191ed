"""The patient events sender (core/prefect_compat.py): events are held while the Prefect server is away, sent once
when it answers again, never twice once confirmed, and counted as lost when the process closes while it is away.

The sender is driven over fake connections on a fake clock; one test runs Prefect's own events client against a
port where nothing listens, and one checks that the client is Prefect's public `EventsClient`, not a subclass of
its websocket client.
"""

from __future__ import annotations

import asyncio
import doctest
import logging
import socket

import pytest

from prefect_crisis.core import prefect_compat
from prefect_crisis.core.prefect_compat import RESEND_EVERY_SECONDS, PatientSender
from prefect_crisis.core.waiting import FakeClock, Retrying, stop_after_delay, stop_never, wait_fixed

URL = "http://prefect:4200/api"


class Server:
    """A Prefect server that is up or away; `received` is every event that reached it, in order."""

    def __init__(self):
        self.up = True
        self.received: list[str] = []
        self.opened = 0
        self.lose_confirmation_of: set[str] = set()  # reaches the server, but the answer to its ping is lost

    def connect(self) -> Connection:
        return Connection(self)


class Connection:
    def __init__(self, server: Server):
        self.server = server
        self.closed = False

    async def __aenter__(self):
        if not self.server.up:
            raise OSError("connection refused")
        self.server.opened += 1
        return self

    async def __aexit__(self, *exc_info):
        self.closed = True

    async def emit(self, event: str) -> None:
        if not self.server.up or self.closed:
            raise ConnectionResetError("the connection is gone")
        self.server.received.append(event)
        if event in self.server.lose_confirmation_of:
            self.server.lose_confirmation_of.discard(event)
            self.closed = True
            raise ConnectionResetError("closed before the pong")


class Ticks:
    """The resend loop's sleep: moves the fake clock and gives the loop back to the test."""

    def __init__(self, clock: FakeClock):
        self.clock = clock

    async def asleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        await asyncio.sleep(0)


def sender_of(server: Server, clock: FakeClock) -> PatientSender:
    ticks = Ticks(clock)
    return PatientSender(
        URL,
        connect=server.connect,
        resending=Retrying(stop=stop_never(), wait=wait_fixed(RESEND_EVERY_SECONDS), clock=clock, asleep=ticks.asleep),
        flushing=Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.5), clock=clock, asleep=clock.asleep),
        clock=clock,
    )


async def resend_passes(count: int) -> None:
    for _ in range(count * 4):  # each pass of the resend loop: its sleep, the lock, the delivery
        await asyncio.sleep(0)


def messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "prefect_crisis.events"]


def test_events_are_held_while_the_server_is_away_and_sent_once_when_it_answers(caplog):
    server, clock = Server(), FakeClock()

    async def outage():
        sender = sender_of(server, clock)
        await sender.send("before")
        server.up = False
        await sender.send("during-1")  # the connection is gone, a fresh one is refused: away
        await sender.send("during-2")  # held at once
        await resend_passes(3)
        held_while_away = list(sender.held)
        server.up = True
        await resend_passes(3)
        await sender.send("after")
        await sender.close()
        return held_while_away, sender.held

    with caplog.at_level(logging.INFO, logger="prefect_crisis.events"):
        held_while_away, held_at_the_end = asyncio.run(outage())
    assert held_while_away == ["during-1", "during-2"]
    assert server.received == ["before", "during-1", "during-2", "after"]  # none twice, in order
    assert held_at_the_end == []
    said = messages(caplog)
    assert len(said) == 2, said  # one warning per outage, one on return
    assert said[0].startswith(f"the Prefect server at {URL} does not answer (connection refused): events are held")
    assert said[1].startswith(f"the Prefect server at {URL} answers again after ") and said[1].endswith(": 2 held events sent")


def test_the_resend_loop_offers_the_held_events_every_two_seconds_and_no_sooner():
    server, clock = Server(), FakeClock()
    server.up = False

    async def away():
        sender = sender_of(server, clock)
        await sender.send("held")
        await resend_passes(5)
        await sender.close()

    asyncio.run(away())
    resend_pauses = [pause for pause in clock.sleeps if pause == RESEND_EVERY_SECONDS]
    assert resend_pauses and server.received == []


def test_an_event_not_confirmed_is_sent_again_and_a_confirmed_one_never():
    server, clock = Server(), FakeClock()
    server.lose_confirmation_of = {"two"}

    async def lost_pong():
        sender = sender_of(server, clock)
        await sender.send("one")
        await sender.send("two")  # sent, the connection closes before it is confirmed: sent again on a fresh one
        await sender.send("three")
        await sender.close()
        return sender

    sender = asyncio.run(lost_pong())
    assert server.received == ["one", "two", "two", "three"]  # "one" was confirmed: never again
    assert sender.held == [] and sender.away_since is None


def test_a_connection_lost_while_idle_is_replaced_at_once_without_a_warning(caplog):
    server, clock = Server(), FakeClock()

    async def idle_timeout():
        sender = sender_of(server, clock)
        await sender.send("one")
        sender._connection.closed = True  # a proxy closed it while idle
        await sender.send("two")
        await sender.close()
        return sender

    with caplog.at_level(logging.INFO, logger="prefect_crisis.events"):
        sender = asyncio.run(idle_timeout())
    assert server.received == ["one", "two"] and server.opened == 2
    assert sender.away_since is None and messages(caplog) == []


def test_closing_while_the_server_is_away_waits_its_budget_then_says_how_many_are_lost(caplog):
    server, clock = Server(), FakeClock()
    server.up = False

    async def exit_while_away():
        sender = sender_of(server, clock)
        for event in ("a", "b", "c"):
            await sender.send(event)
        started = clock.now
        await sender.close()
        return clock.now - started

    with caplog.at_level(logging.INFO, logger="prefect_crisis.events"):
        waited = asyncio.run(exit_while_away())
    assert waited == pytest.approx(5.0)
    assert messages(caplog)[-1] == f"the Prefect server at {URL} still does not answer: 3 held events lost"


def test_closing_sends_what_is_held_when_the_server_is_back_in_time(caplog):
    server, clock = Server(), FakeClock()
    server.up = False

    async def back_during_the_close():
        sender = sender_of(server, clock)
        await sender.send("held")
        server.up = True  # the resend loop has not looked yet: the close does
        await sender.close()
        return sender

    with caplog.at_level(logging.INFO, logger="prefect_crisis.events"):
        sender = asyncio.run(back_during_the_close())
    assert server.received == ["held"] and sender.held == []
    assert messages(caplog)[-1].endswith(": 1 held events sent")


def test_the_sender_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(PatientSender, "PatientSender", globs={"PatientSender": PatientSender, "asyncio": asyncio}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def test_prefects_client_to_a_server_that_is_not_there_holds_and_counts_the_lost_in_our_words(caplog):
    from prefect.events import Event

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    clock = FakeClock()
    client = prefect_compat.patient_events_client_type()(
        url, flushing=Retrying(stop=stop_after_delay(1), wait=wait_fixed(0.5), clock=clock, asleep=clock.asleep), clock=clock
    )

    async def emit_two():
        async with client:
            await client.emit(Event(event="crisis.test", resource={"prefect.resource.id": "crisis.test"}))
            await client.emit(Event(event="crisis.test", resource={"prefect.resource.id": "crisis.test"}))

    with caplog.at_level(logging.DEBUG):
        asyncio.run(emit_two())
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.name for record in warnings] == ["prefect_crisis.events", "prefect_crisis.events"], [r.getMessage() for r in warnings]
    assert "does not answer" in warnings[0].getMessage() and warnings[1].getMessage().endswith(": 2 held events lost")


def test_the_client_is_prefects_public_interface_one_type_per_server():
    from prefect.events.clients import EventsClient, PrefectEventsClient

    first, again, other = (prefect_compat._patient_client_type(url) for url in ("http://a:1/api", "http://a:1/api", "http://b:2/api"))
    assert first is again and first is not other
    assert issubclass(first, EventsClient) and not issubclass(first, PrefectEventsClient)
    assert first().sender.api_url == "http://a:1/api" and other().sender.api_url == "http://b:2/api"

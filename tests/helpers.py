"""Helpers for tests that read back through a real Prefect server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prefect.events.worker import EventsWorker

T = TypeVar("T")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0, every: float = 0.25) -> T:
    """Poll `read()` until `done(value)`: events reach the server asynchronously
    (emitted over a websocket, then persisted in batches). Returns the last value."""
    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value

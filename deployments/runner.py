"""Serve flows with a Prefect Runner on a background thread of this process.

Runs started from the served deployments execute in child processes, as under
`flow.serve()`, so cancelling one from the UI, the CLI or an automation sends
it the same signal a worker would. Used by the end-to-end tests and the
benchmarks; handy in a notebook too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator

from prefect import Flow
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.waiting import Retrying, stop_after_delay, wait_fixed


@contextlib.contextmanager
def serving(flow: Flow, deployment: str | None = None, start_timeout: float = 60.0) -> Iterator[str]:
    """Serve `flow` until the block ends; yields the deployment's full name.

    The server's URL is exported as PREFECT_API_URL for the run processes,
    since settings made in code do not reach a child process.
    """
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
    runner = Runner(name=f"crisis-{uuid.uuid4().hex[:6]}", query_seconds=1, pause_on_shutdown=False)
    deployment = deployment or f"{flow.name}-{uuid.uuid4().hex[:6]}"

    async def serve() -> None:
        await runner.aadd_flow(flow, name=deployment)
        await runner.start()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="crisis-runner")
    thread.start()
    if not Retrying(stop=stop_after_delay(start_timeout), wait=wait_fixed(0.05)).poll(lambda: runner.started):
        raise StackError(f"the Prefect runner did not start within {start_timeout:.0f}s")
    try:
        yield f"{flow.name}/{deployment}"
    finally:
        runner.execute_in_background(runner.astop).result(timeout=60)
        thread.join(60)

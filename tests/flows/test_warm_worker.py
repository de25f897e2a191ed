"""The warm worker against the session's real Prefect server: it runs its pool's flow
runs in threads of its own process (no new process per run), several at once, with the
run's states reported by Prefect's engine; a run that names another stack is refused
with the reason, never run against the wrong one."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

from prefect_crisis.deployments.warm_worker import WARM_TYPE, WarmWorker
from tests.helpers import wait_for

# What the flow saw, keyed by the run's label: the flow runs in this very process, so it can write here.
SEEN: dict[str, dict] = {}


@flow(name="warm-echo")
def echo(label: str, seconds: float = 0.0) -> str:
    SEEN[label] = {"pid": os.getpid(), "thread": threading.get_ident(), "home": os.environ.get("CRISIS_HOME"), "at": time.monotonic()}
    time.sleep(seconds)
    SEEN[label]["done"] = time.monotonic()
    return label


@contextmanager
def running_worker(pool: str):
    """A WarmWorker polling `pool` every 0.5 s on its own event loop in a thread; cancelled on exit."""
    loop = asyncio.new_event_loop()
    worker = WarmWorker(work_pool_name=pool, limit=4)
    started, holder = threading.Event(), {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        holder["task"] = loop.create_task(worker.start(printer=lambda message: started.set()))
        with contextlib.suppress(asyncio.CancelledError):  # how the context manager below stops it
            loop.run_until_complete(holder["task"])

    with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: 0.5}):
        thread = threading.Thread(target=contextvars.copy_context().run, args=(main,), daemon=True)
        thread.start()
        assert started.wait(60), "the warm worker did not start"
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(holder["task"].cancel)
        thread.join(30)


@pytest.fixture
def warm_pool(prefect_server, monkeypatch):
    """A crisis-warm pool with a deployment of `echo`; the worker bound to one CRISIS_HOME."""
    monkeypatch.setenv("CRISIS_HOME", "/srv/stack-a")
    pool = f"warm-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type=WARM_TYPE, base_job_template=WarmWorker.get_default_base_job_template()))
        deployment = client.create_deployment(
            flow_id=client.create_flow_from_name("warm-echo"),
            name=pool,
            entrypoint=f"{__name__}:echo",
            work_pool_name=pool,
        )
    yield pool, deployment
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment)
        client.delete_work_pool(pool)


def start(deployment, label: str, seconds: float = 0.0, env: dict | None = None):
    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(
            deployment, parameters={"label": label, "seconds": seconds}, job_variables={"env": env} if env else None
        )


def final(run_id, timeout: float = 60.0):
    def read():
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id)

    return wait_for(read, lambda run: run.state is not None and run.state.is_final(), timeout=timeout, every=0.2)


def test_runs_execute_in_threads_of_the_worker_process_at_the_same_time(warm_pool):
    pool, deployment = warm_pool
    labels = [f"run-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    with running_worker(pool):
        runs = [start(deployment, label, seconds=6.0) for label in labels]
        finished = [final(run.id) for run in runs]
    assert [run.state.type.value for run in finished] == ["COMPLETED"] * 3
    assert {SEEN[label]["pid"] for label in labels} == {os.getpid()}  # no process was started for them
    assert len({SEEN[label]["thread"] for label in labels}) == 3
    # they ran at the same time: some run started before another one had ended (not one after another)
    spans = sorted((SEEN[label]["at"], SEEN[label]["done"]) for label in labels)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    assert all(run.infrastructure_pid.startswith("crisis-warm:") for run in finished)
    assert all(SEEN[label]["home"] == "/srv/stack-a" for label in labels)


def test_a_run_for_another_stack_is_refused_with_the_reason_and_the_next_one_runs(warm_pool):
    pool, deployment = warm_pool
    stranger, neighbour = f"stranger-{uuid.uuid4().hex[:6]}", f"neighbour-{uuid.uuid4().hex[:6]}"
    with running_worker(pool):
        refused = final(start(deployment, stranger, env={"CRISIS_HOME": "/srv/stack-b"}).id)
        accepted = final(start(deployment, neighbour, env={"CRISIS_HOME": "/srv/stack-a"}).id)
    assert refused.state.type.value == "CRASHED" and "CRISIS_HOME is /srv/stack-b" in refused.state.message
    assert stranger not in SEEN and os.environ["CRISIS_HOME"] == "/srv/stack-a"
    assert accepted.state.type.value == "COMPLETED" and SEEN[neighbour]["home"] == "/srv/stack-a"


def test_a_failing_flow_is_failed_by_the_engine_and_the_worker_keeps_serving(warm_pool):
    pool, deployment = warm_pool
    after = f"after-{uuid.uuid4().hex[:6]}"
    with running_worker(pool):
        broken = final(start(deployment, "x", seconds=-1).id)  # time.sleep(-1) raises ValueError inside the flow
        fine = final(start(deployment, after).id)
    assert broken.state.type.value == "FAILED" and "ValueError" in (broken.state.message or "")
    assert fine.state.type.value == "COMPLETED" and after in SEEN


def test_runs_left_by_a_warm_worker_that_is_gone_are_marked_crashed_at_the_next_start(warm_pool):
    import socket

    from prefect.states import Running

    from prefect_crisis.deployments.warm_worker import crash_orphans

    pool, deployment = warm_pool
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, elsewhere = start(deployment, "orphan"), start(deployment, "elsewhere")
    with get_client(sync_client=True) as client:
        client.update_flow_run(orphan.id, infrastructure_pid=f"crisis-warm:{socket.gethostname()}:{dead.pid}")
        client.update_flow_run(elsewhere.id, infrastructure_pid=f"crisis-warm:another-host:{dead.pid}")
        for run in (orphan, elsewhere):
            client.set_flow_run_state(run.id, Running(), force=True)
    assert crash_orphans(pool) == 1
    with get_client(sync_client=True) as client:
        crashed, untouched = client.read_flow_run(orphan.id), client.read_flow_run(elsewhere.id)
    assert crashed.state.type.value == "CRASHED" and "is gone" in crashed.state.message
    assert untouched.state.type.value == "RUNNING"  # another host's worker may still be running it

"""The warm worker's plain parts: which environment a run may bind, what it records as its
infrastructure, the pool's job template, that its process is never 'killed' for a run, and that a
cancelled run's thread is stopped and the run ends Cancelled (against the session's real server)."""

from __future__ import annotations

import asyncio
import time
import uuid

import anyio
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import InfrastructureNotAvailable
from prefect.states import Cancelling

from prefect_crisis.deployments.warm_worker import (
    CANCEL_REPEAT_SECONDS,
    WARM_TYPE,
    CancelWatch,
    WarmJobConfiguration,
    WarmRunCancelled,
    WarmWorker,
    bind_environment,
    infrastructure_id,
)


def test_a_missing_variable_is_bound_once_and_prefect_per_run_variables_are_skipped():
    environ = {"PATH": "/usr/bin"}
    assert bind_environment({"CRISIS_HOME": "/srv/a", "PREFECT__FLOW_RUN_ID": "123", "UNSET": None}, environ) is None
    assert environ == {"PATH": "/usr/bin", "CRISIS_HOME": "/srv/a"}
    assert bind_environment({"PREFECT__FLOW_RUN_ID": "456"}, environ) is None and "PREFECT__FLOW_RUN_ID" not in environ


def test_another_value_is_refused_and_nothing_of_that_run_is_applied():
    environ = {"CRISIS_HOME": "/srv/a"}
    refused = bind_environment({"EXTRA": "1", "CRISIS_HOME": "/srv/b"}, environ)
    assert refused is not None and "CRISIS_HOME is /srv/b" in refused and "/srv/a" in refused
    assert environ == {"CRISIS_HOME": "/srv/a"}  # EXTRA was not applied either


def test_homes_compare_as_paths(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    environ = {"CRISIS_HOME": str(tmp_path / "real")}
    assert bind_environment({"CRISIS_HOME": str(tmp_path / "link")}, environ) is None
    assert bind_environment({"MLFLOW_TRACKING_URI": "sqlite:///a"}, {"MLFLOW_TRACKING_URI": "sqlite:///b"}) is not None


def test_the_pool_template_and_the_infrastructure_id():
    template = WarmWorker.get_default_base_job_template()
    assert WarmWorker.type == WARM_TYPE == "crisis-warm"
    assert {"env", "labels", "name"} <= set(template["variables"]["properties"])
    assert infrastructure_id().startswith("crisis-warm:") and infrastructure_id().split(":")[-1].isdigit()


def test_killing_a_run_is_refused_not_the_worker_process():
    worker = WarmWorker(work_pool_name="unused", create_pool_if_not_found=False)
    with pytest.raises(InfrastructureNotAvailable, match="stops a cancelled run"):
        asyncio.run(worker.kill_infrastructure(infrastructure_id(), WarmJobConfiguration()))


def test_a_cancel_is_raised_once_the_thread_started_and_again_only_after_a_pause():
    raised = []
    watch = CancelWatch(thread_ids=[], raise_in=lambda thread, exception: raised.append((thread, exception)) or True)
    assert not watch.stop(now=0.0)
    watch.thread_ids.append(7)
    assert watch.stop(now=1.0) and watch.raised
    assert not watch.stop(now=1.0 + CANCEL_REPEAT_SECONDS / 2)
    assert watch.stop(now=1.0 + CANCEL_REPEAT_SECONDS)
    assert raised == [(7, WarmRunCancelled), (7, WarmRunCancelled)]


@flow(name="warm-cancel-sleeper")
def sleeper(seconds: float = 60.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "slept"


@pytest.mark.usefixtures("prefect_server")
def test_a_cancelled_run_on_the_warm_worker_stops_and_ends_cancelled():
    async def scenario():
        async with get_client() as client:
            flow_run = await client.create_flow_run(sleeper, parameters={"seconds": 60.0})
            async with WarmWorker(work_pool_name=f"warm-cancel-{uuid.uuid4().hex[:6]}") as worker:

                async def flow_of(run):
                    return sleeper

                worker._flow_of = flow_of
                started = time.monotonic()
                async with anyio.create_task_group() as group:

                    async def cancel_once_running():
                        while (await client.read_flow_run(flow_run.id)).state.type != StateType.RUNNING:
                            await anyio.sleep(0.1)
                        await client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

                    group.start_soon(cancel_once_running)
                    result = await worker.run(flow_run, WarmJobConfiguration())
            return result, time.monotonic() - started, (await client.read_flow_run(flow_run.id)).state

    result, seconds, state = asyncio.run(scenario())
    assert state.is_cancelled(), state
    assert result.status_code == 0 and seconds < 30

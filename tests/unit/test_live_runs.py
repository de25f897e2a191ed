"""A killed `crisis train` never leaves its flow run Running: the process records itself on its run (pid and
start time), a SIGHUP or SIGTERM ends the run Crashed, and after a SIGKILL the next crisis command marks it
Crashed. A run whose process still lives is never crashed as a leftover of a dead server (against the
session's real server; the training processes are small real ones)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC

import psutil
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, Running

from prefect_crisis.deployments.leftovers import mark_leftovers_crashed
from prefect_crisis.deployments.live_runs import TrainProcess, crash_dead_train_runs
from tests.helpers import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def dead_process() -> TrainProcess:
    sleeper = subprocess.Popen(SLEEPER)
    started_at = psutil.Process(sleeper.pid).create_time()
    sleeper.kill()
    sleeper.wait()
    return TrainProcess(TrainProcess.current().host, sleeper.pid, started_at)


def test_the_recorded_process_is_ours_by_pid_and_start_time_only():
    current = TrainProcess.current()
    assert TrainProcess.parse(current.infrastructure_id()) == current and current.why_gone() is None
    assert TrainProcess(current.host, current.pid, current.started_at - 60).why_gone() is not None  # the pid, reused
    assert "not running" in dead_process().why_gone()
    assert TrainProcess("another-host", 1, 0.0).why_gone() is None  # nothing here can tell: never marked
    assert TrainProcess.parse("12345") is None and TrainProcess.parse("crisis-train:box:pid:1.0") is None


def running_run(client, infrastructure_pid: str | None):
    @flow(name=f"live-runs-{uuid.uuid4().hex[:6]}")
    def placeholder() -> None:
        pass

    run = client.create_flow_run(placeholder)
    client.set_flow_run_state(run.id, Running(), force=True)
    if infrastructure_pid is not None:
        client.update_flow_run(run.id, infrastructure_pid=infrastructure_pid)
    return run


@pytest.mark.usefixtures("prefect_server")
def test_only_runs_of_a_gone_train_process_are_crashed():
    with get_client(sync_client=True) as client:
        killed = running_run(client, dead_process().infrastructure_id())
        live = running_run(client, TrainProcess.current().infrastructure_id())
        worker_run = running_run(client, None)
        assert str(killed.id) in crash_dead_train_runs(client)
        assert client.read_flow_run(killed.id).state.is_crashed()
        assert client.read_flow_run(live.id).state.is_running() and client.read_flow_run(worker_run.id).state.is_running()
        for run in (live, worker_run):
            client.set_flow_run_state(run.id, Completed(), force=True)


@pytest.mark.usefixtures("prefect_server")
def test_a_dead_servers_leftovers_spare_runs_whose_process_lives(tmp_path):
    with get_client(sync_client=True) as client:
        left = running_run(client, None)
        outlived = running_run(client, TrainProcess.current().infrastructure_id())
    marked = mark_leftovers_crashed(PREFECT_API_URL.value(), f"sqlite:///{tmp_path / 'none.db'}", is_alive=lambda run: run.id == outlived.id)
    assert str(left.id) in marked.flow_runs and str(outlived.id) not in marked.flow_runs
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(left.id).state.is_crashed() and client.read_flow_run(outlived.id).state.is_running()
        client.set_flow_run_state(outlived.id, Completed(), force=True)


TRAINING = textwrap.dedent(
    """
    import sys, time
    from prefect import flow
    from prefect.exceptions import TerminationSignal
    from prefect_crisis.deployments.live_runs import record_train_process, signals_end_the_run

    @flow(name=sys.argv[1])
    def train_like() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        with signals_end_the_run():
            train_like.with_options(on_running=[record_train_process])()
    except TerminationSignal:
        sys.exit(130)  # as `crisis train` does: one line and this code, not a death by the signal
    """
)


def start_training(tmp_path):
    """A `crisis train`-like process on the session's server, once its run records it; (process, flow run id)."""
    name = f"train-like-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "train_like.py"
    script.write_text(TRAINING)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "CRISIS_NO_AUTOCONNECT": "1"}
    process = subprocess.Popen([sys.executable, str(script), name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recorded_run():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        return next((run for run in runs if f":{process.pid}:" in (run.infrastructure_pid or "")), None)

    run = wait_for(recorded_run, lambda found: found is not None and found.state.is_running(), timeout=60)
    assert run is not None, "the training process never recorded itself on its run"
    return process, run.id


def final_state(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_hang_up_or_terminate_ends_the_run_crashed_before_the_process_exits(tmp_path, signum):
    process, flow_run_id = start_training(tmp_path)
    process.send_signal(signum)
    assert process.wait(timeout=30) == 130
    assert final_state(flow_run_id).is_crashed()


@pytest.mark.usefixtures("prefect_server")
def test_after_a_sigkill_the_next_command_marks_the_run_crashed(tmp_path):
    process, flow_run_id = start_training(tmp_path)
    process.kill()
    process.wait(timeout=30)
    assert final_state(flow_run_id).is_running()  # nothing ended it: the issue
    assert str(flow_run_id) in crash_dead_train_runs()
    assert final_state(flow_run_id).is_crashed() and "killed" in final_state(flow_run_id).message


def test_a_worker_child_is_alive_while_it_runs_prefect_and_started_before_its_run():
    from datetime import datetime, timedelta

    from prefect.client.schemas.objects import FlowRun

    from prefect_crisis.deployments.live_runs import run_process_alive

    child = subprocess.Popen([*SLEEPER, "prefect-flow-run"])  # the marker a process worker's child carries
    try:
        began = datetime.fromtimestamp(psutil.Process(child.pid).create_time(), UTC) + timedelta(seconds=5)
        assert run_process_alive(FlowRun(flow_id=uuid.uuid4(), infrastructure_pid=str(child.pid), start_time=began))
        before = began - timedelta(minutes=10)  # the run began before this process existed: a reused pid
        assert not run_process_alive(FlowRun(flow_id=uuid.uuid4(), infrastructure_pid=str(child.pid), start_time=before))
    finally:
        child.kill()
        child.wait()
    assert not run_process_alive(FlowRun(flow_id=uuid.uuid4(), infrastructure_pid=str(child.pid), start_time=began))
    assert not run_process_alive(FlowRun(flow_id=uuid.uuid4(), infrastructure_pid=dead_process().infrastructure_id()))
    assert run_process_alive(FlowRun(flow_id=uuid.uuid4(), infrastructure_pid=TrainProcess.current().infrastructure_id()))

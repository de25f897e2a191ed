"""The managed-process type (deployments/process.py) and the stack's uses of it: ownership, probes, stops,
the query probe of `crisis status`, `crisis serve`'s port, `--home`, the drill's watch, `down --purge`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import psutil
import pytest

from prefect_crisis.core.errors import StackError
from prefect_crisis.core.waiting import FakeClock, Retrying, stop_after_delay, wait_fixed
from prefect_crisis.deployments import stack
from prefect_crisis.deployments.process import ManagedProcess, command_line, free_port, port_free, recorded

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def fake_waiting(seconds: float = 10) -> tuple[FakeClock, Retrying]:
    clock = FakeClock()
    return clock, Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(1), clock=clock, sleep=clock.sleep)


def test_a_spawned_process_is_ours_until_stopped_and_a_stale_record_never_is(tmp_path):
    process = ManagedProcess.spawn("sleeper", SLEEPER, log=tmp_path / "sleeper.log", matches=lambda cmdline: "time.sleep(60)" in " ".join(cmdline))
    try:
        assert process.why_not_ours() is None and process.alive()
        same_pid_other_time = recorded("sleeper", process.pid, (process.started_at or 0) - 3600, process.matches)
        assert "is another sleeper, started at a different time" in same_pid_other_time.why_not_ours()
        other_program = recorded("server", process.pid, process.started_at, lambda cmdline: "prefect" in cmdline)
        assert "is now another program" in other_program.why_not_ours()
        assert not other_program.stop(grace=1) and process.alive()  # a process not ours is never signalled
    finally:
        assert process.stop(grace=5)
    assert not process.alive() and "is not running" in recorded("sleeper", process.pid, None, process.matches).why_not_ours()


def test_a_child_just_started_is_known_by_its_command_line_not_mistaken_for_another_program():
    """Popen returns before the kernel has set up the child's arguments: read at once, its command line is empty
    for a few milliseconds (seen failing CI). The read waits that window out; a fresh spawn is ours at once."""
    for _ in range(40):
        child = subprocess.Popen([*SLEEPER, "prefect-flow-run"])
        try:
            assert command_line(psutil.Process(child.pid))[-1] == "prefect-flow-run"
        finally:
            child.kill()
            child.wait()
        process = ManagedProcess.spawn("sleeper", SLEEPER, log=None, matches=lambda cmdline: "time.sleep(60)" in " ".join(cmdline))
        try:
            assert process.why_not_ours() is None
        finally:
            process.stop(grace=5)


def test_an_empty_command_line_is_read_again_within_its_budget_and_only_then_given_up():
    class Execing:  # a process whose arguments appear on the third read
        reads = 0

        def cmdline(self) -> list[str]:
            self.reads += 1
            return ["prefect"] if self.reads >= 3 else []

    clock, policy = fake_waiting(seconds=5)
    assert command_line(Execing(), policy) == ["prefect"] and clock.now == 2.0

    class KernelThread:
        def cmdline(self) -> list[str]:
            return []

    clock, policy = fake_waiting(seconds=5)
    assert command_line(KernelThread(), policy) == [] and clock.now == 5.0


def test_wait_ready_gives_up_on_the_budget_and_on_an_exit_without_real_time(tmp_path):
    clock, waiting = fake_waiting(10)
    process = ManagedProcess.spawn("sleeper", SLEEPER, log=None)
    try:
        assert not process.wait_ready(lambda: False, waiting) and clock.now == 10
    finally:
        process.stop(grace=5)
    exited = ManagedProcess.spawn("quitter", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log=tmp_path / "q.log")
    exited.popen.wait(timeout=30)
    assert not exited.wait_ready(lambda: True, fake_waiting()[1]) and exited.exit_code() == 3
    assert exited.last_error() == "boom"


def test_free_port_is_free_and_a_listener_is_seen_on_its_port():
    port = free_port()
    assert port_free("127.0.0.1", port)
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert listener.stdout.readline().strip() == "up"
        assert not port_free("127.0.0.1", port)
        assert ManagedProcess("listener", listener.pid).listens_on(port)
    finally:
        ManagedProcess("listener", listener.pid, popen=listener).stop(grace=5)


# -- `crisis status`: a server whose health check answers while every query fails -------------------


class Answers:
    def __init__(self, *statuses: int):
        self.statuses = list(statuses)

    def __call__(self, url, **kwargs):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status, request=httpx.Request("POST", url))


def test_the_query_probe_names_a_failing_database_and_waits_out_a_busy_one(monkeypatch):
    monkeypatch.setattr(httpx, "post", Answers(500))
    assert stack.query_problem("http://127.0.0.1:1/api", waiting=fake_waiting()[1]) == "HTTP 500 to a query"
    monkeypatch.setattr(httpx, "post", Answers(503, 503, 200))
    clock, waiting = fake_waiting()
    assert stack.query_problem("http://127.0.0.1:1/api", waiting=waiting) is None and clock.now == 2
    monkeypatch.setattr(httpx, "post", Answers(503))
    assert "busy" in stack.query_problem("http://127.0.0.1:1/api", timeout=3, waiting=fake_waiting(3)[1])


def test_a_server_that_answers_health_but_not_queries_is_a_stack_error(monkeypatch):
    monkeypatch.setattr(httpx, "get", lambda url, **kwargs: httpx.Response(200, request=httpx.Request("GET", url)))
    monkeypatch.setattr(httpx, "post", Answers(500))
    with pytest.raises(StackError, match=r"answers its health check but not a query \(HTTP 500 to a query\)"):
        stack.check_reachable("http://127.0.0.1:1/api", timeout=0.01)


# -- `crisis up --home X`: X's MLflow store ---------------------------------------------------------


def test_home_names_the_mlflow_store_the_ui_serves(tmp_path, monkeypatch):
    from prefect_crisis.deployments import mlflow_ui

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CRISIS_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "x"
    spawned = {}

    def spawn(name, command, log, env=None, cwd=None, matches=None):
        spawned.update(env)
        return ManagedProcess(name, 0)

    monkeypatch.setattr(mlflow_ui.ManagedProcess, "spawn", staticmethod(spawn))
    launch = mlflow_ui.launch_mlflow_ui(home, port=free_port())
    assert spawned["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert launch.state.store == spawned["MLFLOW_BACKEND_STORE_URI"]
    assert mlflow_ui.store_uri(home) == spawned["MLFLOW_BACKEND_STORE_URI"]
    assert stack.stack_status(home)["mlflow_tracking_uri"] == spawned["MLFLOW_BACKEND_STORE_URI"]
    with stack.home_exported(home):
        from prefect_crisis.core.paths import default_tracking_uri

        assert default_tracking_uri() == spawned["MLFLOW_BACKEND_STORE_URI"]


# -- `crisis serve`: a second one on the port is told at once ----------------------------------------


def test_a_reserved_port_refuses_a_second_serve_at_once():
    from prefect_crisis.deployments.serve_cli import reserved_port

    port = free_port()
    with reserved_port(port) as release:
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is in use: pass --port with a free one"):
            with reserved_port(port):
                pass
        release()
        with reserved_port(port):  # released: the scoring server may bind it
            pass


# -- `crisis drill`: the stack going down is noticed -------------------------------------------------


def test_the_watch_calls_once_when_the_server_record_goes(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    me = psutil.Process()
    record = {"pid": me.pid, "api_url": "http://127.0.0.1:1/api", "home": str(home), "log": "", "started_at": me.create_time()}
    (home / "server.json").write_text(json.dumps(record))
    assert "is now another program" in stack.local_server_gone(home)  # this test process is no Prefect server
    (home / "server.json").unlink()
    assert "crisis down" in stack.local_server_gone(home)
    told, gone = [], threading.Event()
    end = stack.watch_local_server(home, lambda why: (told.append(why), gone.set()), every=0.01)
    assert gone.wait(10) and len(told) == 1
    end()


# -- `crisis down --purge`, `crisis deploy`'s word on the workers -------------------------------------


def test_purge_deletes_the_cluster_folders_and_only_them(tmp_path):
    from prefect_crisis.deployments.postgres import purge_cluster

    home = tmp_path / "home"
    (home / "postgres" / "data").mkdir(parents=True)
    (home / "postgres" / "password").write_text("secret\n")
    elsewhere = tmp_path / "var-tmp-cluster"
    (elsewhere / "data").mkdir(parents=True)
    (home / "mlflow.db").write_text("")
    assert purge_cluster(home, elsewhere) == sorted([home / "postgres", elsewhere])
    assert not (home / "postgres").exists() and not elsewhere.exists() and (home / "mlflow.db").exists()
    assert purge_cluster(home) == []


def test_deploy_says_workers_run_when_they_do(tmp_path, monkeypatch):
    from prefect_crisis.deployments import connect_cli, worker

    assert connect_cli.workers_hint(tmp_path, "http://127.0.0.1:1/api").startswith("start the workers")
    states = [
        worker.WorkerState(10, worker.POOL, "http://127.0.0.1:1/api", "", 0.0, "process"),
        worker.WorkerState(11, worker.WARM_POOL, "http://127.0.0.1:1/api", "", 0.0, "warm"),
    ]
    monkeypatch.setattr(worker, "read_workers", lambda home: states)
    monkeypatch.setattr(worker, "worker_alive", lambda state: True)
    hint = connect_cli.workers_hint(tmp_path, "http://127.0.0.1:1/api")
    assert hint.startswith("workers running") and "start the workers" not in hint


# -- events: flushed before Prefect's exit drain -----------------------------------------------------


def test_the_exit_flush_waits_for_the_queue_to_empty_on_a_fake_clock():
    from prefect_crisis.core.prefect_compat import queue_emptied

    class Queue:
        def __init__(self, sizes):
            self.sizes = iter(sizes)

        def qsize(self):
            return next(self.sizes)

    class Worker:
        def __init__(self, sizes):
            self._queue = Queue(sizes)

    clock, waiting = fake_waiting(5)
    assert queue_emptied(Worker([3, 1, 0]), waiting) and clock.now == 2
    assert not queue_emptied(Worker([1] * 100), fake_waiting(5)[1])

"""The local stack when things go wrong (issue 8, items 2-5 and 15): a stale pid,
two stacks on one port, a frozen or killed server, what a dead stack leaves
behind, credentials in URIs. Real `crisis` subprocesses, real Prefect servers
on loopback; every server and helper process is killed in a finally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from prefect_crisis.core.errors import ExitCode
from tests.e2e.test_stack import CRISIS, cli_env, crisis, free_port  # noqa: F401  (cli_env is a fixture)

pytestmark = pytest.mark.e2e
ANSWER_WITHIN = 10.0  # seconds, as the issue asks; most of it is Python start-up (2-4 s measured)


def home_env(cli_env: dict[str, str], home: Path) -> dict[str, str]:
    return {**cli_env, "CRISIS_HOME": str(home)}


def recorded_pid(home: Path) -> int:
    return int(json.loads((home / "server.json").read_text())["pid"])


def kill_servers_on(port: int, *homes: Path) -> None:
    """Kill every `prefect server start --port PORT` (SIGCONT first, in case one is frozen), and the MLflow UI
    (with its job consumers, one process group) that `crisis up` started for each of `homes`."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "server" in cmdline and "start" in cmdline and str(port) in cmdline and any("prefect" in part for part in cmdline):
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(process.info["pid"], signum)
                except ProcessLookupError:
                    pass
        elif "mlflow" in cmdline and "server" in cmdline and any(str(home) in part for home in homes for part in cmdline):
            try:
                os.killpg(process.info["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def one_line_error(result: subprocess.CompletedProcess) -> str:
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


def timed(env, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = crisis(env, *args, timeout=timeout)
    return result, time.monotonic() - started


# -- item 2: a stale pid is never signalled ---------------------------------------


def test_down_with_a_stale_pid_leaves_that_process_alive(cli_env):
    home = Path(cli_env["CRISIS_HOME"])
    home.mkdir(parents=True)
    # its own process group, like a server started by `crisis up`: the old code killed the group
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        record = {"pid": bystander.pid, "api_url": f"http://127.0.0.1:{free_port()}/api", "home": str(home), "log": str(home / "server.log")}
        (home / "server.json").write_text(json.dumps(record))
        result = crisis(cli_env, "down", timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stale server record" in result.stdout and f"pid {bystander.pid} is now another program (sleep 600)" in result.stdout
        time.sleep(0.5)
        assert bystander.poll() is None, "crisis down killed a process it did not start"
        assert not (home / "server.json").exists()
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_a_server_record_with_a_reused_pid_is_stale_even_for_a_prefect_server(cli_env, tmp_path):
    """Same command line, different start time: not ours either (what a pid reuse by another stack looks like)."""
    home = Path(cli_env["CRISIS_HOME"])
    home.mkdir(parents=True)
    port = free_port()
    # a process with a Prefect server's command line, but not the one the record was written for
    fake_cli = tmp_path / "prefect"
    fake_cli.write_text("import time\ntime.sleep(600)\n")
    impostor = subprocess.Popen([sys.executable, str(fake_cli), "server", "start", "--port", str(port)], start_new_session=True)
    try:
        record = {
            "pid": impostor.pid,
            "api_url": f"http://127.0.0.1:{port}/api",
            "home": str(home),
            "log": "",
            "started_at": psutil.Process(impostor.pid).create_time() - 3600,
        }
        (home / "server.json").write_text(json.dumps(record))
        result = crisis(cli_env, "down", timeout=60)
        assert result.returncode == 0 and "started at a different time" in result.stdout, result.stdout + result.stderr
        time.sleep(0.5)
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait(timeout=10)


# -- item 3: one port, one stack --------------------------------------------------


def test_two_ups_on_one_port_only_one_is_ready(cli_env, tmp_path):
    port = free_port()
    homes = [tmp_path / "stack-a", tmp_path / "stack-b"]
    bystander = None
    try:
        launched = [
            subprocess.Popen(
                [*CRISIS, "up", "--port", str(port)], env=home_env(cli_env, home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for home in homes
        ]
        outputs = [process.communicate(timeout=240)[0] for process in launched]
        codes = [process.returncode for process in launched]
        assert sorted(codes) == [ExitCode.DONE, ExitCode.STACK], outputs
        winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
        assert "Prefect server ready" in outputs[winner]
        assert "Prefect server ready" not in outputs[loser]
        assert f"error: port {port} on 127.0.0.1 is" in outputs[loser] and "Traceback" not in outputs[loser], outputs[loser]
        assert not (homes[loser] / "server.json").exists()
        # the winner's record names the process that really listens on the port
        listeners = {c.pid for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert recorded_pid(homes[winner]) in listeners

        # a stale record in a third stack, pointing at that served port with a reused pid: not "already running"
        third = tmp_path / "stack-c"
        third.mkdir()
        bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
        (third / "server.json").write_text(
            json.dumps({"pid": bystander.pid, "api_url": f"http://127.0.0.1:{port}/api", "home": str(third), "log": ""})
        )
        stale = crisis(home_env(cli_env, third), "up", "--port", str(port), timeout=120)
        assert stale.returncode == ExitCode.STACK, stale.stdout
        assert "already running" not in stale.stdout and f"port {port} on 127.0.0.1 is in use" in stale.stdout
        assert bystander.poll() is None

        down = crisis(home_env(cli_env, homes[winner]), "down", timeout=60)
        assert down.returncode == 0 and "stopped Prefect server" in down.stdout
    finally:
        if bystander:
            bystander.kill()
        kill_servers_on(port, *homes)


# -- items 4 and 5: a frozen, then a dead server; what it left behind ----------------

LONG_FLOW = textwrap.dedent(
    """
    import sys, time
    from mlflow import MlflowClient
    from prefect import flow
    from prefect.runtime import flow_run
    from prefect_crisis.tasks.training.checkpoints import training_experiment

    @flow(name="long-training")
    def long_training(tracking_uri: str):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        run = client.create_run(
            training_experiment(client, "synthetic"),
            tags={"crisis.model": "synthetic", "crisis.status": "running", "crisis.flow_run_id": flow_run.get_id()},
        )
        print("RUNNING", flow_run.get_id(), run.info.run_id, flush=True)
        time.sleep(600)

    long_training(sys.argv[1])
    """
)


def test_frozen_and_dead_server_every_command_answers_at_once(cli_env):
    home = Path(cli_env["CRISIS_HOME"])
    port = free_port()
    try:
        up = crisis(cli_env, "up", "--port", str(port), "--no-mlflow-ui", timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        server_pid = recorded_pid(home)

        # frozen: every command answers within seconds, one line, exit 4
        os.kill(server_pid, signal.SIGSTOP)
        figures = {}
        for command in (("stop", "synthetic"), ("resume", "synthetic"), ("demo", "--rows", "300"), ("train",), ("status",)):
            result, seconds = timed(cli_env, *command)
            figures[f"frozen {command[0]}"] = round(seconds, 1)
            assert seconds < ANSWER_WITHIN, (command, seconds)
            if command[0] == "status":
                assert "frozen" in result.stdout
                continue
            assert result.returncode == ExitCode.STACK, (command, result.stdout + result.stderr)
            message = one_line_error(result)
            assert f"pid {server_pid}) is frozen" in message
            if command[0] == "stop":
                assert "the stop flag was NOT raised" in message and "cancel the training flow run" in message

        # dead (SIGKILL): the same, and it says the server is gone
        os.kill(server_pid, signal.SIGKILL)
        os.kill(server_pid, signal.SIGCONT)
        for command in (("stop", "synthetic"), ("demo", "--rows", "300"), ("train",)):
            result, seconds = timed(cli_env, *command)
            figures[f"dead {command[0]}"] = round(seconds, 1)
            assert seconds < ANSWER_WITHIN, (command, seconds)
            assert result.returncode == ExitCode.STACK
            assert "server is gone" in one_line_error(result)
        print("seconds to answer:", figures)
    finally:
        kill_servers_on(port, home)  # the server, whatever state the test left it in


def test_the_next_up_marks_what_a_dead_stack_left_running_as_crashed(cli_env, tmp_path):
    home = Path(cli_env["CRISIS_HOME"])
    port = free_port()
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    training = None
    try:
        up = crisis(cli_env, "up", "--port", str(port), "--no-mlflow-ui", timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        server_pid = recorded_pid(home)

        # a training flow run in progress, with its MLflow run open
        script = tmp_path / "long_training.py"
        script.write_text(LONG_FLOW)
        training = subprocess.Popen(
            [sys.executable, str(script), tracking_uri],
            env={**cli_env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = training.stdout.readline()  # bounded by the script's own 600 s sleep and pytest-timeout
        assert line.startswith("RUNNING"), line
        _, flow_run_id, mlflow_run_id = line.split()

        # a crash: the server and the training process die together
        os.kill(server_pid, signal.SIGKILL)
        training.kill()
        training.wait(timeout=30)

        again = crisis(cli_env, "up", "--port", str(port), "--no-mlflow-ui", timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 flow run(s)" in again.stdout and "1 MLflow training run(s) -> FAILED" in again.stdout, again.stdout

        from mlflow import MlflowClient
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}), get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.state.is_crashed() and "server stopped" in flow_run.state.message
        run = MlflowClient(tracking_uri=tracking_uri).get_run(mlflow_run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags["crisis.status"] == "stopped" and run.data.tags["crisis.stop_kind"] == "killed"  # resumable
        assert "server stopped" in run.data.tags["crisis.crash_reason"]

        # and only once: a further `up` on the running server marks nothing
        assert "marked" not in crisis(cli_env, "up", "--port", str(port), "--no-mlflow-ui", timeout=120).stdout
    finally:
        if training and training.poll() is None:
            training.kill()
        kill_servers_on(port, home)


# -- item 15: credentials in printed URIs ---------------------------------------------


def test_printed_uris_hide_credentials(cli_env):
    cli_env["MLFLOW_TRACKING_URI"] = "postgresql://ml:s3cret-pw@db.example.com:5432/mlflow"
    status = crisis(cli_env, "status", timeout=60)
    assert status.returncode == 0
    assert "s3cret-pw" not in status.stdout and "postgresql://ml:***@db.example.com:5432/mlflow" in status.stdout

    cli_env["PREFECT_API_URL"] = "https://ci:tok3n@prefect.example.com/api"
    up = crisis(cli_env, "up", timeout=60)
    assert up.returncode == 0
    assert "tok3n" not in up.stdout and "https://ci:***@prefect.example.com/api" in up.stdout

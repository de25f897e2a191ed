"""The local stack as a user runs it: `crisis up`, `status`, `demo`, `down`,
each a real subprocess against a real Prefect server on loopback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from prefect_crisis.tasks.validation import REASONS_COLUMN

pytestmark = pytest.mark.e2e
CRISIS = [sys.executable, "-m", "prefect_crisis.deployments.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """A user's shell: no Prefect server configured, state under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(
        CRISIS_HOME=str(tmp_path / ".crisis"),
        PREFECT_HOME=str(tmp_path / "client-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    return env


def crisis(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CRISIS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_up_status_demo_down(cli_env, tmp_path):
    home = Path(cli_env["CRISIS_HOME"])
    port = free_port()
    started = crisis(cli_env, "up", "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout
    pid = int(__import__("json").loads((home / "server.json").read_text())["pid"])
    try:
        status = crisis(cli_env, "status")
        assert "local stack" in status.stdout and "healthy" in status.stdout
        assert "mlflow.db" in status.stdout

        demo = crisis(cli_env, "demo", "--rows", "2000")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "artifacts visible through the Prefect API" in demo.stdout
        for verdict in ("accept_with_quarantine", "reject", "f01, f03", "v1 promoted to champion", "Stopped", "stop-flag", "Recovered", "rollback: champion"):
            assert verdict in demo.stdout
        assert re.search(r"audit .* rollback: champion v3 -> v[12] ", demo.stdout)  # the poisoned v3 is rolled back
        assert re.search(r"champion of 'synthetic-[0-9a-f-]+' is v[12]\b", demo.stdout)
        assert len((demo.stdout + demo.stderr).splitlines()) < 60  # the story, not Prefect's INFO run logs
        assert (home / "mlflow.db").exists()
        quarantine = sorted((home / "data").glob("synthetic-*/quarantine/*.parquet"))
        assert len(quarantine) == 2  # the corrupted batch and the broken one (training batches are valid)
        assert all(pd.read_parquet(path)[REASONS_COLUMN].str.len().gt(0).all() for path in quarantine)
    finally:
        stopped = crisis(cli_env, "down")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "not running" in crisis(cli_env, "status").stdout or "none" in crisis(cli_env, "status").stdout


def test_up_uses_a_configured_server_and_starts_nothing(cli_env):
    cli_env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    result = crisis(cli_env, "up")
    assert result.returncode == 0
    assert "PREFECT_API_URL is set: using http://127.0.0.1:9/api, nothing started" in result.stdout
    assert not (Path(cli_env["CRISIS_HOME"]) / "server.json").exists()


def test_demo_without_a_server_says_what_to_do(cli_env):
    result = crisis(cli_env, "demo")
    assert result.returncode == 4  # ExitCode.STACK
    assert "no Prefect server: run `crisis up`" in result.stdout

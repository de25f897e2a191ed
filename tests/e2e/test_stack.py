"""The local stack as a user runs it: `crisis up`, `status`, `demo`, `down`,
each a real subprocess against a real Prefect server on loopback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.tasks.drills.synthetic import customer_table
from prefect_crisis.tasks.validation.report import REASONS_COLUMN

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
    ui = __import__("json").loads((home / "mlflow-ui.json").read_text())
    assert f"MLflow UI ready: {ui['url']}" in started.stdout
    try:
        status = crisis(cli_env, "status")
        assert "local stack" in status.stdout and "healthy" in status.stdout
        assert "mlflow.db" in status.stdout
        assert re.search(rf"mlflow UI\s+{re.escape(ui['url'])} \(healthy\)", status.stdout), status.stdout
        import httpx

        assert httpx.get(f"{ui['url']}/health", timeout=10).text.strip() == "OK"
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(ui["pid"])], capture_output=True, text=True).stdout
        assert "mlflow" in ps and "sqlite" not in ps  # the store's URI goes through the environment, not the command line

        drill = crisis(cli_env, "drill", "latency-spike")  # nothing deployed, no worker: the drill would only wait
        assert drill.returncode == 4 and "run `crisis deploy`" in drill.stdout and "Traceback" not in drill.stderr, drill.stdout + drill.stderr

        demo = crisis(cli_env, "demo", "--rows", "2000")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "artifacts visible through the Prefect API" in demo.stdout
        for verdict in (
            "accept_with_quarantine",
            "reject",
            "f01, f03",
            "v1 promoted to champion",
            "Stopped",
            "stop-flag",
            "Recovered",
            "rollback: champion",
            "fallback v2 registered",
            "fallback; champion v3 -> v2",
        ):
            assert verdict in demo.stdout
        assert re.search(r"audit .* rollback: champion v4 -> v[13] ", demo.stdout)  # the poisoned v4 is rolled back (v2: the fallback model)
        assert re.search(r"champion of 'synthetic-[0-9a-f-]+' is v[13]\b", demo.stdout)
        assert re.search(r"health monitor \(2,000 served rows labelled\) \[(critical|emergency)\]", demo.stdout), demo.stdout
        assert re.search(r"health monitor after the rollback .*breaches: none", demo.stdout), demo.stdout
        assert len((demo.stdout + demo.stderr).splitlines()) < 60  # the story, not Prefect's INFO run logs
        assert "Warning" not in demo.stderr, demo.stderr
        assert (home / "mlflow.db").exists()
        quarantine = sorted((home / "data").glob("synthetic-*/quarantine/*.parquet"))
        parts = [pd.read_parquet(path)[REASONS_COLUMN] for path in quarantine]
        assert all(reasons.str.len().gt(0).all() for reasons in parts)
        # The corrupted batch and the broken one; clean batches lose at most a few rows to the outlier budget (1%).
        defective = [reasons for reasons in parts if not reasons.str.fullmatch(r"outlier:f\d\d").all()]
        assert len(defective) == 2
        assert all(len(reasons) <= 20 for reasons in parts if reasons.str.fullmatch(r"outlier:f\d\d").all())

        # A contract learned from a reference, saved with its drift reference, judges a clean batch of the same population.
        rng = np.random.default_rng(0)
        customer_table(rng, 2_000).to_parquet(tmp_path / "reference.parquet")
        customer_table(rng, 200).to_parquet(tmp_path / "batch.parquet")
        saved = crisis(cli_env, "contract", "infer", str(tmp_path / "reference.parquet"), "--key", "customer_id", "--save", "churn-input")
        assert saved.returncode == 0, saved.stdout + saved.stderr
        assert (home / "references" / "churn-input.parquet").exists()
        checked = crisis(cli_env, "validate", str(tmp_path / "batch.parquet"), "--model", "churn", "--contract", "churn-input")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert re.search(r"^accept(_with_quarantine)?: (19\d|200) kept", checked.stdout, re.M), checked.stdout
    finally:
        stopped = crisis(cli_env, "down")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    assert f"stopped the MLflow UI (pid {ui['pid']})" in stopped.stdout
    for gone in (pid, ui["pid"]):
        with pytest.raises(ProcessLookupError):
            os.kill(gone, 0)
    assert "not running" in crisis(cli_env, "status").stdout or "none" in crisis(cli_env, "status").stdout


def test_up_uses_a_configured_server_and_starts_nothing(cli_env):
    cli_env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    result = crisis(cli_env, "up")
    assert result.returncode == 0
    assert "PREFECT_API_URL is set: using http://127.0.0.1:9/api, nothing started" in result.stdout
    assert not (Path(cli_env["CRISIS_HOME"]) / "server.json").exists()


def test_demo_without_a_server_says_what_to_do(cli_env):
    result = crisis(cli_env, "demo")
    assert result.returncode == 4  # ExitCode.STACK: the stack cannot be used
    assert "no Prefect server: run `crisis up`" in result.stdout
    drill = crisis(cli_env, "drill")
    assert drill.returncode == 4 and "no Prefect server: run `crisis up`" in drill.stdout


def test_contract_infer_prints_a_contract_to_review_and_refuses_bad_names(cli_env, tmp_path):
    customer_table(np.random.default_rng(1), 500).to_parquet(tmp_path / "reference.parquet")
    printed = crisis(cli_env, "contract", "infer", str(tmp_path / "reference.parquet"), "--key", "customer_id", "--json")
    assert printed.returncode == 0, printed.stdout + printed.stderr
    contract = __import__("json").loads(printed.stdout)
    columns = {column["name"]: column for column in contract["columns"]}
    assert contract["key_column"] == "customer_id" and columns["customer_id"]["check_drift"] is False
    assert columns["plan"]["allowed_values"] == ["free", "pro", "team"]
    assert columns["visits_0"]["dtype"] == "int" and columns["amount_0"]["outlier_high"] is not None
    bad_name = crisis(cli_env, "contract", "infer", str(tmp_path / "reference.parquet"), "--save", "../outside")
    assert bad_name.returncode == 2 and bad_name.stdout.count("\n") == 1 and "is not a block name" in bad_name.stdout
    bad_key = crisis(cli_env, "contract", "infer", str(tmp_path / "reference.parquet"), "--key", "id")
    assert bad_key.returncode == 2 and "key_column 'id' is not a column of the reference" in bad_key.stdout
    assert "Traceback" not in bad_name.stderr + bad_key.stderr


def test_the_server_on_its_private_postgresql_as_an_operator_tries_it(cli_env):
    """`crisis up --postgres`: a mistyped database, a second database while one runs, the cluster
    killed under the server, and `down` -- each a one-line error with its exit code, no password shown."""
    home = Path(cli_env["CRISIS_HOME"])
    both = crisis(cli_env, "up", "--postgres", "--database", "sqlite+aiosqlite:///elsewhere.db")
    assert both.returncode == 2 and "pass one of them" in (both.stdout + both.stderr)
    sync_driver = crisis(cli_env, "up", "--database", "postgresql://ops:s3cret@db.internal/prefect")
    assert (
        sync_driver.returncode == 2
        and "postgresql+asyncpg://" in (sync_driver.stdout + sync_driver.stderr)
        and "s3cret" not in (sync_driver.stdout + sync_driver.stderr)
    )

    port = free_port()
    try:
        started = crisis(cli_env, "up", "--postgres", "--port", str(port), timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        cluster = __import__("json").loads((home / "postgres.json").read_text())
        password = (Path(cluster["data"]).parent / "password").read_text().strip()
        status = crisis(cli_env, "status")
        assert "postgresql+asyncpg://crisis:***@127.0.0.1:" in status.stdout and "(running)" in status.stdout
        other = crisis(cli_env, "up", "--database", "sqlite+aiosqlite:////tmp/other.db")
        assert other.returncode == 4 and "crisis down" in (other.stdout + other.stderr)

        postmaster = int((Path(cluster["data"]) / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, 9)
        dead = crisis(cli_env, "up", "--postgres")
        assert dead.returncode == 4 and "is not running" in dead.stdout + dead.stderr, dead.stdout + dead.stderr
        assert "NOT RUNNING" in crisis(cli_env, "status").stdout
        # the server's health check still answers while every query fails: status probes a real query
        plain = crisis(cli_env, "status")
        assert plain.returncode == 4 and "(healthy)" not in plain.stdout.split("prefect database")[0], plain.stdout
        assert "not a query" in plain.stdout and "Traceback" not in plain.stdout + plain.stderr
        of_model = crisis(cli_env, "status", "synthetic")
        assert of_model.returncode == 4, of_model.stdout + of_model.stderr
        lines = (of_model.stdout + of_model.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "not a query" in lines[0], lines
        shown = started.stdout + started.stderr + status.stdout + other.stdout + other.stderr + dead.stdout + dead.stderr
        assert password not in shown and password not in (home / "server.log").read_text(errors="replace")
    finally:
        down = crisis(cli_env, "down", timeout=120)
        recorded = locals().get("cluster")
        if recorded:  # as root its data went to /var/tmp: `down` keeps data, the test does not
            shutil.rmtree(Path(recorded["data"]).parent, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (home / "postgres.json").exists()

"""The `crisis` commands as a user runs them (subprocesses) against the session's
real Prefect server and a real SQLite MLflow store: arguments are checked before
anything is written, expected errors are one line, exit codes follow `ExitCode`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.settings import PREFECT_API_URL
from prefect.variables import Variable

from prefect_crisis.core.errors import DataInputError, ExitCode
from prefect_crisis.flows.demo import crisis_demo
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.flows.validation import validate_batch
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.validation.quarantine import write_parquet

CRISIS = [sys.executable, "-m", "prefect_crisis.deployments.cli"]


@pytest.fixture
def cli_env(tmp_path, mlflow_tracking_uri) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CRISIS_"))}
    env.update(
        PREFECT_API_URL=PREFECT_API_URL.value(),
        MLFLOW_TRACKING_URI=mlflow_tracking_uri,
        CRISIS_HOME=str(tmp_path / ".crisis"),
        PREFECT_HOME=str(tmp_path / "client-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    return env


def crisis(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CRISIS, *args], env=env, capture_output=True, text=True, timeout=240)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture
def model() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def contract(tmp_path, model) -> str:
    reference = tmp_path / "reference.parquet"
    write_parquet(make_batch(2_000, seed=100), str(reference))
    synthetic_contract(reference_uri=str(reference), max_quarantine_ratio=0.1).save(model, overwrite=True)
    return model


@pytest.mark.parametrize("rows", ["0", "-5"])
def test_demo_checks_rows_before_writing_anything(cli_env, rows):
    result = crisis(cli_env, "demo", "--rows", rows)
    assert result.returncode == ExitCode.USAGE
    assert lines(result) == [f"error: --rows {rows}: the demo needs between 1,000 and 1,000,000 rows per batch"]
    assert not Path(cli_env["CRISIS_HOME"], "data").exists()


def test_stop_refuses_an_unknown_model_unless_forced(cli_env, mlflow_tracking_uri, model):
    MlflowClient(tracking_uri=mlflow_tracking_uri).create_registered_model(model)
    typo = model + "x"
    refused = crisis(cli_env, "stop", typo)
    assert refused.returncode == ExitCode.USAGE
    assert len(lines(refused)) == 1 and f"no model {typo!r}" in refused.stdout and model in refused.stdout
    assert Variable.get(f"crisis-stop-{typo}", default=None) is None

    forced = crisis(cli_env, "stop", typo, "--force")
    assert forced.returncode == ExitCode.DONE, forced.stdout + forced.stderr
    assert Variable.get(f"crisis-stop-{typo}", default=None)["reason"] == "stopped by an operator"
    assert crisis(cli_env, "resume", typo).returncode == ExitCode.DONE

    escaping = crisis(cli_env, "stop", "a b/../x", "--force")
    assert escaping.returncode == ExitCode.USAGE and "invalid model name" in escaping.stdout


def test_a_path_as_model_name_writes_nothing_outside(cli_env, tmp_path, contract):
    batch = tmp_path / "batch.parquet"
    write_parquet(make_batch(300, seed=1), str(batch))
    result = crisis(cli_env, "validate", str(batch), "--model", "../../../../outside", "--contract", contract)
    assert result.returncode == ExitCode.USAGE and len(lines(result)) == 1
    assert "invalid model name" in result.stdout
    with pytest.raises(DataInputError, match="invalid model name"):
        validate_batch(model_name="../../outside", contract_block=contract, batch_path=str(batch), storage=str(tmp_path / "a" / "b" / "data"))
    with pytest.raises(DataInputError, match="invalid model name"):
        continuous_training(model_name="../../outside", contract_block=contract, synthetic_rows=300, storage=str(tmp_path / "a" / "b" / "data"))
    assert not any(tmp_path.rglob("outside"))


def test_train_with_a_missing_policy_or_batch_is_one_line(cli_env, tmp_path, contract, model):
    policy = crisis(cli_env, "train", "--model", model, "--contract", contract, "--policy", "nope")
    assert policy.returncode == ExitCode.USAGE
    assert len(policy.stdout.splitlines()) == 1 and "no TrainingPolicy block named 'nope'" in policy.stdout
    assert "Traceback" not in policy.stderr
    missing = crisis(cli_env, "train", "--model", model, "--contract", contract, "--batch", str(tmp_path / "missing.parquet"))
    assert missing.returncode == ExitCode.USAGE
    assert len(missing.stdout.splitlines()) == 1 and "missing.parquet' does not exist" in missing.stdout
    assert "Traceback" not in missing.stderr


def test_an_expected_error_inside_a_run_is_logged_and_printed_as_one_line(cli_env, tmp_path, contract, model):
    batch = make_batch(300, seed=2)
    batch["f01"] = np.nan  # a column with no values at all: the feed is broken
    path = tmp_path / "text.csv"
    batch.to_csv(path, index=False)
    result = crisis(cli_env, "validate", str(path), "--model", model, "--contract", contract)
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.startswith("error: column 'f01'") and len(result.stdout.splitlines()) == 1
    assert len(lines(result)) <= 10, "\n".join(lines(result))  # the run's own log lines (its stack, steps, failure), no traceback
    debugged = crisis(cli_env, "validate", str(path), "--model", model, "--contract", contract, "--debug")
    assert debugged.returncode == ExitCode.USAGE and "Traceback" in debugged.stdout + debugged.stderr


def test_validate_prints_why_a_batch_is_rejected(cli_env, tmp_path, contract, model):
    path = tmp_path / "no-label.parquet"
    write_parquet(make_batch(200, seed=3).drop(columns=["f02"]), str(path))
    result = crisis(cli_env, "validate", str(path), "--model", model, "--contract", contract)
    assert result.returncode == ExitCode.REJECTED
    assert "reject: 0 kept, 200 quarantined of 200" in result.stdout
    assert any("rejected because:" in line and "f02" in line for line in lines(result)), result.stdout


def test_train_exits_rejected_for_a_rejected_batch_and_a_stopped_training(cli_env, tmp_path, contract, model):
    broken = tmp_path / "broken.parquet"
    write_parquet(make_batch(500, seed=4, corrupt_fraction=0.3), str(broken))
    rejected = crisis(cli_env, "train", "--model", model, "--contract", contract, "--batch", str(broken))
    assert rejected.returncode == ExitCode.REJECTED and "Skipped: batch rejected" in rejected.stdout

    clean = tmp_path / "clean.parquet"
    write_parquet(make_batch(500, seed=5), str(clean))
    assert crisis(cli_env, "stop", model, "--force").returncode == ExitCode.DONE
    stopped = crisis(cli_env, "train", "--model", model, "--contract", contract, "--batch", str(clean))
    assert stopped.returncode == ExitCode.REJECTED and "Stopped: training stopped" in stopped.stdout, stopped.stdout + stopped.stderr


def test_validating_the_same_file_again_writes_the_same_parts(tmp_path, contract, model, mlflow_tracking_uri):
    path = tmp_path / "batch.parquet"
    write_parquet(make_batch(500, seed=6, corrupt_fraction=0.02), str(path))
    for _ in range(2):
        validate_batch(model_name=model, contract_block=contract, batch_path=str(path), storage=str(tmp_path / "out"))
    assert len(list((tmp_path / "out" / model / "kept").glob("*.parquet"))) == 1
    assert len(list((tmp_path / "out" / model / "quarantine").glob("*.parquet"))) == 1


def test_a_second_demo_tells_the_same_story(tmp_path, mlflow_tracking_uri):
    for _ in range(2):
        summary = crisis_demo(rows=1_000, storage=str(tmp_path / "data"))
        rollback, fallback = [row for row in summary if "crisis response" in row["step"]]
        assert rollback["outcome"] == "Recovered", rollback
        # v2 is the fallback model; the poisoned v4 is rolled back to the resumed v3 or the first v1
        assert re.search(r"rollback; champion v4 -> v[13]$", rollback["detail"]), rollback
        assert fallback["outcome"] == "Recovered" and fallback["detail"].endswith("fallback; champion v3 -> v2"), fallback

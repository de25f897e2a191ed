"""Deployments run by a real process worker started in another folder read and
write the stack's state folder: `crisis up`, `crisis env`, `crisis deploy`,
`prefect worker start`, runs triggered with `run_deployment`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from sklearn.linear_model import LogisticRegression

from prefect_crisis.blocks import InferenceLog, ModelRegistry
from prefect_crisis.core.vocabulary import Responder
from prefect_crisis.tasks.drills.synthetic import feature_names, make_batch, synthetic_contract
from prefect_crisis.tasks.serving.inference_log import PredictionBatch, open_inference_log, record_labels
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate
from tests.e2e.test_stack import free_port

pytestmark = pytest.mark.e2e
FEATURES = feature_names(20)
RUN_TIMEOUT = 240  # seconds a deployment run may take on a loaded 2-core machine


@pytest.fixture
def stack(tmp_path):
    """`crisis up` on a free port with its state in tmp_path/stack/.crisis; always `crisis down`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "CRISIS_"))}
    env.update(PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200")
    work = tmp_path / "stack"
    work.mkdir()
    up = subprocess.run(
        [sys.executable, "-m", "prefect_crisis.deployments.cli", "up", "--port", str(free_port()), "--no-mlflow-ui"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert 'eval "$(crisis env)"' in up.stdout
    try:
        yield env, work
    finally:
        subprocess.run(
            [sys.executable, "-m", "prefect_crisis.deployments.cli", "down"], env=env, cwd=work, capture_output=True, text=True, timeout=60
        )


def exports_of(env: dict[str, str], cwd: Path) -> dict[str, str]:
    printed = subprocess.run(
        [sys.executable, "-m", "prefect_crisis.deployments.cli", "env"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0, printed.stdout + printed.stderr
    exports = {}
    for line in printed.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = value.strip("'")
    return exports


def register_champion(tracking_uri: str, model: str) -> str:
    registry = ModelRegistry(model_name=model, tracking_uri=tracking_uri)
    batch = make_batch(3_000, seed=7)
    X, y = batch[FEATURES].to_numpy(), batch["label"].to_numpy()
    estimator = LogisticRegression(max_iter=500).fit(X[:2_400], y[:2_400])
    client = registry.client
    run = client.create_run(training_experiment(client, model))
    client.log_metric(run.info.run_id, "accuracy", float(estimator.score(X[2_400:], y[2_400:])))
    info = log_candidate(estimator, X, run.info.run_id, client)
    version = registry.register_version(info.model_uri, run.info.run_id, info.model_id, {"crisis.features": ",".join(FEATURES)}).version
    registry.promote(version, reason="test: first champion")
    return version


def test_deployments_run_by_a_worker_elsewhere_use_the_stack_state_folder(stack, tmp_path):
    env, work = stack
    exports = exports_of(env, work)
    home = Path(exports["CRISIS_HOME"])
    assert home == (work / ".crisis").resolve() and home.is_absolute()
    assert exports["MLFLOW_TRACKING_URI"] == f"sqlite:///{home / 'mlflow.db'}"
    api_url = exports["PREFECT_API_URL"]

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        synthetic_contract().save("synthetic-stream", overwrite=True)
    champion = register_champion(exports["MLFLOW_TRACKING_URI"], "synthetic")
    # The response reads its labelled window from the stack's default inference log ($CRISIS_HOME/inference.db).
    window = make_batch(600, seed=9)
    log = InferenceLog(url=f"sqlite:///{home / 'inference.db'}", spool_path=str(tmp_path / "spool"))
    writer = open_inference_log(log)
    writer.submit(
        PredictionBatch(
            "served-1",
            "synthetic",
            datetime.now(UTC),
            5.0,
            window.drop(columns=["label"]),
            [str(i) for i in range(600)],
            [0] * 600,
            [Responder.PRIMARY.value] * 600,
            [champion] * 600,
            [0.5] * 600,
            [None] * 600,
        )
    )
    assert writer.flush(timeout=60) and writer.stats.written == 600, writer.stats
    writer.close()
    record_labels(log, [("served-1", str(i)) for i in range(600)], window["label"].tolist())

    deployer = tmp_path / "deployer"
    deployer.mkdir()
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect_crisis.deployments.cli", "deploy"],
        env={**env, "CRISIS_HOME": str(home)},
        cwd=deployer,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "crisis-pool" in deployed.stdout

    elsewhere = tmp_path / "worker-folder"
    elsewhere.mkdir()
    worker_env = {k: v for k, v in env.items() if k != "CRISIS_HOME"}
    worker_env.update(
        PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_WORKER_PREFETCH_SECONDS="1"
    )
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "crisis-pool", "--type", "process"],
            env=worker_env,
            cwd=elsewhere,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # the crisis flows' pool: the warm worker, also without CRISIS_HOME (the first run's job variables bind it)
    with open(tmp_path / "warm-worker.log", "wb") as log:
        warm = subprocess.Popen(
            [sys.executable, "-m", "prefect_crisis.deployments.warm_worker", "--pool", "crisis-responders"],
            env=worker_env,
            cwd=elsewhere,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            validated = run_deployment("validate-batch/validate-batch", parameters={"synthetic_rows": 800}, timeout=RUN_TIMEOUT)
            assert validated.state.is_completed(), f"{validated.state}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
            kept = list((home / "data" / "synthetic" / "kept").glob("*.parquet"))
            assert kept and sum(len(pd.read_parquet(part)) for part in kept) > 700

            responded = run_deployment(
                "crisis-response/crisis-response", parameters={"incident_id": f"test-{uuid.uuid4().hex[:8]}"}, timeout=RUN_TIMEOUT
            )
            assert responded.state.is_completed(), f"{responded.state}\n{(tmp_path / 'warm-worker.log').read_text()[-3000:]}"
            assert responded.infrastructure_pid.startswith("crisis-warm:")  # ran in the warm worker, not a new process
            assert "no champion" not in (responded.state.message or "")
        assert ModelRegistry(model_name="synthetic", tracking_uri=exports["MLFLOW_TRACKING_URI"]).champion().version == champion
        assert not (elsewhere / ".crisis").exists() and not (elsewhere / "mlruns").exists()
    finally:
        for process in (worker, warm):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

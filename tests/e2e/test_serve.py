"""`crisis serve` as an operator runs it: MLflow's own scoring server, in a real
subprocess on loopback, answering /invocations with the routing columns; bad
input gets a 400 with the reason and the server keeps serving; Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.tasks.synthetic import make_batch
from tests.e2e.test_stack import CRISIS, cli_env, crisis, free_port  # noqa: F401 - fixtures
from prefect_crisis.blocks import InferenceLog
from tests.helpers import FEATURES, register, wait_for
from tests.unit.test_serving_swap import register_fallback

pytestmark = pytest.mark.e2e


@pytest.fixture
def trained(cli_env):
    home = Path(cli_env["CRISIS_HOME"])
    home.mkdir(parents=True)
    registry = ModelRegistry(model_name="churn", tracking_uri=f"sqlite:///{home / 'mlflow.db'}").use(timeline=Timeline(sink=ListSink()))
    version = register(registry, False, seed=1)
    registry.promote(version, "first model")
    fallback = register_fallback(registry)
    return registry, version, fallback


def start_serving(env, *args) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([*CRISIS, "serve", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "/invocations" in line and line.startswith("serving"):
            return process, line.split(" at ")[1].split()[0]
    process.kill()
    raise AssertionError("crisis serve never printed its URL:\n" + "".join(lines))


def invoke(url: str, frame) -> httpx.Response:
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    return httpx.post(url, json=body, timeout=30)


def test_the_scoring_server_routes_rows_and_survives_bad_input(cli_env, trained):
    registry, version, fallback = trained
    port = free_port()
    process, url = start_serving(cli_env, "churn", "--port", str(port))
    try:
        assert url == f"http://127.0.0.1:{port}/invocations"
        batch = make_batch(300, seed=77)[FEATURES]
        answer = invoke(url, batch)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert len(rows) == 300
        assert set(rows[0]) == {"prediction", "answered_by", "version", "confidence", "error", "request_id", "row_id"}
        by = {(row["answered_by"], row["version"]) for row in rows}
        assert ("primary", version) in by and ("fallback", fallback) in by, by

        missing = httpx.post(url, json={"dataframe_split": {"columns": ["f00"], "data": [[1.0]]}}, timeout=30)
        assert missing.status_code == 400
        assert "the input lacks column(s) f01" in missing.json()["message"]
        text = batch.head(1).astype(object)
        text.iloc[0, 3] = "abc"
        wrong = invoke(url, text)
        assert wrong.status_code == 400 and "column 'f03' is not numeric" in wrong.json()["message"]

        again = invoke(url, batch.head(5))
        assert again.status_code == 200 and len(again.json()["predictions"]) == 5

        # Every answered row and every refused request is in the inference log, written off the request path.
        log = InferenceLog(url=f"sqlite:///{Path(cli_env['CRISIS_HOME']) / 'inference.db'}")
        logged = wait_for(lambda: log.read_window("churn", labelled_only=False), lambda frame: len(frame) >= 307, timeout=20)
        assert len(logged) == 307, len(logged)
        assert set(logged["request_id"]) >= {rows[0]["request_id"], again.json()["predictions"][0]["request_id"]}
        refused = logged[logged["answered_by"] == "none"]
        assert len(refused) == 2 and refused["error"].str.contains("lacks column|is not numeric").all()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "stopped serving churn" in output
    assert "Traceback" not in output
    with pytest.raises(httpx.HTTPError):  # the scoring server went with it
        httpx.get(url.replace("/invocations", "/ping"), timeout=2)


def test_kill_stops_the_scoring_server_too_and_loses_no_record(cli_env, trained):
    port = free_port()
    process, url = start_serving(cli_env, "churn", "--port", str(port))
    answer = invoke(url, make_batch(25, seed=78)[FEATURES])
    assert answer.status_code == 200
    process.send_signal(signal.SIGTERM)  # at once: the 25 records are still queued in the writer
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "stopped serving churn" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("/invocations", "/ping"), timeout=2)
    log = InferenceLog(url=f"sqlite:///{Path(cli_env['CRISIS_HOME']) / 'inference.db'}")
    logged = log.read_window("churn", labelled_only=False)
    assert set(logged["request_id"]) == {answer.json()["predictions"][0]["request_id"]} and len(logged) == 25


def test_operator_mistakes_are_one_line_with_exit_codes(cli_env, trained):
    unknown = crisis(cli_env, "serve", "nosuch", "--no-log")
    assert unknown.returncode == 2 and "no model 'nosuch'" in unknown.stdout and "Traceback" not in unknown.stdout + unknown.stderr
    port = free_port()
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        busy = crisis(cli_env, "serve", "churn", "--port", str(port))
    assert busy.returncode == 4 and f"port {port} on 127.0.0.1 is in use" in busy.stdout

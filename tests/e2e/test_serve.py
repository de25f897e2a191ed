"""`crisis serve` as an operator runs it: MLflow's own scoring server, in a real
subprocess on loopback, answering /invocations with the routing columns in strict
JSON (no bare NaN); a row with an invalid primary value is answered by the fallback
with the reason; a request no model can read gets a one-line JSON 400 and the
server keeps serving; Ctrl-C stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from prefect_crisis.blocks import InferenceLog, ModelRegistry
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.serving.confidence_routing import fit_routing
from prefect_crisis.tasks.serving.inference_log import read_window
from prefect_crisis.tasks.serving.routing_artifact import log_routing
from tests.e2e.test_stack import CRISIS, cli_env, crisis, free_port  # noqa: F401 - fixtures
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
    # What training does once it has a primary and a fallback: fit the routing on a holdout, log it to the primary's run.
    from prefect_crisis.tasks.models import load_sklearn_model

    holdout = make_batch(1_000, seed=5)
    primary_model = load_sklearn_model(registry.client, "churn", version)
    fallback_model = load_sklearn_model(registry.client, "churn", fallback)
    routing = fit_routing(
        primary_model,
        fallback_model,
        holdout[FEATURES].to_numpy(),
        holdout[FEATURES[:3]].to_numpy(),
        holdout["label"].to_numpy(),
        fallback_version=fallback,
    )
    log_routing(registry.client, registry.version(version).run_id, routing)
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


def strict(response: httpx.Response):
    """The body as strict JSON: a bare NaN or Infinity fails the test."""
    return json.loads(response.text, parse_constant=lambda name: pytest.fail(f"bare {name} in {response.text[:200]}"))


def test_the_scoring_server_routes_rows_and_survives_bad_input(cli_env, trained):
    _registry, version, fallback = trained
    port = free_port()
    process, url = start_serving(cli_env, "churn", "--port", str(port))
    try:
        assert url == f"http://127.0.0.1:{port}/invocations"
        batch = make_batch(300, seed=77)[FEATURES]
        batch.loc[0, "f10"] = float("nan")  # only the primary reads f10: the fallback answers the row
        batch.loc[1, "f00"] = float("nan")  # both read f00: nobody can answer the row
        answer = invoke(url, batch)
        assert answer.status_code == 200, answer.text
        rows = strict(answer)["predictions"]
        assert len(rows) == 300
        assert set(rows[0]) == {"prediction", "answered_by", "version", "confidence", "error", "reason", "request_id", "row_id"}
        assert (rows[0]["answered_by"], rows[0]["version"], rows[0]["reason"]) == ("fallback", fallback, "primary input invalid: 'f10' is missing")
        assert (rows[1]["answered_by"], rows[1]["version"], rows[1]["confidence"], rows[1]["prediction"]) == ("none", None, None, None)
        by = {(row["answered_by"], row["version"]) for row in rows}
        assert ("primary", version) in by and ("fallback", fallback) in by, by

        missing = httpx.post(url, json={"dataframe_split": {"columns": ["f00"], "data": [[1.0]]}}, timeout=30)
        assert missing.status_code == 400
        assert set(strict(missing)) == {"error_code", "message"} and "\n" not in missing.text.strip()
        assert missing.json()["message"].startswith("the input lacks column(s) f01")  # without MLflow's echo of the input
        text = batch.iloc[2:3].astype(object)
        text.iloc[0, 3] = "abc"
        wrong = invoke(url, text)  # text in f03, which only the primary reads: the fallback answers
        assert wrong.status_code == 200, wrong.text
        assert strict(wrong)["predictions"][0]["answered_by"] == "fallback"
        assert strict(wrong)["predictions"][0]["reason"] == "primary input invalid: 'f03' is not a number"

        again = invoke(url, batch.iloc[2:7])
        assert again.status_code == 200 and len(again.json()["predictions"]) == 5

        # Every answered row and every refused request is in the inference log, written off the request path.
        log = InferenceLog(url=f"sqlite:///{Path(cli_env['CRISIS_HOME']) / 'inference.db'}")
        logged = wait_for(lambda: read_window(log, "churn", labelled_only=False), lambda frame: len(frame) >= 307, timeout=20)
        assert len(logged) == 307, len(logged)
        assert set(logged["request_id"]) >= {rows[0]["request_id"], again.json()["predictions"][0]["request_id"]}
        refused = logged[logged["answered_by"] == "none"]
        assert len(refused) == 2 and refused["error"].str.contains("lacks column|'f00' is missing").all()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)  # the scoring server's graceful stop, then the CLI's exit, on a loaded machine
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "stopped serving churn" in output
    assert "Traceback" not in output and "Failed to predict data" not in output
    assert "no routing.json" not in output  # the routing logged for the champion was found
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
    logged = read_window(log, "churn", labelled_only=False)
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

"""The closed loop on a real stack: `crisis up --worker`, `crisis deploy` (deployments
and the escalation automations), a real process worker running what the automations
trigger, the MLflow store and the inference log of the stack's state folder.

serving -> inference log -> labels recorded -> health-monitor -> ml.breach.critical ->
crisis-response -> rollback in the registry; two models breaching in the same second
both recover; an emergency rolls back to the stable version and the resolved event lowers the flag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_crisis.blocks import InferenceLog, ModelRegistry
from prefect_crisis.core.timeline import emit_crisis_event
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, AliasAction, CrisisEvent
from prefect_crisis.deployments.postgres import read_cluster
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.serving.inference_log import open_inference_log, record_labels
from prefect_crisis.tasks.serving.router import FallbackRouter
from prefect_crisis.tasks.training.stop_flag import read_stop_flag
from tests.e2e.test_stack import free_port
from tests.helpers import FEATURES, poisoned_after_stable, register, wait_for
from tests.unit.test_serving_swap import register_fallback

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "prefect_crisis.deployments.cli"]
LOOP_TIMEOUT = 240  # seconds: worker poll, flow-run process start, imports, the flows themselves, on a loaded 2-core machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`crisis up --worker` and `crisis deploy` in a private state folder; this process pointed at it."""
    work = tmp_path_factory.mktemp("loop")
    home = work / ".crisis"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "CRISIS_"))}
    env.update(CRISIS_HOME=str(home), PREFECT_HOME=str(work / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200")
    # the server on the stack's private PostgreSQL: on SQLite each automation action waits ~2 s for the database lock
    up = subprocess.run(
        [*CLI, "up", "--worker", "--postgres", "--port", str(free_port())], env=env, cwd=work, capture_output=True, text=True, timeout=240
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in subprocess.run([*CLI, "env"], env=env, cwd=work, capture_output=True, text=True, timeout=60).stdout.splitlines()
        )
        exports = {name: value.strip("'") for name, value in exports.items()}
        deploy = subprocess.run([*CLI, "deploy"], env={**env, **exports}, cwd=work, capture_output=True, text=True, timeout=600)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "crisis-critical" in deploy.stdout
        saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "CRISIS_HOME")}
        os.environ.update(MLFLOW_TRACKING_URI=exports["MLFLOW_TRACKING_URI"], CRISIS_HOME=exports["CRISIS_HOME"])
        with temporary_settings({PREFECT_API_URL: exports["PREFECT_API_URL"]}):
            yield home
            # this process's events client stays bound to the stack's server: end it with the stack, so the
            # next module's events reach its own server
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    finally:
        cluster = read_cluster(home)
        subprocess.run([*CLI, "down"], env=env, cwd=work, capture_output=True, text=True, timeout=120)
        if cluster is not None:  # as root its data went to /var/tmp (pytest's folders are 0700): `down` keeps data, the test does not
            shutil.rmtree(cluster.folder, ignore_errors=True)


def status_of(home, model: str) -> tuple[int, dict]:
    """`crisis status MODEL --json` as a script runs it: (exit code, the model's part)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(CRISIS_HOME=str(home), COLUMNS="200")
    done = subprocess.run([*CLI, "status", model, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)["model"]


def serve(registry: ModelRegistry, log: InferenceLog, rows: int = 300, seed: int = 500) -> tuple[list, list]:
    """Serve `rows` rows through the router into the stack's inference log; (row keys, true labels)."""
    router = FallbackRouter(registry, log=open_inference_log(log), close_log=True).start(refresh_in_background=False)
    batch = make_batch(rows, seed=seed)
    answer = router.predict(batch[FEATURES])
    router.close()
    keys = list(zip(answer["request_id"], answer["row_id"].astype(str), strict=True))
    return keys, batch["label"].tolist()


def rolled_back(registry: ModelRegistry) -> list:
    return [move for move in registry.audit_trail(registry.champion_alias) if move.action == AliasAction.ROLLBACK and move.applied]


def response_runs(model: str) -> list:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["crisis-response"])), limit=200)
    return [run for run in runs if run.parameters.get("model_name") == model]


@pytest.fixture(scope="module")
def labelled_rollback(stack):
    """A degraded champion served beside a healthy model; the labels are recorded and the loop left to
    act: (sick registry, good version, degraded version, healthy registry, its champion, seconds to rollback)."""
    tag = uuid.uuid4().hex[:6]
    sick_name, healthy_name = f"sick-{tag}", f"healthy-{tag}"
    sick, good, degraded = poisoned_after_stable(sick_name, swapped=("f00", "f05"))  # ~68% accurate live, 91% recorded
    healthy = ModelRegistry(model_name=healthy_name)
    healthy_champion = register(healthy, False, seed=3)
    healthy.promote(healthy_champion, "first model")
    log = InferenceLog()
    sick_keys, sick_labels = serve(sick, log, seed=501)
    healthy_keys, healthy_labels = serve(healthy, log, seed=502)

    started = time.monotonic()
    record_labels(log, sick_keys + healthy_keys, sick_labels + healthy_labels)  # ml.labels.recorded, one per model
    wait_for(lambda: rolled_back(sick), bool, timeout=LOOP_TIMEOUT, every=0.5)
    return sick, good, degraded, healthy, healthy_champion, time.monotonic() - started


def test_labels_that_reveal_a_degraded_champion_roll_it_back_and_leave_the_healthy_model_alone(stack, labelled_rollback):
    sick, good, degraded, healthy, healthy_champion, elapsed = labelled_rollback
    moves = rolled_back(sick)
    assert moves, f"no rollback of {sick.model_name} within {LOOP_TIMEOUT} s of its labels"
    assert moves[-1].from_version == degraded and moves[-1].to_version == good
    assert sick.champion().version == good
    print(f"labels recorded -> rollback in the registry: {elapsed:.1f} s")

    assert healthy.champion().version == healthy_champion
    assert [run for run in response_runs(healthy.model_name) if run.parameters.get("severity") == "critical"] == []

    code, board = status_of(stack, sick.model_name)  # after the rollback the champion moved past the breach: not in crisis
    assert code == 0 and board["level"] == "ok" and board["versions"]["champion"]["version"] == good
    assert board["actions"][0]["action"] == "rollback" and board["latest_sweep"]["severity"] == "critical"
    assert board["incidents"] and board["incidents"][0]["time_to_recover_s"] is not None


def test_two_models_breaching_in_the_same_second_both_recover(stack):
    tag = uuid.uuid4().hex[:6]
    registries = [poisoned_after_stable(f"twin-{tag}-{n}", seeds=(5 + n, 7 + n), swapped=("f00", "f05")) for n in range(2)]
    log = InferenceLog()
    for registry, _good, _bad in registries:
        keys, labels = serve(registry, log, seed=510)
        record_labels(log, keys, labels, emit=False)  # the window the response reads; no monitor run
    for registry, _good, bad in registries:  # back to back: the same second
        emit_crisis_event(CrisisEvent.BREACH_CRITICAL, registry.model_name, {"metric": "error_rate", "value": 0.32, "threshold": 0.19}, version=bad)
    for registry, good, _bad in registries:
        moves = wait_for(lambda registry=registry: rolled_back(registry), bool, timeout=LOOP_TIMEOUT, every=0.5)
        assert moves and moves[-1].to_version == good, f"{registry.model_name} was not rolled back"
    assert all(len(response_runs(registry.model_name)) == 1 for registry, _, _ in registries)


def test_an_emergency_rolls_back_before_it_falls_back_and_the_resolved_event_lowers_the_flag(stack):
    model = f"alarm-{uuid.uuid4().hex[:6]}"
    registry, good, bad = poisoned_after_stable(model)
    fallback = register_fallback(registry)
    emit_crisis_event(CrisisEvent.BREACH_EMERGENCY, model, {"metric": "error_rate", "value": 0.87, "threshold": 0.5}, version=bad)
    champion = wait_for(lambda: registry.champion().version, lambda version: version != bad, timeout=LOOP_TIMEOUT, every=0.5)
    assert champion == good, f"the emergency moved serving to v{champion}, not the stable v{good} (fallback v{fallback})"
    assert wait_for(lambda: read_stop_flag(model), lambda flag: flag is not None, timeout=30) is not None
    code, board = status_of(stack, model)
    assert code == 3 and board["level"] == "emergency" and board["versions"]["champion"]["version"] == good
    emit_crisis_event(CrisisEvent.RECOVERY_SUCCEEDED, model, {"recovered": True}, version=good, labels={EMERGENCY_LABEL: "true"})
    assert wait_for(lambda: read_stop_flag(model), lambda flag: flag is None, timeout=LOOP_TIMEOUT, every=0.5) is None
    assert registry.champion().version == good  # resolving leaves the champion where recovery put it


def test_a_monitor_that_goes_silent_raises_a_warning_for_that_model_only(stack):
    """The dead man's switch fires on the real server: a model that reported once and then went
    quiet gets a diagnose-only warning response; a model that keeps reporting gets none."""
    from prefect.client.orchestration import get_client as client_of

    from prefect_crisis.blocks import EscalationPolicy
    from prefect_crisis.deployments.automations import apply_ladder

    tag = uuid.uuid4().hex[:6]
    quiet, chatty = f"quiet-{tag}", f"chatty-{tag}"
    short = EscalationPolicy(monitor_interval_seconds=5, dead_man_intervals=2)  # a 10 s window: Prefect's minimum
    with client_of(sync_client=True) as client:
        apply_ladder(short, client)
    try:
        started = time.monotonic()
        emit_crisis_event(CrisisEvent.HEALTH_REPORTED, quiet, {"breaches": 0})
        warned = []
        while time.monotonic() - started < 60 and not warned:
            emit_crisis_event(CrisisEvent.HEALTH_REPORTED, chatty, {"breaches": 0})  # every 2 s: never silent
            time.sleep(2)
            warned = response_runs(quiet)
        elapsed = time.monotonic() - started
        assert warned, "no response to the silent monitor within 60 s"
        assert (warned[0].parameters["severity"], warned[0].parameters["diagnose_only"]) == ("warning", True)
        assert elapsed >= 10  # not before the window has passed
        assert response_runs(chatty) == []
        print(f"silent monitor -> warning response after {elapsed:.1f} s (window 10 s)")
    finally:
        with client_of(sync_client=True) as client:
            apply_ladder(EscalationPolicy(), client)  # the module's other tests expect the default ladder


def test_the_dashboard_and_the_response_read_right_in_a_real_browser(stack, labelled_rollback):
    """Headless Chromium on the Prefect UI and the MLflow UI after the loop rolled a champion back: the
    dashboard artifact shows the rolled-back champion, the incident and the health plot as a picture; the
    response's flow run says what it did; the incident's MLflow run holds the health plot."""
    from prefect.artifacts import Artifact

    from tests.e2e.browser import browser_page, screenshot_folder

    sick, good, degraded, *_ = labelled_rollback
    model = sick.model_name
    key = f"crisis-dashboard-{model}"
    wait_for(lambda: Artifact.get(key), lambda found: found is not None and f"| champion | v{good} |" in found.data, timeout=60)
    # the registry moved before the response run ends (it still writes its report): wait for its final state
    runs = wait_for(lambda: [run for run in response_runs(model) if run.state_name == "Recovered"], bool, timeout=LOOP_TIMEOUT, every=0.5)
    assert runs, "no recovered response run"
    # the incident the response acted in: its tag (a response that joined the model's open episode acts in that incident,
    # not in the one its parameters name)
    incident = next(tag.removeprefix("incident:") for tag in runs[0].tags if tag.startswith("incident:"))
    ui = PREFECT_API_URL.value().removesuffix("/api")
    shots = screenshot_folder()
    with browser_page() as page:
        page.goto(f"{ui}/artifacts/key/{key}", wait_until="networkidle")
        page.locator("a[href*='/artifacts/artifact/']").first.click()  # the newest version of the keyed artifact
        page.wait_for_load_state("networkidle")
        page.get_by_role("heading", name=f"{model}: OK").wait_for()
        assert f"v{good}" in page.locator("tr", has_text="champion").first.inner_text()  # the Versions table's first row
        text = page.inner_text("body")
        assert incident in text and "rollback" in text and f"v{degraded} -> v{good}" in text
        plot = page.locator("img[alt^='Health of']")
        plot.scroll_into_view_if_needed()
        assert plot.evaluate("image => image.complete && image.naturalWidth") > 500, "the health plot is not shown as a picture"
        page.set_viewport_size({"width": 1400, "height": 2800})  # the UI scrolls inside its own pane: a tall window shows it all
        page.screenshot(path=str(shots / "dashboard.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})
        # the MLflow link of this incident's row (the dashboard lists the model's incidents, newest first)
        mlflow_link = page.locator("tr", has_text=incident).locator("a[href*='/#/experiments/']").first.get_attribute("href")

        page.goto(f"{ui}/runs/flow-run/{runs[0].id}", wait_until="networkidle")
        page.get_by_text("Recovered").first.wait_for()
        text = page.inner_text("body")
        assert f"champion v{degraded} -> v{good}" in text.replace("→", "->") and incident in text
        page.screenshot(path=str(shots / "response-run.png"))

        assert mlflow_link, "the dashboard does not link the incident's MLflow run"
        # the run's Artifacts tab by its address (the MLflow UI polls: never network-idle); on a loaded machine the UI's
        # bundle and the artifact listing take longer than Playwright's default 30 s
        page.goto(f"{mlflow_link}/artifacts", wait_until="load")
        page.get_by_text("health.png").first.click(timeout=120_000)
        shown = page.locator("img[src^='blob:']").first  # the MLflow UI shows an artifact image from a blob URL
        shown.wait_for(timeout=120_000)
        page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=shown.element_handle(), timeout=120_000)
        page.screenshot(path=str(shots / "mlflow-incident-run.png"))
    print(f"screenshots in {shots}")


def drill_cli(home, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`crisis drill ARGS` as an operator runs it against the module's stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(CRISIS_HOME=str(home), COLUMNS="200")
    return subprocess.run([*CLI, "drill", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1500)  # eleven drills in one command: 3-6 minutes on a loaded 2-core machine (the stack included)
def test_recovery_drills_of_every_scenario_recover_through_the_real_ladder(stack):
    """Each scenario once, injected into the running stack: the automations, the workers, the registry and the
    router respond on their own; the drill checks the end state (accuracy on fresh labelled rows no lower than before
    the fault, the incidents of the episode, nothing lost; alias, fallback, stop flag, the incident's timeline, marked
    as a drill) and writes its report (JSON, PNG, Prefect artifacts)."""
    from prefect_crisis.tasks.drills.catalogue import END_STATE_TOLERANCE

    mistyped = drill_cli(stack, "latency-spik")
    assert mistyped.returncode == 2 and "no drill scenario 'latency-spik'" in mistyped.stderr + mistyped.stdout
    assert "Traceback" not in mistyped.stderr

    scenarios = [
        "corrupted-batch",
        "poisoned-retrain",
        "concept-drift",
        "primary-raising",
        "latency-spike",
        "registry-unavailable",
        "training-killed",
        "duplicate-event",
        "real-bad-release",
        "real-poisoned-retrain",
        "real-rejected-batch",
    ]
    done = drill_cli(stack, *scenarios, "--seed", "3", "--json", timeout=1400)
    assert done.returncode == 0, drill_failures(done)
    report = json.loads(done.stdout)
    assert "poisoned-retrain #0 (seed 3): passed" in done.stderr  # progress as it happens, off the JSON
    rows = {row["scenario"]: row for row in report["summary"]}
    assert list(rows) == scenarios and all(row["success_rate"] == 1.0 for row in rows.values())
    for name in scenarios:
        assert rows[name]["detect_p50_s"] is not None, name
        assert rows[name]["mitigate_p50_s"] is not None or name == "training-killed", name  # a killed training has nothing to mitigate
    for name in (
        "poisoned-retrain",
        "duplicate-event",
        "primary-raising",
        "latency-spike",
        "registry-unavailable",
        "training-killed",
        "real-bad-release",
        "real-poisoned-retrain",
    ):
        assert rows[name]["recover_p50_s"] is not None, name
    assert runs_outage_s(report) >= 2.5  # the store was unwritable while the response ran, and the rollback still landed once
    runs = {run["scenario"]: run for run in report["runs"]}

    # the end state, from the JSON: accuracy on fresh rows, incidents per episode, rows lost
    for name, run in runs.items():
        facts = run["facts"]
        if name in ("primary-raising", "latency-spike", "training-killed"):
            assert facts["pre_accuracy"] is None and facts["accuracy"].startswith("not measured: "), name
        else:
            assert facts["end_accuracy"] >= facts["pre_accuracy"] - END_STATE_TOLERANCE, (name, facts)
        assert facts.get("rows_lost", 0) == 0, (name, facts)
    for name in ("poisoned-retrain", "concept-drift", "registry-unavailable", "duplicate-event", "real-bad-release", "real-poisoned-retrain"):
        assert runs[name]["facts"]["incidents"] == 1, (name, runs[name]["facts"])
    for name in ("corrupted-batch", "real-rejected-batch", "primary-raising", "latency-spike"):  # none by design, or one warning
        assert runs[name]["facts"]["incidents"] <= 1, (name, runs[name]["facts"])
    assert runs["training-killed"]["facts"]["incidents"] == 0
    for name in (
        "poisoned-retrain",
        "registry-unavailable",
        "duplicate-event",
        "real-bad-release",
        "real-poisoned-retrain",
        "corrupted-batch",
        "real-rejected-batch",
    ):  # back on (or never off) the version that served before the fault
        assert runs[name]["facts"]["end_version"] == runs[name]["facts"]["pre_version"], (name, runs[name]["facts"])
    for name in ("corrupted-batch", "real-rejected-batch"):  # a rejected batch never reaches serving or stops training
        assert runs[name]["facts"]["stop_flag"] is False and runs[name]["facts"]["kept_for_training"] == 0, name
    assert runs["real-bad-release"]["facts"]["pre_accuracy"] > 0.9  # a real 10-class model, back at its own accuracy

    assert runs["poisoned-retrain"]["incident"] and runs["corrupted-batch"]["facts"]["heavy_quarantined"] == 200
    assert runs["duplicate-event"]["facts"]["responses"] == 1
    assert runs["training-killed"]["facts"]["work_lost_s"] <= 3.0  # SIGKILLed: resumed from a checkpoint of the last second or so
    assert os.path.exists(report["json"]) and open(report["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    from prefect.client.orchestration import get_client as client_of
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with client_of(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drill-report", "drill-times"])))
    assert {artifact.key for artifact in artifacts} == {"drill-report", "drill-times"}
    print("\n".join(line for line in done.stderr.splitlines() if ": passed;" in line))


def drill_failures(done: subprocess.CompletedProcess) -> str:
    """What failed, from the report's JSON (every failed run's reasons and facts), else the output's tails."""
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return done.stdout[-3000:] + done.stderr[-3000:]
    failed = [run for run in report["runs"] if not run["passed"]]
    return "\n".join(f"{run['scenario']}: {'; '.join(run['failures'])} (facts {run['facts']})" for run in failed) or done.stderr[-3000:]


def runs_outage_s(report: dict) -> float:
    return next(run for run in report["runs"] if run["scenario"] == "registry-unavailable")["facts"]["outage_s"]


def test_the_silent_monitor_drill_waits_out_the_deployed_window(stack):
    from prefect.client.orchestration import get_client as client_of

    from prefect_crisis.blocks import EscalationPolicy
    from prefect_crisis.deployments.automations import apply_ladder

    with client_of(sync_client=True) as client:
        apply_ladder(EscalationPolicy(monitor_interval_seconds=5, dead_man_intervals=2), client)  # a 10 s window
    try:
        done = drill_cli(stack, "monitor-silent", "--json")
    finally:
        with client_of(sync_client=True) as client:
            apply_ladder(EscalationPolicy(), client)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(done.stdout)["runs"][0]
    assert run["passed"] and run["facts"]["window_s"] == 10 and 10 <= run["detect_s"] < 60
    assert run["facts"]["incidents"] == 1 and run["facts"]["end_accuracy"] == run["facts"]["pre_accuracy"]


def up_workers(home) -> subprocess.CompletedProcess:
    """`crisis up --worker --postgres` on the module's running stack: it starts the workers that are gone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(CRISIS_HOME=str(home), COLUMNS="200")
    return subprocess.run([*CLI, "up", "--worker", "--postgres"], env=env, capture_output=True, text=True, timeout=240)


def heartbeats_of(run_id) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=50,  # the client's default (100) is over the server's maximum
        )
    return page.events


@pytest.mark.timeout(900)
def test_a_response_killed_with_its_worker_is_marked_crashed_run_again_and_recovers_in_one_incident(stack):
    """kill -9 of the warm worker while a response runs (held at the model's slot, so it is mid-run for sure): its
    heartbeats stop, crisis-stalled marks it Crashed, crisis-retry-response runs it again once `crisis up --worker` has
    a worker back; the retry rolls the degraded champion back, in the crashed run's incident, both runs tagged with it."""
    import signal

    from prefect.concurrency.sync import concurrency

    from prefect_crisis.deployments.worker import WARM, read_worker
    from prefect_crisis.tasks.model_slots import response_limit
    from prefect_crisis.tasks.response.report import wait_for_incident_end

    model = f"killed-{uuid.uuid4().hex[:6]}"
    registry, good, bad = poisoned_after_stable(model, swapped=("f00", "f05"))
    keys, labels = serve(registry, InferenceLog(), seed=530)
    record_labels(InferenceLog(), keys, labels, emit=False)  # the window the response reads
    warm = read_worker(stack, WARM)
    assert warm is not None
    with concurrency(response_limit(model), occupy=1, strict=True):  # another response of this model holds the slot
        emit_crisis_event(CrisisEvent.BREACH_CRITICAL, model, {"metric": "error_rate", "value": 0.32, "threshold": 0.19}, version=bad)
        first = wait_for(lambda: [run for run in response_runs(model) if run.state_name == "Running"], bool, timeout=LOOP_TIMEOUT, every=0.5)
        assert first, "no response run started"
        assert wait_for(lambda: heartbeats_of(first[0].id), bool, timeout=60, every=1), "a response in the warm worker sends no heartbeat"
        os.kill(warm.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    crashed = wait_for(lambda: [run for run in response_runs(model) if run.state_name == "Crashed"], bool, timeout=300, every=2)
    assert crashed and crashed[0].id == first[0].id, "the response lost with its worker was not marked Crashed"
    print(f"killed worker -> response marked Crashed by crisis-stalled after {time.monotonic() - killed_at:.0f} s (90 s without heartbeat)")
    up = up_workers(stack)
    assert up.returncode == 0, up.stdout + up.stderr
    moves = wait_for(lambda: rolled_back(registry), bool, timeout=LOOP_TIMEOUT, every=0.5)
    assert moves and moves[-1].to_version == good and registry.champion().version == good
    runs = wait_for(lambda: response_runs(model), lambda runs: any(run.state_name == "Recovered" for run in runs), timeout=LOOP_TIMEOUT, every=1)
    retry = [run for run in runs if run.state_name == "Recovered"]
    assert len(runs) == 2 and retry, [(run.state_name, run.parameters.get("attempt")) for run in runs]
    assert (retry[0].parameters["retry_of"], retry[0].parameters["attempt"]) == (str(first[0].id), 2)
    incident = first[0].parameters["incident_id"]  # the breach event's id
    assert retry[0].parameters["incident_id"] == incident and retry[0].parameters["window_minutes"] == 60
    assert moves[-1].incident == incident
    assert all(f"incident:{incident}" in run.tags for run in response_runs(model)), "both runs are the incident's"
    report = wait_for_incident_end(incident, timeout=60)
    assert {"incident.opened", "model.rolled-back", "recovery.succeeded"} <= {step.step for step in report.steps}
    code, board = status_of(stack, model)
    assert code == 0 and len(board["incidents"]) == 1


@pytest.mark.timeout(600)
def test_a_breach_sent_while_the_server_restarts_reaches_the_response(stack):
    """The Prefect server goes down as a breach is emitted and comes back on the same database and port: the
    emitting process keeps the event (Prefect's events client holds unconfirmed events and sends them again on
    reconnecting), the automation acts on it when it arrives, the workers poll again, and the rollback lands with
    its incident's timeline whole. Runs last: it restarts the module's server."""
    from prefect.events.worker import EventsWorker

    from prefect_crisis.deployments import stack as stacks
    from prefect_crisis.tasks.drills.observe import model_events
    from prefect_crisis.tasks.response.report import wait_for_incident_end

    model = f"restart-{uuid.uuid4().hex[:6]}"
    registry, good, bad = poisoned_after_stable(model, swapped=("f00", "f05"))
    keys, labels = serve(registry, InferenceLog(), seed=520)
    record_labels(InferenceLog(), keys, labels, emit=False)  # the window the response reads
    state = stacks.read_state(stack)
    cluster = read_cluster(stack)
    port = int(state.api_url.rsplit(":", 1)[1].split("/")[0])

    assert stacks.stop_server(stack).stopped
    assert not stacks.is_healthy(state.api_url)
    sent = emit_crisis_event(CrisisEvent.BREACH_CRITICAL, model, {"metric": "error_rate", "value": 0.32, "threshold": 0.19}, version=bad)
    time.sleep(3)  # the server stays down while the client tries to send
    stacks.start_server(stack, port=port, database_url=cluster.url() if cluster else None)
    EventsWorker.drain_all(timeout=60)

    def ours():  # the event itself, sent again (the schedule's sweep may raise a breach of its own meanwhile)
        return [
            event
            for event in model_events(model, [CrisisEvent.BREACH_CRITICAL], sent.occurred)
            if abs((event.occurred - sent.occurred).total_seconds()) < 0.001
        ]

    assert wait_for(ours, bool, timeout=60, every=0.5), "the breach emitted during the outage never reached the restarted server"
    moves = wait_for(lambda: rolled_back(registry), bool, timeout=LOOP_TIMEOUT, every=0.5)
    assert moves and moves[-1].to_version == good and registry.champion().version == good
    assert len(response_runs(model)) == 1
    report = wait_for_incident_end(moves[-1].incident, timeout=60)
    assert {"incident.opened", "decision.taken", "model.rolled-back", "recovery.succeeded"} <= {step.step for step in report.steps}

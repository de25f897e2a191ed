"""Escalation: from a breach (or from the labels that reveal one) to the rollback
recorded in the registry, on a real local stack this script starts itself
(`crisis up --worker` on a free port, state in a temporary folder, `crisis deploy`;
always `crisis down` at the end, also on Ctrl-C or an error).

1. One model at a time: N models `bench-<i>`, each with a good version that served
   three hours and a poisoned (label-flipped) champion promoted ten minutes ago, and
   a labelled window of 300 served rows in the stack's inference log (labels recorded
   without `ml.labels.recorded`). Emit `ml.breach.critical` for the model and time
   until the registry's audit holds an applied `rollback` move for it (the audit
   row's own `at` minus the emit time, both UTC; and the time the 50 ms poll saw it).
   Per incident: emit -> flow run created -> running -> the flow body's first log
   line -> rollback.
2. Five models breaching in the same second (five emits back to back): all must recover.
3. End to end: labels recorded WITH `ml.labels.recorded` -> crisis-evidence ->
   health-monitor -> `ml.breach.critical` -> crisis-critical -> crisis-response ->
   rollback. The champion here is degraded into the monitor's CRITICAL band (error
   about 0.40: above its baseline + 0.10, below the emergency's 0.5), so the ladder's
   critical step (rollback) runs rather than the emergency stop.

Run: `.venv/bin/python benchmarks/bench_escalation.py` (defaults: --incidents 20
--burst 5 --labels 5; about 5-10 minutes on 2 cores); results go to
benchmarks/results/escalation.json. `--parts 1` runs only part 1. The stack's server runs on
its private PostgreSQL (`crisis up --postgres`); `--database sqlite` measures the SQLite default
(each automation action then waits ~2 s for the server's database lock).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "escalation.json"
CLI = [sys.executable, "-m", "prefect_crisis.deployments.cli"]
ROWS = 300
REQUEST_ROWS = 10
POLL = 0.05
# Part 3's champion: 55% of the positive labels flipped to 0 (27% of the rows). Random flips of
# 35% of the labels do not make a bad logistic model (it still learns the right direction: error
# ~0.14 on true labels, while its own holdout accuracy of ~0.62 puts the baseline at ~0.38).
CRITICAL_POSITIVES_FLIPPED = 0.55


# -- the stack -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "CRISIS_"))}
    env.update(PREFECT_HOME=str(work / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200", CRISIS_HOME=str(work / ".crisis"))
    return env


def cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"crisis {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def local_stack(*up_args: str, prefix: str = "crisis-bench-"):
    """A stack of its own for a benchmark: `crisis up --worker` (plus `up_args`) on a free port in a temporary folder,
    this process pointed at it (before prefect_crisis is imported), `crisis deploy`; `crisis down` at the end, also on
    Ctrl-C or an error. Yields (the folder, the stack's exports)."""

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = clean_environment(work)
    port = free_port()
    print(f"stack: {work} (port {port})", flush=True)
    cli(env, work, "up", "--worker", "--port", str(port), *up_args, timeout=240)
    try:
        exports = exports_of(cli(env, work, "env"))
        for name in list(os.environ):  # the script's own environment, before prefect_crisis (or prefect) is imported
            if name.startswith(("PREFECT_API", "MLFLOW_TRACKING", "CRISIS_")):
                del os.environ[name]
        os.environ.update(PREFECT_HOME=env["PREFECT_HOME"], PREFECT_SERVER_ANALYTICS_ENABLED="false", CRISIS_NO_AUTOCONNECT="1", **exports)
        print(cli({**env, **exports}, work, "deploy", timeout=300), flush=True)
        yield work, exports
    finally:
        try:
            cli(env, work, "down", timeout=90)
            print("stack down", flush=True)
        except Exception as error:
            print(f"crisis down failed: {error}", file=sys.stderr)


def exports_of(output: str) -> dict[str, str]:
    exports = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = value.strip("'")
    return exports


# -- models and windows ----------------------------------------------------------------


def register(registry, labels, seed: int) -> str:
    """Train a logistic model on a synthetic batch with `labels(y, rng)` as its training labels, log
    its holdout accuracy (on those labels: what a poisoned pipeline would see) and register it."""
    from prefect_crisis.tasks.drills.injections import register_synthetic

    return register_synthetic(registry, seed, labels)


def all_flipped(y, rng):
    return 1 - y


def critical_band(y, rng):
    return (y & ~(rng.random(len(y)) < CRITICAL_POSITIVES_FLIPPED)).astype(y.dtype)


def poisoned_after_stable(model: str, poison, seed: int):
    """As tests/helpers.poisoned_after_stable: the good version served three hours, the poisoned one took over ten minutes ago."""
    from prefect_crisis.blocks import ModelRegistry

    now = datetime.now(UTC)
    clock = [now - timedelta(hours=3)]
    registry = ModelRegistry(model_name=model).use(clock=lambda: clock[0])
    good = register(registry, lambda y, rng: y, seed=seed)
    poisoned = register(registry, poison, seed=seed + 1)
    registry.promote(good, "first model")
    clock[0] = now - timedelta(minutes=10)
    registry.promote(poisoned, "retrained on the latest batch")
    return good, poisoned


def serve_window(model: str, seed: int):
    """Serve ROWS rows through a FallbackRouter logging to the stack's inference log; returns (keys, true labels)."""
    from prefect_crisis.blocks import InferenceLog, ModelRegistry
    from prefect_crisis.tasks.drills.synthetic import make_batch
    from prefect_crisis.tasks.serving.inference_log import open_inference_log
    from prefect_crisis.tasks.serving.router import FallbackRouter

    writer = open_inference_log(InferenceLog())
    router = FallbackRouter(ModelRegistry(model_name=model), log=writer).start(refresh_in_background=False)
    batch = make_batch(ROWS, seed=seed)
    keys, labels = [], []
    try:
        for start in range(0, ROWS, REQUEST_ROWS):
            part = batch.iloc[start : start + REQUEST_ROWS]
            request = f"{model}-{start // REQUEST_ROWS}"
            output = router.predict(part.drop(columns=["label"]), request_id=request)
            keys += [(request, str(row)) for row in output["row_id"]]
            labels += part["label"].tolist()
    finally:
        router.close()
    if not writer.flush(timeout=60):
        raise RuntimeError(f"the inference log writer did not flush {model}'s rows")
    writer.close()
    return keys, labels


def record_labels(keys, labels, *, emit: bool) -> float:
    """Record the labels; returns the UTC time (epoch seconds) just before."""
    import inspect

    from prefect_crisis.blocks import InferenceLog
    from prefect_crisis.tasks.serving.inference_log import record_labels as write_labels

    log = InferenceLog()
    started = time.time()
    if "emit" in inspect.signature(write_labels).parameters:
        write_labels(log, keys, labels, emit=emit)
    elif emit:
        write_labels(log, keys, labels)
    else:
        raise RuntimeError("record_labels has no `emit` keyword: part 1 cannot record labels without ml.labels.recorded")
    if emit:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    return started


# -- reading back what happened ----------------------------------------------------------


def rollback_move(registry):
    for move in registry.audit_trail():
        if move.action == "rollback" and move.applied:
            return move
    return None


def wait_for_rollbacks(models: list[str], timeout: float) -> dict[str, tuple[object, float]]:
    """Poll every model's audit every POLL s until each has an applied rollback: model -> (move, observed epoch s)."""
    from prefect_crisis.blocks import ModelRegistry

    registries = {model: ModelRegistry(model_name=model) for model in models}
    found: dict[str, tuple[object, float]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(models) and time.monotonic() < deadline:
        for model, registry in registries.items():
            if model not in found and (move := rollback_move(registry)) is not None:
                found[model] = (move, time.time())
        time.sleep(POLL)
    return found


def flow_runs_of(deployment: str, model: str, parameter: str = "model_name") -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])), limit=200)
    wanted = [run for run in runs if model == run.parameters.get(parameter) or model in (run.parameters.get("model_names") or [])]
    return sorted(wanted, key=lambda run: run.created)


def first_body_line(flow_run_id, wait: float = 6.0) -> tuple[float | None, float | None]:
    """(first log line of the run, first line of the flow body: the response's `using ...` line), epoch s.

    Logs reach the server in batches (every 2 s by default), so this waits up to `wait` seconds for the body's line."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC, limit=200)
            body = next((log.timestamp.timestamp() for log in logs if "labelled window" in log.message), None)
            if body is not None or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    first = logs[0].timestamp.timestamp() if logs else None
    return first, body


def ts(value) -> float | None:
    return value.timestamp() if value is not None else None


def breakdown(model: str, emitted: float, move, observed: float) -> dict:
    """Where the seconds of one incident went, from the crisis-response run that rolled it back."""
    runs = flow_runs_of("crisis-response/crisis-response", model)
    run = next((r for r in runs if move.flow_run_id and str(r.id) == move.flow_run_id), runs[-1] if runs else None)
    row = {"model": model, "rollback_at_s": ts(move.at) - emitted, "observed_s": observed - emitted, "responses": len(runs)}
    if run is None:
        return row
    created, started = ts(run.created), ts(run.start_time)
    first, body = first_body_line(run.id)
    row.update(
        flow_run=str(run.id),
        state=run.state.name if run.state else None,
        to_created_s=created - emitted,
        created_to_running_s=(started - created) if started else None,
        running_to_first_line_s=(body - started) if body and started else None,
        engine_first_line_s=(first - started) if first and started else None,
        first_line_to_rollback_s=(ts(move.at) - body) if body else None,
    )
    return row


# -- the parts --------------------------------------------------------------------------


def prepare(models: list[str], poison, seed0: int, *, emit_labels: bool = False) -> dict[str, tuple]:
    prepared = {}
    for offset, model in enumerate(models):
        seed = seed0 + 10 * offset
        poisoned_after_stable(model, poison, seed)
        keys, labels = serve_window(model, seed + 5)
        if not emit_labels:
            record_labels(keys, labels, emit=False)
        prepared[model] = (keys, labels)
    return prepared


def emit_breach(model: str) -> tuple[float, str]:
    from prefect.events.worker import EventsWorker

    from prefect_crisis.blocks import ModelRegistry
    from prefect_crisis.core.timeline import emit_crisis_event
    from prefect_crisis.core.vocabulary import CrisisEvent

    champion = ModelRegistry(model_name=model).champion()
    emitted = time.time()
    event = emit_crisis_event(
        CrisisEvent.BREACH_CRITICAL, model, {"metric": "accuracy", "rule": "bench", "source": "bench_escalation"}, version=champion.version
    )
    EventsWorker.drain_all()  # the emit returns when queued; the timing starts before it, as a monitor's would
    return emitted, str(getattr(event, "id", ""))


def part_one(count: int, timeout: float, prefix: str = "bench") -> list[dict]:
    rows = []
    for i in range(count):
        model = f"{prefix}-{i}"
        prepare([model], all_flipped, seed0=100 + 10 * i)
        emitted, _ = emit_breach(model)
        found = wait_for_rollbacks([model], timeout)
        if model not in found:
            rows.append({"model": model, "recovered": False})
            print(f"  {model}: no rollback within {timeout:g} s", flush=True)
            continue
        row = {"recovered": True, **breakdown(model, emitted, *found[model])}
        rows.append(row)
        print(f"  {model}: rollback {row['rollback_at_s']:.2f} s (observed {row['observed_s']:.2f} s)", flush=True)
    return rows


def part_two(count: int, timeout: float) -> list[dict]:
    models = [f"burst-{i}" for i in range(count)]
    prepare(models, all_flipped, seed0=500)
    emitted = {}
    for model in models:  # back to back: all within the same second
        emitted[model], _ = emit_breach(model)
    found = wait_for_rollbacks(models, timeout)
    rows = []
    for model in models:
        if model not in found:
            rows.append({"model": model, "recovered": False})
            continue
        rows.append({"recovered": True, **breakdown(model, emitted[model], *found[model])})
    spread = max(emitted.values()) - min(emitted.values())
    print(f"  {len(found)}/{count} recovered; emits spread over {spread:.2f} s", flush=True)
    return rows


def part_three(count: int, timeout: float) -> list[dict]:
    rows = []
    for i in range(count):
        model = f"labels-{i}"
        ((keys, labels),) = prepare([model], critical_band, seed0=900 + 10 * i, emit_labels=True).values()
        recorded = record_labels(keys, labels, emit=True)
        found = wait_for_rollbacks([model], timeout)
        monitors = flow_runs_of("health-monitor/health-monitor", model)
        monitor = monitors[0] if monitors else None
        row = {
            "model": model,
            "recovered": model in found,
            "monitor_runs": len(monitors),
            "monitor_state": monitor.state.name if monitor and monitor.state else None,
            "monitor_message": (monitor.state.message if monitor and monitor.state else None),
        }
        if monitor is not None:
            row.update(
                to_monitor_created_s=ts(monitor.created) - recorded,
                monitor_running_s=(ts(monitor.start_time) - recorded) if monitor.start_time else None,
                monitor_done_s=(ts(monitor.end_time) - recorded) if monitor.end_time else None,
            )
        responses = flow_runs_of("crisis-response/crisis-response", model)
        row["responses"] = [{"severity": r.parameters.get("severity"), "state": r.state.name if r.state else None} for r in responses]
        if model in found:
            move, observed = found[model]
            row.update({k: v for k, v in breakdown(model, recorded, move, observed).items() if k not in ("model", "responses")})
            print(f"  {model}: labels -> rollback {row['rollback_at_s']:.2f} s", flush=True)
        else:
            print(
                f"  {model}: no rollback within {timeout:g} s; monitor {row['monitor_state']}: {row['monitor_message']}; "
                f"responses {row['responses']}",
                flush=True,
            )
        rows.append(row)
    return rows


# -- figures -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(rows: list[dict], key: str = "rollback_at_s") -> dict:
    values = [row[key] for row in rows if row.get("recovered") and row.get(key) is not None]
    if not values:
        return {"n": 0, "recovered": 0, "of": len(rows)}
    return {
        "n": len(values),
        "recovered": sum(bool(r.get("recovered")) for r in rows),
        "of": len(rows),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "max": max(values),
    }


PHASES = ("to_created_s", "created_to_running_s", "running_to_first_line_s", "first_line_to_rollback_s")


def phase_medians(rows: list[dict]) -> dict:
    medians = {}
    for phase in (*PHASES, "engine_first_line_s", "observed_s"):
        values = [row[phase] for row in rows if row.get(phase) is not None]
        medians[phase] = statistics.median(values) if values else None
    return medians


def import_cost(module: str = "prefect_crisis.flows.response", repeats: int = 3) -> dict:
    """Seconds to import `module` in a fresh interpreter (median of `repeats`), and the bare interpreter with prefect."""

    def timed(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, "CRISIS_NO_AUTOCONNECT": "1"})
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return {
        "python": timed("pass"),
        "prefect": timed("import prefect"),
        "prefect.flow_engine": timed("import prefect.flow_engine"),
        "sklearn": timed("import sklearn.linear_model"),
        "skops.io": timed("import skops.io"),
        module: timed(f"import {module}"),
    }


def fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: dict) -> None:
    print("\n| scenario | recovered | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    for name, part in results["parts"].items():
        s = part["summary"]
        print(f"| {name} | {s.get('recovered', 0)}/{s['of']} | {fmt(s.get('p50'))} | {fmt(s.get('p95'))} | {fmt(s.get('max'))} |")
    print("\nmedian seconds per phase (event or labels -> created -> running -> flow body's first line -> rollback `at`):")
    print(
        "| scenario | -> run created | created -> running | running -> body line | body line -> rollback | (engine's first log line after running) | poll saw it |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, part in results["parts"].items():
        m = part["phases"]
        print(
            f"| {name} | {fmt(m['to_created_s'])} | {fmt(m['created_to_running_s'])} | {fmt(m['running_to_first_line_s'])} | "
            f"{fmt(m['first_line_to_rollback_s'])} | {fmt(m['engine_first_line_s'])} | {fmt(m['observed_s'])} |"
        )
    if "imports" in results:
        print("\nimport in a fresh interpreter (s): " + ", ".join(f"{k} {v:.2f}" for k, v in results["imports"].items()))


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=20, help="part 1: incidents, one after another")
    parser.add_argument("--burst", type=int, default=5, help="part 2: models breaching in the same second")
    parser.add_argument("--labels", type=int, default=5, help="part 3: labels -> rollback incidents")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1 or 1,3")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for one rollback (a burst: for all)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-imports", action="store_true", help="skip timing the imports in a fresh interpreter")
    parser.add_argument(
        "--database",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="the Prefect server's database: `crisis up --postgres` (default) or SQLite",
    )
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p.strip()}

    started = time.perf_counter()
    with local_stack(*(["--postgres"] if args.database == "postgres" else [])) as (_work, exports):
        print(f"stack up and deployed in {time.perf_counter() - started:.1f} s", flush=True)
        results: dict = {
            "started": datetime.now(UTC).isoformat(),
            "cpus": os.cpu_count(),
            "rows": ROWS,
            "load_before": os.getloadavg(),
            "database": args.database,
            "parts": {},
        }
        chosen = [
            (1, f"1. one model, breach -> rollback (N={args.incidents})", lambda: part_one(args.incidents, args.timeout)),
            (2, f"2. {args.burst} models in the same second", lambda: part_two(args.burst, args.timeout)),
            (3, f"3. labels -> monitor -> rollback (N={args.labels})", lambda: part_three(args.labels, args.timeout)),
        ]
        for number, name, run in chosen:
            if number not in parts:
                continue
            print(f"part {name}", flush=True)
            rows = run()
            results["parts"][name] = {"summary": summary(rows), "phases": phase_medians(rows), "rows": rows}
        if not args.no_imports:
            results["imports"] = import_cost()
        results["load_after"] = os.getloadavg()
        results["worker_log_errors"] = [
            line
            for log in ("worker.log", "warm-worker.log")
            for line in (Path(exports["CRISIS_HOME"]) / log).read_text(errors="replace").splitlines()
            if "Traceback" in line or " ERROR " in line or "Crashed" in line
        ][:40]
        print_table(results)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwritten {args.output}; load average {results['load_before']} -> {results['load_after']}")


if __name__ == "__main__":
    main()

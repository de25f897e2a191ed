"""Soak: one persistent breach for N minutes on a real model, and how many incidents the ladder opens for it.

Before, a persistent breach opened an emergency-stop incident on every 60 s sweep (15-18 in 17 minutes). The target:
at most one incident per model per episode. The script starts its own stack (`crisis up --worker --postgres` on a free
port, state in a temporary folder, `crisis deploy`; `crisis down` at the end, also on Ctrl-C or an error), then:

- a real model (digits, 10 classes: a scaled logistic regression that served three hours, a weak fallback behind it)
  whose world changes for good: from now on every served row's label is the next class (a concept shift no
  version and no fallback learnt), so every sweep breaches, and nothing the ladder can do repairs it;
- every `--every` seconds, 100 rows are served through the FallbackRouter into the stack's inference log and their
  labels recorded with `ml.labels.recorded` (the evidence automation runs the monitor at once, the schedule every 60 s);
- at the end: `ml.incident.opened` and `ml.incident.joined` events of the model, breach events, response and
  emergency flow runs, alias moves, and where `@champion` points (it must not have moved to anything measured worse).

Run: `.venv/bin/python benchmarks/bench_soak.py --minutes 30` (about 32 minutes); results in
benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_escalation import local_stack

RESULTS = Path(__file__).parent / "results" / "soak.json"
ROWS_PER_ROUND = 100


def serve_round(registry, stream, start: int, rotate) -> int:
    """Serve the next ROWS_PER_ROUND rows of the stream and record their (shifted) labels; returns the next start."""
    from prefect_crisis.blocks.inference_log import InferenceLog
    from prefect_crisis.tasks.drills.datasets import LABEL
    from prefect_crisis.tasks.serving.inference_log import open_inference_log, record_labels
    from prefect_crisis.tasks.serving.router import FallbackRouter

    rows = stream.iloc[[(start + i) % len(stream) for i in range(ROWS_PER_ROUND)]]
    log = InferenceLog()
    router = FallbackRouter(registry, log=open_inference_log(log), close_log=True).start(refresh_in_background=False)
    try:
        answer = router.predict(rows.drop(columns=[LABEL]))
    finally:
        router.close()
    record_labels(log, list(zip(answer["request_id"], answer["row_id"].astype(str), strict=True)), rotate(rows[LABEL].to_numpy()).tolist(), emit=True)
    return start + ROWS_PER_ROUND


def tally(model: str, since: datetime) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.events.worker import EventsWorker

    from prefect_crisis.blocks.registry import ModelRegistry
    from prefect_crisis.deployments.inspect import read_crisis_events

    EventsWorker.drain_all()
    time.sleep(2)
    events = [event for event in read_crisis_events(model) if event.occurred >= since]
    counted = Counter(event.event for event in events)
    runs = {}
    with get_client(sync_client=True) as client:
        for deployment in ("crisis-response", "emergency-stop", "health-monitor"):
            found = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])), limit=200)
            runs[deployment] = Counter(
                str(run.state.name) for run in found if model in (run.parameters.get("model_name"), *(run.parameters.get("model_names") or []))
            )
    registry = ModelRegistry(model_name=model)
    moves = [move for move in registry.audit_trail(registry.champion_alias) if move.applied and move.at >= since]
    incidents = sorted({r.id for e in events for r in e.related if r.role == "incident"})
    return {
        "events": dict(counted),
        "incidents": incidents,
        "runs": {name: dict(states) for name, states in runs.items()},
        "alias_moves": [f"{m.action} v{m.from_version} -> v{m.to_version} ({m.incident})" for m in moves],
        "champion": registry.champion().version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the breach persists")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between served and labelled rounds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with local_stack("--postgres", prefix="crisis-soak-"):
        from prefect_crisis.tasks.drills.real_models import build_real_stack, rotated, serving_accuracy

        model = f"soak-{datetime.now(UTC):%H%M%S}"
        stack = build_real_stack(model, "digits", seed=7)
        stream = stack.fresh().sample(frac=1.0, random_state=7).reset_index(drop=True)
        _, before = serving_accuracy(stack.registry, stream)
        classes = stack.data.classes
        since = datetime.now(UTC)
        deadline, start, rounds = time.monotonic() + args.minutes * 60, 0, 0
        print(f"{model}: v{stack.good} serves ({before:.1%} on true labels); the concept shifts now, for {args.minutes:g} minutes", flush=True)
        while time.monotonic() < deadline:
            started = time.monotonic()
            start = serve_round(stack.registry, stream, start, lambda labels: rotated(labels, classes))
            rounds += 1
            if rounds % 15 == 0:
                print(f"  {(time.monotonic() - (deadline - args.minutes * 60)) / 60:.1f} min: {rounds} rounds", flush=True)
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))
        time.sleep(30)  # the last round's sweep and responses
        result = {
            "model": model,
            "minutes": args.minutes,
            "rounds": rounds,
            "rows_per_round": ROWS_PER_ROUND,
            "accuracy_before": before,
            **tally(model, since),
        }
        result["incidents_opened"] = result["events"].get("ml.incident.opened", 0)
        print(json.dumps(result, indent=2, default=str))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, default=str))
        print(
            f"\n{result['incidents_opened']} incident(s) opened in {args.minutes:g} minutes of a persistent breach "
            f"({result['events'].get('ml.incident.joined', 0)} later breaches joined it); written {args.output}"
        )


if __name__ == "__main__":
    main()

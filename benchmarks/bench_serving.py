"""What the serving wrapper costs and what it saves, side by side with the bare
primary pyfunc a user would otherwise serve (MLflow's sklearn flavor), in one run:

1. Overhead: `CrisisModel` (routing, breaker, confidence, output columns; inference
   log off, so its write is measured apart) against the champion's own pyfunc,
   batches of 1 and 10,000 rows, interleaved calls, medians and p99.
2. The inference log on the request path: the added latency of a prediction with
   the log on (SQLite) and with its database down (records go to the spool), p50/p99
   against the log off.
3. A primary that starts raising mid-stream: requests failed to the client and calls
   that still reached the broken primary after the breaker opened, against the bare
   primary (every request after the break fails).

Run: `.venv/bin/python benchmarks/bench_serving.py` (about a minute); results go to
benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CRISIS_NO_AUTOCONNECT", "1")
os.environ.pop("PREFECT_API_URL", None)  # the wrapper logs its events instead of sending them

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.drills.synthetic import feature_names, make_batch
from prefect_crisis.tasks.serving.inference_log import open_inference_log
from prefect_crisis.tasks.serving.pyfunc import register_serving_model, serving_model_name
from prefect_crisis.tasks.serving.router import FallbackRouter, ServedVersion
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate

FEATURES = feature_names(20)
RESULTS = Path(__file__).parent / "results" / "serving.json"


def register(registry: ModelRegistry, estimator, features: list[str], seed: int) -> str:
    batch = make_batch(5_000, seed=seed)
    estimator.fit(batch[features].to_numpy(), batch["label"].to_numpy())
    run = registry.client.create_run(training_experiment(registry.client, registry.model_name))
    info = log_candidate(estimator, batch[features].to_numpy(), run.info.run_id, registry.client)
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(features)}).version


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def timed(call, argument) -> float:
    started = time.perf_counter()
    call(argument)
    return (time.perf_counter() - started) * 1000.0


def overhead(kind: str, bare, wrapper, batch, repeats: int) -> dict:
    frame = batch[FEATURES]  # both get the table the scoring server hands a model
    for _ in range(5):  # warm both
        bare.predict(frame), wrapper.predict(frame)
    bare_ms, wrapper_ms = [], []
    for _ in range(repeats):
        bare_ms.append(timed(bare.predict, frame))
        wrapper_ms.append(timed(wrapper.predict, frame))
    bare_median, wrapper_median = statistics.median(bare_ms), statistics.median(wrapper_ms)
    return {
        "champion": kind,
        "rows": len(batch),
        "calls": repeats,
        "bare_pyfunc_ms_p50": round(bare_median, 4),
        "wrapper_ms_p50": round(wrapper_median, 4),
        "added_ms_p50": round(wrapper_median - bare_median, 4),
        "added_percent_p50": round(100.0 * (wrapper_median - bare_median) / bare_median, 1),
        "bare_pyfunc_ms_p99": round(percentile(bare_ms, 99), 4),
        "wrapper_ms_p99": round(percentile(wrapper_ms, 99), 4),
    }


class BreaksMidStream:
    """The champion's estimator, until `broken` is set: then every call raises."""

    def __init__(self, estimator):
        self.estimator, self.broken, self.calls_while_broken = estimator, False, 0
        self.classes_ = estimator.classes_

    def predict_proba(self, X):
        if self.broken:
            self.calls_while_broken += 1
            raise RuntimeError("model server lost its GPU")
        return self.estimator.predict_proba(X)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def breaking_primary(registry: ModelRegistry, requests: int, break_at: int, cooldown: float) -> dict:
    policy = FallbackPolicy(failure_threshold=5, failure_window_seconds=60, cooldown_seconds=cooldown, refresh_seconds=3600)
    router = FallbackRouter(registry, policy, timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    flaky = BreaksMidStream(router.primary.estimator)
    router.primary = ServedVersion(router.primary.version, router.primary.features, flaky)
    batch = make_batch(10, seed=7)[FEATURES]
    failed_to_client = reached_after_open = bare_failed = 0
    opened = False
    for number in range(requests):
        flaky.broken = number >= break_at
        calls_before = flaky.calls_while_broken
        try:
            out = router.predict(batch)
            failed_to_client += int((out["answered_by"] == "none").any())
        except Exception:
            failed_to_client += 1
        if opened:
            reached_after_open += flaky.calls_while_broken - calls_before
        opened = opened or router.breaker.opened_count > 0
        try:  # the peer: the bare primary, no fallback
            flaky.predict(batch.to_numpy())
        except RuntimeError:
            bare_failed += 1
        time.sleep(0.001)
    router.close()
    return {
        "requests": requests,
        "primary_breaks_at_request": break_at,
        "cooldown_seconds": cooldown,
        "wrapper_requests_failed_to_client": failed_to_client,
        "wrapper_calls_reaching_broken_primary_before_open": policy.failure_threshold,
        "wrapper_calls_reaching_broken_primary_after_open": reached_after_open,
        "breaker_opened_times": router.breaker.opened_count,
        "bare_requests_failed_to_client": bare_failed,
    }


def load_pyfunc(registry: ModelRegistry, name: str, version: str, folder: str):
    location = registry.client.get_model_version_download_uri(name, version)
    return mlflow.pyfunc.load_model(mlflow.artifacts.download_artifacts(location, dst_path=folder, tracking_uri=registry.client.tracking_uri))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-calls", type=int, default=2_000)
    parser.add_argument("--large-calls", type=int, default=40)
    args = parser.parse_args()
    results: dict = {"overhead": []}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CRISIS_HOME"] = folder
        uri = f"sqlite:///{folder}/mlflow.db"
        champions = {
            "sgd": SGDClassifier(loss="log_loss", random_state=0),  # the training policy's default: a linear model, ~0.3 ms for 10,000 rows
            "mlp": MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0),  # the policy's other estimator
        }
        for kind, estimator in champions.items():
            registry = ModelRegistry(model_name=f"bench-{kind}", tracking_uri=uri).use(timeline=Timeline(sink=ListSink()))
            champion = register(registry, estimator, FEATURES, seed=1)
            fallback = register(registry, LogisticRegression(), FEATURES[:3], seed=2)
            registry.promote(champion, "bench")
            registry.move_alias(registry.fallback_alias, fallback, "bench")
            bare = load_pyfunc(registry, registry.model_name, champion, f"{folder}/bare-{kind}")
            served = register_serving_model(registry, FallbackPolicy(), log=False)
            wrapper = load_pyfunc(registry, serving_model_name(registry.model_name), served.version, f"{folder}/wrapper-{kind}")
            results["overhead"] += [
                overhead(kind, bare, wrapper, make_batch(1, seed=3), args.single_calls),
                overhead(kind, bare, wrapper, make_batch(10_000, seed=4), args.large_calls),
            ]
            wrapper.unwrap_python_model().router.close()
        results["breaking_primary"] = breaking_primary(registry, requests=3_000, break_at=1_000, cooldown=0.5)
        results["inference_log"] = log_on_request_path(registry, folder, args.single_calls)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def log_on_request_path(registry: ModelRegistry, folder: str, calls: int) -> dict:
    """One-row requests through the router with the log off, on (SQLite) and with its database down."""
    Path(folder, "not-a-folder").write_text("the database's folder is a file: every connection fails")
    logs = {
        "log off": None,
        "log on (SQLite)": InferenceLog(url=f"sqlite:///{folder}/inference.db", spool_path=f"{folder}/spool-up"),
        "database down (spool)": InferenceLog(
            url=f"sqlite:///{folder}/not-a-folder/inference.db", spool_path=f"{folder}/spool-down", retry_seconds=3600
        ),
    }
    routers = {}
    for case, log in logs.items():
        routers[case] = FallbackRouter(
            registry, FallbackPolicy(), log=open_inference_log(log) if log else None, timeline=Timeline(sink=ListSink()), close_log=True
        )
        routers[case].start(refresh_in_background=False)
    frame = make_batch(1, seed=5)[FEATURES]
    times: dict[str, list[float]] = {case: [] for case in routers}
    for _ in range(calls):
        for case, router in routers.items():  # interleaved: the machine's noise falls on every case alike
            times[case].append(timed(router.predict, frame))
    figures = {}
    for case, router in routers.items():
        stats = None
        if router.log is not None:
            router.log.flush(30)
            stats = router.log.stats
        router.close()
        figures[case] = {
            "ms_p50": round(statistics.median(times[case]), 4),
            "ms_p99": round(percentile(times[case], 99), 4),
            "records_written": stats.written if stats else 0,
            "records_spooled": stats.spooled if stats else 0,
            "records_dropped": stats.dropped if stats else 0,
        }
    base = figures["log off"]
    for case in figures:
        figures[case]["added_ms_p50"] = round(figures[case]["ms_p50"] - base["ms_p50"], 4)
        figures[case]["added_ms_p99"] = round(figures[case]["ms_p99"] - base["ms_p99"], 4)
    return figures


if __name__ == "__main__":
    main()

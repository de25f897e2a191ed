"""The router against a real MLflow registry: it serves @champion with @fallback
behind it, and follows an alias move with requests in flight, none failing."""

import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.core.errors import ServingError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import TagKey
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.serving.router import FallbackRouter
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.promotion import log_candidate
from tests.helpers import FEATURES, register

FALLBACK_FEATURES = FEATURES[:3]


def register_fallback(registry: ModelRegistry) -> str:
    batch = make_batch(2_000, seed=9)
    model = LogisticRegression().fit(batch[FALLBACK_FEATURES].to_numpy(), batch["label"].to_numpy())
    run = registry.client.create_run(training_experiment(registry.client, registry.model_name))
    info = log_candidate(model, batch[FALLBACK_FEATURES].to_numpy(), run.info.run_id, registry.client)
    version = registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(FALLBACK_FEATURES)}).version
    registry.move_alias(registry.fallback_alias, version, "the simple model")
    return version


@pytest.fixture(scope="module")
def served_registry(mlflow_tracking_uri):
    registry = ModelRegistry(model_name="served").use(timeline=Timeline(sink=ListSink()))
    first, second = register(registry, False, seed=1), register(registry, False, seed=2)
    fallback = register_fallback(registry)
    registry.promote(first, "first model")
    return registry, first, second, fallback


def test_no_champion_is_a_one_line_serving_error(mlflow_tracking_uri):
    registry = ModelRegistry(model_name="never-trained").use(timeline=Timeline(sink=ListSink()))
    with pytest.raises(ServingError, match="has no @champion"):
        FallbackRouter(registry).start(refresh_in_background=False)


def test_serves_the_champion_with_the_fallback_behind_it(served_registry):
    registry, first, _second, fallback = served_registry
    served = FallbackRouter(registry, FallbackPolicy(confidence_threshold=0.9), timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    try:
        batch = make_batch(400, seed=50)
        out = served.predict(batch)
    finally:
        served.close()
    assert set(out["answered_by"]) == {"primary", "fallback"}
    assert set(out.loc[out["answered_by"] == "primary", "version"]) == {first}
    assert set(out.loc[out["answered_by"] == "fallback", "version"]) == {fallback}
    assert (out.loc[out["answered_by"] == "primary", "confidence"] >= 0.9).all()
    accuracy = float(np.mean(out["prediction"].to_numpy(dtype=int) == batch["label"].to_numpy()))
    assert accuracy > 0.8, accuracy


def test_an_alias_move_is_swapped_in_with_requests_in_flight(served_registry):
    registry, first, second, _fallback = served_registry
    served = FallbackRouter(registry, FallbackPolicy(refresh_seconds=0.05), timeline=Timeline(sink=ListSink())).start()
    batch = make_batch(200, seed=51)
    failures, versions, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                out = served.predict(batch)
                if (out["answered_by"] == "none").any():
                    failures.append(out["error"].dropna().iloc[0])
                versions.append(frozenset(out.loc[out["answered_by"] == "primary", "version"]))
            except Exception as error:
                failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        while len(versions) < 10:
            threading.Event().wait(0.01)
        registry.promote(second, "a retrain")
        deadline = threading.Event()
        for _ in range(400):  # the background refresh picks the move up within its interval
            if versions and versions[-1] == {second}:
                break
            deadline.wait(0.025)
        stop.set()
        for thread in threads:
            thread.join()
        after = served.predict(batch)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        served.close()
        registry.promote(first, "back for the other tests")
    assert set(after.loc[after["answered_by"] == "primary", "version"]) == {second}
    assert failures == []
    # Requests finish out of order across threads: one that started before the swap may end after
    # one that started after it. So: the first answers came from the old champion, the new one
    # answered too, and a request made now gets the new one.
    assert versions[0] == {first} and {second} in versions, versions[-3:]
    assert served.swaps == 1


def test_events_leave_with_the_prefect_settings_of_whoever_started_the_router(served_registry):
    """A `crisis` command points Prefect at its stack through context settings, which a new thread does not
    inherit: the router's event thread must still send to that API, not to a temporary server of its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_crisis.core.vocabulary import CrisisEvent

    registry = served_registry[0]
    seen: list = []
    router = FallbackRouter(registry, timeline=Timeline(sink=lambda event: seen.append(PREFECT_API_URL.value())))
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        router.start(refresh_in_background=False)
    router._events.put((CrisisEvent.FALLBACK_ENGAGED, {"reason": "test"}, None))
    router.close()
    assert seen == ["http://127.0.0.1:1/api"]


def test_the_router_routes_on_the_routing_fitted_for_the_version_it_serves(mlflow_tracking_uri):
    """routing.json of the champion's run turns confidence routing on for that version only; a version without one
    routes nothing on confidence (the reason logged once), and invalid input still goes to the fallback."""
    from prefect_crisis.tasks.serving.confidence_routing import ConfidenceMap, RoutingCalibration
    from prefect_crisis.tasks.serving.routing_artifact import log_routing

    registry = ModelRegistry(model_name="routed").use(timeline=Timeline(sink=ListSink()))
    routed, plain = register(registry, False, seed=1), register(registry, False, seed=2)
    fallback = register_fallback(registry)
    routing = RoutingCalibration(ConfidenceMap("probability", "none"), 0.9, "on: test threshold", 600, 0.9, 0.8, 0.92, fallback_version=fallback)
    log_routing(registry.client, registry.version(routed).run_id, routing)
    registry.promote(routed, "calibrated")
    served = FallbackRouter(registry, FallbackPolicy(), timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    try:
        batch = make_batch(400, seed=52)
        assert served.primary.routing == routing
        out = served.predict(batch)
        assert set(out["answered_by"]) == {"primary", "fallback"}
        assert (out.loc[out["answered_by"] == "primary", "confidence"] >= 0.9).all()
        assert (out.loc[out["answered_by"] == "fallback", "reason"] == "primary confidence under 0.9 (calibrated)").all()

        registry.promote(plain, "no routing fitted")
        assert served.refresh()
        assert served.primary.routing is None and "no routing.json in its run" in served.primary.routing_note
        batch.loc[3, FEATURES[10]] = np.nan  # a column only the primary reads
        out = served.predict(batch)
        assert out["answered_by"][3] == "fallback" and out["reason"][3] == f"primary input invalid: {FEATURES[10]!r} is missing"
        assert (out["answered_by"].drop(index=3) == "primary").all()
    finally:
        served.close()


def test_a_routing_logged_after_the_promotion_is_picked_up_by_the_next_refresh(mlflow_tracking_uri):
    """Training promotes a version before it fits that version's routing: serving may load it in between."""
    from prefect_crisis.tasks.serving.confidence_routing import ConfidenceMap, RoutingCalibration
    from prefect_crisis.tasks.serving.routing_artifact import log_routing

    registry = ModelRegistry(model_name="late-routing").use(timeline=Timeline(sink=ListSink()))
    version = register(registry, False, seed=3)
    registry.promote(version, "promoted before its routing is logged")
    served = FallbackRouter(registry, FallbackPolicy(), timeline=Timeline(sink=ListSink())).start(refresh_in_background=False)
    try:
        assert served.primary.routing is None and not served.refresh()
        routing = RoutingCalibration(ConfidenceMap("probability", "none"), None, "off: no gain", 600, 0.9, 0.8, 0.9)
        log_routing(registry.client, registry.version(version).run_id, routing)
        assert served.refresh() and served.primary.routing == routing
        assert "off: no gain" in served.routing_plan(served.primary, served.fallback).note
    finally:
        served.close()

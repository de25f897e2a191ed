"""Per-row routing, the breaker in front of the primary, failed rows, bad input and
the fallback events: the router on crafted probabilities (feature `p` is the
primary's probability of class 1) and an injected clock. The policy's threshold
is set explicitly where rows are routed on confidence: without one, and without a
fitted routing, serving routes none on confidence."""

import threading
import time

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.core.errors import ServingInputError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import BreakerState, CrisisEvent, Responder
from prefect_crisis.tasks.serving.inference_log import open_inference_log, read_window
from prefect_crisis.tasks.serving.router import FallbackRouter, ServedVersion, confidence_of


class Crafted:
    """Probability of class 1 is the row's `p`; counts its calls (to predict, which serving makes first); can be
    told to fail or hang."""

    classes_ = np.array([0, 1])

    def __init__(self, fail: Exception | None = None, hang: bool = False):
        self.fail, self.hang, self.calls = fail, hang, 0
        self.release = threading.Event()  # a hanging model answers once the test lets it go (no timer to wait out)

    def predict(self, X):
        self.calls += 1
        if self.hang:
            self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.classes_[(X[:, 0] > 0.5).astype(int)]

    def predict_proba(self, X):
        p = np.where(X[:, 0] > 1, np.nan, X[:, 0])  # p > 1 stands for blown-up weights
        return np.c_[1 - p, p]


class Constant:
    classes_ = np.array([0, 1])

    def __init__(self, p1=0.8, fail=None):
        self.p1, self.fail, self.calls = p1, fail, 0

    def predict(self, X):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return np.full(len(X), int(self.p1 > 0.5))

    def predict_proba(self, X):
        return np.tile([1 - self.p1, self.p1], (len(X), 1))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def router(primary=None, fallback=None, clock=None, sink=None, **policy) -> FallbackRouter:
    served = FallbackRouter(
        ModelRegistry(model_name="crafted"),
        FallbackPolicy(**policy),
        timeline=Timeline(sink=sink if sink is not None else ListSink()),
        clock=clock or Clock(),
    )
    served.primary = ServedVersion("7", ("p", "x"), primary or Crafted())
    served.fallback = None if fallback is False else ServedVersion("2", ("x",), fallback or Constant())
    return served


def rows(*probabilities, x=1.0):
    return pd.DataFrame({"p": list(probabilities), "x": x})


def test_low_confidence_rows_are_answered_by_the_fallback_row_by_row():
    served = router(confidence_threshold=0.6)
    out = served.predict(rows(0.95, 0.55, 0.05, 0.5, 0.6))
    assert out["answered_by"].tolist() == ["primary", "fallback", "primary", "fallback", "primary"]
    assert out["version"].tolist() == ["7", "2", "7", "2", "7"]
    assert out["prediction"].tolist() == [1, 1, 0, 1, 1]
    assert out["confidence"].round(2).tolist() == [0.95, 0.8, 0.95, 0.8, 0.6]
    assert out["error"].isna().all()
    assert out["row_id"].tolist() == [0, 1, 2, 3, 4] and out["request_id"].nunique() == 1


def test_margin_measure_and_the_id_column():
    served = router(confidence_threshold=0.3, confidence_measure="margin", id_column="key")
    frame = rows(0.9, 0.6)
    frame["key"] = ["a-1", "a-2"]
    out = served.predict(frame)
    assert out["answered_by"].tolist() == ["primary", "fallback"]  # margins 0.8 and 0.2
    assert out["row_id"].tolist() == ["a-1", "a-2"]


def test_confidence_of_marks_non_finite_rows():
    assert np.isnan(confidence_of(np.array([[np.nan, 0.5], [0.3, 0.7]]))).tolist() == [True, False]


def test_an_exception_in_the_primary_sends_the_batch_to_the_fallback():
    served = router(primary=Crafted(fail=RuntimeError("CUDA out of memory")))
    out = served.predict(rows(0.99, 0.99, 0.99))
    assert (out["answered_by"] == Responder.FALLBACK.value).all() and (out["version"] == "2").all()
    assert out["prediction"].tolist() == [1, 1, 1]


def test_a_slow_primary_times_out_and_the_fallback_answers_in_time():
    primary = Crafted(hang=True)
    served = router(primary=primary, primary_timeout_seconds=0.05)
    started = time.perf_counter()
    out = served.predict(rows(0.9))
    assert time.perf_counter() - started < 0.5  # the router's own timeout (a real thread pool's) is what is measured
    assert out["answered_by"].tolist() == ["fallback"]
    primary.release.set()
    served.close()


def test_the_breaker_stops_calling_a_broken_primary_and_heals():
    clock, sink = Clock(), ListSink()
    primary = Crafted(fail=RuntimeError("model file corrupt"))
    served = router(primary=primary, clock=clock, sink=sink, failure_threshold=3, cooldown_seconds=30, min_share_rows=50)
    served.start(refresh_in_background=False)
    for _ in range(10):
        assert (served.predict(rows(0.9))["answered_by"] == "fallback").all()
    assert primary.calls == 3, "after the breaker opened, the broken primary must not be called again"
    assert served.breaker.state is BreakerState.OPEN
    primary.fail = None  # repaired
    clock.now = 31
    out = served.predict(rows(0.9))  # the trial call
    assert out["answered_by"].tolist() == ["primary"] and served.breaker.state is BreakerState.CLOSED
    for _ in range(30):  # the routed share falls as the primary answers again
        served.predict(rows(0.9, 0.9, 0.9, 0.9, 0.9))
    served.close()
    events = [event.event for event in sink]
    assert events == [CrisisEvent.FALLBACK_ENGAGED, CrisisEvent.FALLBACK_RELEASED]
    assert sink[0].payload["breaker_state"] == "open" and sink[0].payload["fallback_version"] == "2"
    assert sink[1].payload["routed_share"] < 0.2


def test_a_high_routed_share_engages_the_fallback_once():
    sink = ListSink()
    served = router(sink=sink, confidence_threshold=0.9, min_share_rows=50, engage_share=0.5)
    served.start(refresh_in_background=False)
    for _ in range(20):
        served.predict(rows(*([0.7] * 10)))  # every row under the threshold
    served.close()
    assert [event.event for event in sink] == [CrisisEvent.FALLBACK_ENGAGED]
    assert sink[0].payload["breaker_state"] == "closed" and sink[0].payload["rows"] >= 50


def test_a_failing_fallback_marks_rows_failed_with_the_reason():
    served = router(primary=Crafted(fail=RuntimeError("primary down")), fallback=Constant(fail=ValueError("fallback down")))
    out = served.predict(rows(0.9, 0.9))
    assert (out["answered_by"] == Responder.NONE.value).all()
    assert out["prediction"].isna().all() and out["version"].isna().all()
    assert all("primary down" in error and "fallback down" in error for error in out["error"])


def test_without_a_fallback_low_confidence_keeps_the_primary_but_a_failure_fails_the_rows():
    out = router(fallback=False).predict(rows(0.55))
    assert out["answered_by"].tolist() == ["primary"] and out["prediction"].tolist() == [1]
    out = router(primary=Crafted(fail=RuntimeError("down")), fallback=False).predict(rows(0.9))
    assert out["answered_by"].tolist() == ["none"] and "no fallback version" in out["error"][0]
    out = router(fallback=False).predict(rows(2.0, 0.9))  # blown-up weights: probabilities not finite
    assert out["answered_by"].tolist() == ["none", "primary"] and "non-finite" in out["error"][0]
    assert out["prediction"].tolist()[0] is None


def test_a_row_with_a_missing_value_goes_to_the_model_that_can_read_it_and_does_not_charge_the_breaker():
    served = router(failure_threshold=1)  # the primary reads p and x, the fallback x
    out = served.predict(pd.DataFrame({"p": [0.9, np.nan, 0.1, 0.9], "x": [1.0, 1.0, 1.0, np.nan]}))
    assert out["answered_by"].tolist() == ["primary", "fallback", "primary", "none"]
    assert out["reason"][1] == "primary input invalid: 'p' is missing" and out["error"][1] is None
    assert out["error"][3] == "primary input invalid: 'x' is missing; fallback input invalid: 'x' is missing"
    assert served.breaker.state is BreakerState.CLOSED


def test_text_in_a_numeric_column_fails_its_row_only():
    out = router().predict(pd.DataFrame({"p": [0.9, 0.9], "x": ["abc", 1.0]}))
    assert out["answered_by"].tolist() == ["none", "primary"]
    assert "'x' is not a number" in out["error"][0] and "\n" not in out["error"][0]


@pytest.mark.parametrize(
    "frame, words",
    [
        (pd.DataFrame({"p": [0.9]}), "lacks column(s) x"),
        ("rows as one string", "the input is not a table"),
    ],
)
def test_bad_input_is_one_line_and_the_router_keeps_serving(frame, words):
    served = router()
    with pytest.raises(ServingInputError) as raised:
        served.predict(frame)
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert served.predict(rows(0.9))["answered_by"].tolist() == ["primary"]


def test_numbers_sent_as_text_are_accepted():
    out = router().predict(pd.DataFrame({"p": ["0.9"], "x": ["1"]}))
    assert out["answered_by"].tolist() == ["primary"] and out["prediction"].tolist() == [1]


def test_concurrent_requests_all_get_answers():
    served = router(confidence_threshold=0.6)
    failures, answered = [], []

    def client():
        for _ in range(50):
            try:
                answered.append(len(served.predict(rows(0.9, 0.5))))
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    served.close()
    assert failures == [] and sum(answered) == 400


def test_every_row_and_every_refused_request_reaches_the_inference_log(tmp_path):
    from prefect_crisis.blocks import InferenceLog

    log = InferenceLog(url=f"sqlite:///{tmp_path / 'inference.db'}", spool_path=str(tmp_path / "spool"))
    served = router(primary=Crafted(), fallback=Constant(p1=0.3), confidence_threshold=0.6, id_column="key")
    served.log = open_inference_log(log)
    frame = rows(0.95, 0.55, 2.0)
    frame["key"] = ["k1", "k2", "k3"]
    answer = served.predict(frame)
    with pytest.raises(ServingInputError):
        served.predict(pd.DataFrame({"p": [0.9]}))
    assert served.log.flush(10)
    served.log.close()
    logged = read_window(log, "crafted", labelled_only=False).set_index("row_id")
    assert served.log.stats.written == 4 and served.log.stats.dropped == 0
    assert logged.loc["k1", "answered_by"] == "primary" and logged.loc["k1", "version"] == "7"
    assert logged.loc["k2", "answered_by"] == "fallback" and logged.loc["k2", "version"] == "2"
    assert logged.loc["k2", "confidence"] == pytest.approx(0.7)
    assert logged.loc["k3", "answered_by"] == "fallback"  # non-finite primary probabilities: routed
    assert logged.loc["k2", "reason"] == answer["reason"][1] == "primary confidence under 0.6"  # the routing reason, per row
    assert logged.loc["k3", "reason"] == answer["reason"][2] and answer["reason"][2].startswith("primary gave non-finite")
    assert pd.isna(logged.loc["k1", "reason"])
    assert set(logged["request_id"]) >= {answer["request_id"][0]}
    refused = logged[logged["error"].fillna("").str.contains("lacks column")]
    assert len(refused) == 1 and refused["answered_by"].iloc[0] == "none"


def test_a_burst_of_serving_errors_emits_one_event_per_window():
    clock, sink = Clock(), ListSink()
    served = router(
        primary=Crafted(fail=RuntimeError("down")),
        fallback=Constant(fail=ValueError("down too")),
        clock=clock,
        sink=sink,
        error_burst_rows=10,
        error_burst_seconds=5,
        failure_threshold=1000,
    )
    served.start(refresh_in_background=False)
    for _ in range(4):
        served.predict(rows(0.9, 0.9, 0.9))  # 3 failed rows each: the 4th request makes 12 within 5 s
    clock.now = 2
    for _ in range(5):
        served.predict(rows(0.9, 0.9, 0.9))  # still inside the window: no second event
    clock.now = 8
    for _ in range(4):
        served.predict(rows(0.9, 0.9, 0.9))  # a new window's burst: a second event
    served.close()
    bursts = [event for event in sink if event.event is CrisisEvent.SERVING_ERRORS]
    assert len(bursts) == 2
    assert bursts[0].payload["errors"] == 12 and "down too" in bursts[0].payload["example"]


def test_scattered_errors_emit_nothing():
    clock, sink = Clock(), ListSink()
    served = router(clock=clock, sink=sink, error_burst_rows=5, error_burst_seconds=10)
    served.start(refresh_in_background=False)
    for step in range(20):
        clock.now = step * 5.0  # one refused request every 5 s: at most 2 in any 10 s
        with pytest.raises(ServingInputError):
            served.predict(pd.DataFrame({"p": [0.9]}))
    served.close()
    assert [event for event in sink if event.event is CrisisEvent.SERVING_ERRORS] == []

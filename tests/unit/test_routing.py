"""The routing calibration as a value (fit, JSON, storage in an MLflow run, the plan serving makes of it) and the
scoring server's strict JSON answers."""

from __future__ import annotations

import doctest
import importlib
import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression, SGDClassifier

from prefect_crisis.core.errors import ServingError
from prefect_crisis.tasks.serving.confidence_routing import (
    ConfidenceMap,
    RoutingCalibration,
    best_threshold,
    expected_calibration_error,
    fit_routing,
    plan_routing,
)
from prefect_crisis.tasks.serving.routing_artifact import load_routing, log_routing


@pytest.mark.parametrize("name", ["prefect_crisis.tasks.serving.confidence_routing", "prefect_crisis.deployments.serve_cli"])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def separable(rows: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    X = rng.standard_normal((rows, 4)) + y[:, None] * np.array([1.5, 1.0, 0.0, 0.0])
    return X, y


def test_a_calibration_survives_strict_json():
    X, y = separable()
    primary = LogisticRegression().fit(X[:300], y[:300])
    fallback = LogisticRegression().fit(X[:300, :1], y[:300])
    calibration = fit_routing(primary, fallback, X[300:], X[300:, :1], y[300:], fallback_version="2")
    text = json.dumps(calibration.to_dict(), allow_nan=False)
    again = RoutingCalibration.from_dict(json.loads(text))
    assert again.threshold == calibration.threshold and again.reason == calibration.reason and again.fallback_version == "2"
    raw = np.linspace(0.5, 1.0, 11)
    assert np.allclose(again.confidence_map(raw), calibration.confidence_map(raw), atol=1e-6)
    assert again.rows == 300 and 0.0 <= again.ece <= 1.0


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"format": 99},
        {"format": 1, "holdout": {}},
        {
            "format": 1,
            "holdout": {"rows": 1, "primary_accuracy": 1, "served_accuracy": 1},
            "confidence_map": {"method": "magic", "score": "probability"},
        },
    ],
)
def test_an_unreadable_calibration_is_a_one_line_serving_error(broken):
    with pytest.raises(ServingError) as raised:
        RoutingCalibration.from_dict(broken)
    assert "routing.json" in str(raised.value) and "\n" not in str(raised.value)


def test_maps_are_monotone_and_finite():
    for confidence_map in (
        ConfidenceMap("decision", "isotonic", (0.0, 1.0, 3.0), (0.4, 0.7, 0.99)),
        ConfidenceMap("decision", "sigmoid", slope=2.0, intercept=-1.0),
    ):
        values = confidence_map(np.array([-5.0, 0.0, 0.5, 2.0, 1e6]))
        assert np.all(np.diff(values) >= 0) and np.all((values >= 0) & (values <= 1))


def test_the_best_threshold_routes_only_the_rows_the_fallback_wins():
    confidence = np.array([0.1, 0.2, 0.2, 0.5, 0.9])
    assert best_threshold(confidence, np.array([1, 1, 0, -1, 0])) == pytest.approx(0.35)  # cut between the ties and 0.5
    assert best_threshold(confidence, np.array([0, 0, 0, 0, 0])) is None
    assert best_threshold(confidence, np.array([1, 1, 1, 1, 1])) > 0.9  # the fallback is better everywhere: all of them


def test_expected_calibration_error_of_a_calibrated_and_an_overconfident_score():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20_000)
    right = rng.uniform(size=20_000) < confidence
    assert expected_calibration_error(confidence, right) < 0.02
    assert expected_calibration_error(np.ones(20_000), right) > 0.2


def test_no_fallback_no_gain_and_too_few_rows_keep_routing_off_with_a_reason():
    X, y = separable()
    primary = LogisticRegression().fit(X[:300], y[:300])
    assert fit_routing(primary, None, X[300:], None, y[300:]).reason == "off: no fallback to route to"
    weaker = LogisticRegression().fit(X[:300, 2:], y[:300])  # reads only noise columns
    off = fit_routing(primary, weaker, X[300:], X[300:, 2:], y[300:])
    assert off.threshold is None and "no gain beyond noise" in off.reason
    assert off.served_accuracy == off.primary_accuracy and off.fallback_accuracy < 0.6
    few = fit_routing(primary, weaker, X[300:315], X[300:315, 2:], y[300:315])
    assert few.threshold is None and "under min_rows" in few.reason


def test_a_primary_without_predict_proba_gets_a_calibrated_decision_margin():
    X, y = separable()
    hinge = SGDClassifier(loss="hinge", random_state=0).fit(X[:300], y[:300])
    fallback = LogisticRegression().fit(X[:300], y[:300])
    calibration = fit_routing(hinge, fallback, X[300:], X[300:], y[300:])
    assert calibration.confidence_map.score == "decision" and calibration.method in ("isotonic", "sigmoid")
    assert calibration.ece_raw is None  # no probability to compare with
    plan = plan_routing(hinge, calibration, version="5", explicit_threshold=0.8)
    assert plan.score == "decision" and plan.threshold == 0.8 and plan.confidence_map is calibration.confidence_map


def test_the_plan_follows_the_calibration_and_refuses_a_different_fallback():
    primary = LogisticRegression().fit(*separable())
    routing = RoutingCalibration(
        ConfidenceMap("probability", "isotonic", (0.5, 1.0), (0.6, 0.99)), 0.7, "on: test", 300, 0.9, 0.8, 0.93, fallback_version="2"
    )
    plan = plan_routing(primary, routing, version="4", fallback_version="2")
    assert plan.threshold == 0.7 and plan.confidence_map is routing.confidence_map and "on: test" in plan.note
    moved = plan_routing(primary, routing, version="4", fallback_version="3")
    assert moved.threshold is None and "fitted against fallback v2" in moved.note
    assert plan_routing(primary, routing, version="4", fallback_version="3", explicit_threshold=0.5).threshold == 0.5
    default = plan_routing(primary, None, version="4")
    assert default.threshold is None and default.score == "probability" and "confidence routing off" in default.note


def test_log_and_load_routing_through_the_client_it_is_given(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("routing", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    assert load_routing(client, run_id) is None and load_routing(client, None) is None
    routing = RoutingCalibration(ConfidenceMap("decision", "sigmoid", slope=1.5, intercept=0.2), None, "off: no gain", 300, 0.9, 0.7, 0.9)
    log_routing(client, run_id, routing)
    assert load_routing(client, run_id) == routing
    client.log_text(run_id, "{not json", "routing.json")
    with pytest.raises(ServingError, match="is not JSON"):
        load_routing(client, run_id)


def test_strict_json_bodies():
    from prefect_crisis.deployments.serve_cli import strict_body

    body = json.dumps({"predictions": [{"confidence": math.nan, "version": math.nan, "row_id": 0, "error": "x is NaN"}]}).encode()
    strict = json.loads(strict_body(200, body), parse_constant=lambda name: pytest.fail(f"bare {name} in the answer"))
    assert strict == {"predictions": [{"confidence": None, "version": None, "row_id": 0, "error": "x is NaN"}]}
    plain = b'{"predictions": [{"confidence": 0.5}]}'
    assert strict_body(200, plain) is plain  # already strict: passed through untouched
    mlflow_error = json.dumps(
        {
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "Failed to predict data '   f00\n0  1.0'. \nError: the input lacks column(s) f01: the served models read 2 columns (f00, f01)",
            "stack_trace": "Traceback (most recent call last):\n  File ...",
        }
    ).encode()
    error = json.loads(strict_body(400, mlflow_error))
    assert error == {"error_code": "INVALID_PARAMETER_VALUE", "message": "the input lacks column(s) f01: the served models read 2 columns (f00, f01)"}
    assert json.loads(strict_body(504, b"Request processing time exceeded limit")) == {
        "error_code": "INTERNAL_ERROR",
        "message": "Request processing time exceeded limit",
    }

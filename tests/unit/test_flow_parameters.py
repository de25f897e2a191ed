"""Flow parameters validate the way a deployment run validates them, so a
flow that runs in-process also runs from the UI or an automation."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError

from prefect_crisis.flows import continuous_training, crisis_demo, health_monitor, validate_batch


@pytest.mark.parametrize(
    ("flow", "parameters"),
    [
        (validate_batch, {"model_name": "m", "synthetic_condition": "drifted", "synthetic_rows": "100"}),
        (continuous_training, {"model_name": "m", "synthetic_condition": "clean", "resume": "false"}),
        (crisis_demo, {"rows": 100}),
    ],
)
def test_deployment_style_parameters_validate_and_coerce(flow, parameters):
    validated = flow.validate_parameters(parameters)
    assert validated["model_name" if "model_name" in parameters else "rows"] in ("m", 100)
    assert flow.parameters.model_dump()["properties"]


def test_unknown_synthetic_condition_is_refused_before_the_run():
    with pytest.raises(ParameterTypeError, match="synthetic_condition"):
        validate_batch.validate_parameters({"synthetic_condition": "haunted"})


def test_health_monitor_parameters_validate_as_an_automation_passes_them():
    validated = health_monitor.validate_parameters({"model_name": "churn", "model_names": ["a", "b"]})
    assert validated["model_name"] == "churn" and validated["model_names"] == ["a", "b"]
    assert set(health_monitor.parameters.model_dump()["properties"]) == {
        "model_names",
        "model_name",
        "monitoring_policy_block",
        "inference_log_block",
    }

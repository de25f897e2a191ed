"""prefect.yaml names module-path entrypoints that load from the installed package."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

import prefect_crisis.deployments as deployments_package

PREFECT_YAML = Path(deployments_package.__file__).parent / "prefect.yaml"


def test_every_deployment_entrypoint_is_a_module_path_that_loads_its_flow():
    config = yaml.safe_load(PREFECT_YAML.read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        entrypoint = deployment["entrypoint"]
        assert entrypoint.startswith("prefect_crisis.flows.") and ".py" not in entrypoint
        flow = load_flow_from_entrypoint(entrypoint)
        assert flow.name == deployment["name"]
        flow.validate_parameters(deployment.get("parameters", {}))

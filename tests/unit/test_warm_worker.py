"""The warm worker's plain parts: which environment a run may bind, what it records as its
infrastructure, the pool's job template, and that a started run is never 'killed'."""

from __future__ import annotations

import asyncio

import pytest
from prefect.exceptions import InfrastructureNotAvailable

from prefect_crisis.deployments.warm_worker import WARM_TYPE, WarmJobConfiguration, WarmWorker, bind_environment, infrastructure_id


def test_a_missing_variable_is_bound_once_and_prefect_per_run_variables_are_skipped():
    environ = {"PATH": "/usr/bin"}
    assert bind_environment({"CRISIS_HOME": "/srv/a", "PREFECT__FLOW_RUN_ID": "123", "UNSET": None}, environ) is None
    assert environ == {"PATH": "/usr/bin", "CRISIS_HOME": "/srv/a"}
    assert bind_environment({"PREFECT__FLOW_RUN_ID": "456"}, environ) is None and "PREFECT__FLOW_RUN_ID" not in environ


def test_another_value_is_refused_and_nothing_of_that_run_is_applied():
    environ = {"CRISIS_HOME": "/srv/a"}
    refused = bind_environment({"EXTRA": "1", "CRISIS_HOME": "/srv/b"}, environ)
    assert refused is not None and "CRISIS_HOME is /srv/b" in refused and "/srv/a" in refused
    assert environ == {"CRISIS_HOME": "/srv/a"}  # EXTRA was not applied either


def test_homes_compare_as_paths(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    environ = {"CRISIS_HOME": str(tmp_path / "real")}
    assert bind_environment({"CRISIS_HOME": str(tmp_path / "link")}, environ) is None
    assert bind_environment({"MLFLOW_TRACKING_URI": "sqlite:///a"}, {"MLFLOW_TRACKING_URI": "sqlite:///b"}) is not None


def test_the_pool_template_and_the_infrastructure_id():
    template = WarmWorker.get_default_base_job_template()
    assert WarmWorker.type == WARM_TYPE == "crisis-warm"
    assert {"env", "labels", "name"} <= set(template["variables"]["properties"])
    assert infrastructure_id().startswith("crisis-warm:") and infrastructure_id().split(":")[-1].isdigit()


def test_killing_a_run_is_refused_not_the_worker_process():
    worker = WarmWorker(work_pool_name="unused", create_pool_if_not_found=False)
    with pytest.raises(InfrastructureNotAvailable, match="ends on its own"):
        asyncio.run(worker.kill_infrastructure(infrastructure_id(), WarmJobConfiguration()))

"""Docstring examples are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "prefect_crisis.tasks.serving.breaker",
    "prefect_crisis.tasks.response.diagnostics",
    "prefect_crisis.tasks.serving.fallback_model",
    "prefect_crisis.tasks.validation.drift",
    "prefect_crisis.tasks.monitoring.health_rules",
    "prefect_crisis.tasks.monitoring.health_plot",
    "prefect_crisis.tasks.monitoring.dashboard",
    "prefect_crisis.tasks.monitoring.dashboard_view",
    "prefect_crisis.tasks.monitoring.sweep",
    "prefect_crisis.tasks.monitoring.windows",
    "prefect_crisis.blocks.monitoring_policy",
    "prefect_crisis.core.paths",
    "prefect_crisis.core.uris",
    "prefect_crisis.tasks.training.gate",
    "prefect_crisis.tasks.response.rollback",
    "prefect_crisis.tasks.response.rules",
    "prefect_crisis.tasks.response.candidates",
    "prefect_crisis.tasks.response.recovery",
    "prefect_crisis.tasks.serving.row_features",
    "prefect_crisis.tasks.serving.answers",
    "prefect_crisis.tasks.serving.served",
    "prefect_crisis.tasks.serving.row_routing",
    "prefect_crisis.tasks.training.loop",
    "prefect_crisis.tasks.training.holdout",
    "prefect_crisis.tasks.training.data",
    "prefect_crisis.tasks.training.stopping",
    "prefect_crisis.tasks.training.resume",
    "prefect_crisis.tasks.drills.synthetic",
    "prefect_crisis.tasks.validation.checks",
    "prefect_crisis.tasks.validation.inputs",
    "prefect_crisis.tasks.validation.labels",
    "prefect_crisis.core.contract_spec",
    "prefect_crisis.core.contract_inference",
    "prefect_crisis.tasks.drills.catalogue",
    "prefect_crisis.tasks.drills.end_state",
    "prefect_crisis.tasks.drills.faults",
    "prefect_crisis.tasks.drills.report",
    "prefect_crisis.tasks.drills.scenario",
    "prefect_crisis.core.vocabulary",
    "prefect_crisis.deployments.automations",
    "prefect_crisis.blocks.registry",
    "prefect_crisis.blocks.registry_audit",
    "prefect_crisis.blocks.store_errors",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0

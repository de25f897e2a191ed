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
    "prefect_crisis.tasks.monitoring.sweep",
    "prefect_crisis.blocks.monitoring_policy",
    "prefect_crisis.core.paths",
    "prefect_crisis.core.uris",
    "prefect_crisis.tasks.training.promotion",
    "prefect_crisis.tasks.response.rollback",
    "prefect_crisis.tasks.serving.router",
    "prefect_crisis.tasks.training.loop",
    "prefect_crisis.tasks.drills.synthetic",
    "prefect_crisis.tasks.validation.checks",
    "prefect_crisis.tasks.drills.injections",
    "prefect_crisis.flows.drill",
    "prefect_crisis.core.vocabulary",
    "prefect_crisis.deployments.automations",
    "prefect_crisis.blocks.registry",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0

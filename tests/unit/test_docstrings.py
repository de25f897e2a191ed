"""Docstring examples are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "prefect_crisis.tasks.breaker",
    "prefect_crisis.tasks.diagnostics",
    "prefect_crisis.tasks.fallback_model",
    "prefect_crisis.tasks.drift",
    "prefect_crisis.tasks.health_rules",
    "prefect_crisis.tasks.health_plot",
    "prefect_crisis.tasks.dashboard",
    "prefect_crisis.tasks.monitoring",
    "prefect_crisis.blocks.monitoring_policy",
    "prefect_crisis.core.paths",
    "prefect_crisis.core.uris",
    "prefect_crisis.tasks.promotion",
    "prefect_crisis.tasks.rollback",
    "prefect_crisis.tasks.serving",
    "prefect_crisis.tasks.training",
    "prefect_crisis.tasks.synthetic",
    "prefect_crisis.tasks.validation",
    "prefect_crisis.tasks.drills",
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

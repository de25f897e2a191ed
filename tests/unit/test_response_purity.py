"""The response's domain part imports neither Prefect nor MLflow, not even through the project's own modules: each
submodule outside `ADAPTERS` is imported in a fresh interpreter and the modules it loaded are checked."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import prefect_crisis.tasks.response as response

DOMAIN = sorted(info.name for info in pkgutil.iter_modules(response.__path__) if info.name not in response.ADAPTERS)
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} & {'prefect', 'mlflow'})))
"""


def test_adapters_name_existing_submodules_and_the_domain_part_is_not_empty():
    submodules = {info.name for info in pkgutil.iter_modules(response.__path__)}
    assert response.ADAPTERS <= submodules
    assert {"rules", "candidates", "rollback", "recovery", "diagnostics"} <= set(DOMAIN)


@pytest.mark.parametrize("name", DOMAIN)
def test_a_domain_module_imports_neither_prefect_nor_mlflow(name):
    module = f"prefect_crisis.tasks.response.{name}"
    found = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True)
    assert json.loads(found.stdout.strip().splitlines()[-1]) == [], (
        f"{module} loads {found.stdout.strip()} (move the import to an adapter or under TYPE_CHECKING)"
    )


def test_every_export_resolves_where_the_package_says():
    for name, module in response._EXPORTS.items():
        assert hasattr(__import__(f"prefect_crisis.tasks.response.{module}", fromlist=[name]), name), (name, module)

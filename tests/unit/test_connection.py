"""A plain process finds the running stack only where that is safe; a deployment
made without CRISIS_HOME exported fails with one line, not in a folder named after a template."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefect_crisis.core.connection import connect_to_local_stack, recorded_api_url
from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home


def test_unrendered_crisis_home_template_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("CRISIS_HOME", "{{ $CRISIS_HOME }}")
    with pytest.raises(StackError, match="crisis deploy"):
        crisis_home()


def test_a_record_of_a_dead_server_is_ignored(tmp_path, monkeypatch):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "server.json").write_text(json.dumps({"pid": int(finished.stdout), "api_url": "http://127.0.0.1:9/api"}))
    assert recorded_api_url(tmp_path) is None


def test_nothing_changes_when_an_api_is_configured(tmp_path, monkeypatch):
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/api"}))
    monkeypatch.setenv("CRISIS_HOME", str(tmp_path))
    monkeypatch.delenv("CRISIS_NO_AUTOCONNECT", raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:8/api"}):
        assert connect_to_local_stack() is None


def test_a_recorded_server_that_does_not_answer_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/api"}))
    probe = subprocess.run(
        [sys.executable, "-c", "from prefect_crisis.core.connection import connect_to_local_stack; print(connect_to_local_stack())"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CRISIS_"))}, "CRISIS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "None", probe.stderr[-2000:]


IMPORT_PROBE = """
import json, logging, os, sys, types
import prefect, prefect.flows, mlflow, sklearn, pandas  # their own import-time effects are theirs, not ours
before_meta_path = list(sys.meta_path)
before_filters = {name: list(logging.getLogger(name).filters) for name in ("", "prefect", "mlflow")}
before_env = dict(os.environ)
import PACKAGE
found = {
    "module_type": type(sys.modules["PACKAGE"]) is types.ModuleType,
    "meta_path": sys.meta_path == before_meta_path,
    "filters": {name: list(logging.getLogger(name).filters) == kept for name, kept in before_filters.items()},
    "env": dict(os.environ) == before_env,
}
import prefect_crisis.flows.response
print(json.dumps({
    **found,
    "flow": type(sys.modules["prefect_crisis.flows"].crisis_response).__name__,
    "api_url_set": bool(__import__("prefect").settings.get_current_settings().api.url),
}))
"""


@pytest.mark.parametrize("package", ["prefect_crisis.blocks", "prefect_crisis.flows"])
def test_importing_blocks_or_flows_changes_nothing_and_connects_to_nothing(tmp_path, package):
    """A recorded live stack (this process's pid stands for its server) is not connected to by an import:
    connecting is an explicit call. The import swaps no module class, installs no import hook or logging filter,
    and a flow module imported first never hides the flow of the package's name."""
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/api"}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CRISIS_"))}, "CRISIS_HOME": str(tmp_path)}
    probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE.replace("PACKAGE", package)], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found == {
        "module_type": True,
        "meta_path": True,
        "filters": {"": True, "prefect": True, "mlflow": True},
        "env": True,
        "flow": "Flow",
        "api_url_set": False,
    }


@pytest.mark.parametrize(
    "old, new",
    [
        ("continuous_training", "training"),
        ("crisis_response", "response"),
        ("emergency_stop", "emergency"),
        ("health_monitor", "monitoring"),
        ("validate_batch", "validation"),
    ],
)
def test_a_deployment_on_a_flows_old_module_path_still_loads_its_flow_with_a_deprecation_warning(old, new):
    from prefect.flows import load_flow_from_entrypoint

    probe = subprocess.run(
        [
            sys.executable,
            "-W",
            "always::DeprecationWarning",
            "-c",
            f"from prefect.flows import load_flow_from_entrypoint; import prefect_crisis.flows.{new} as new; "
            f"print(load_flow_from_entrypoint('prefect_crisis.flows.{old}:{old}') is new.{old})",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.strip() == "True", probe.stderr[-2000:]
    assert f"prefect_crisis.flows.{old} is deprecated" in probe.stderr and f"prefect_crisis.flows.{new}:{old}" in probe.stderr
    assert load_flow_from_entrypoint(f"prefect_crisis.flows.{new}:{old}").name  # the new entrypoint, as deploy writes it

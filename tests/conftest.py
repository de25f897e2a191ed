"""Shared fixtures: one real Prefect server for the session (Prefect's test
harness runs it as a subprocess) and a temporary MLflow SQLite store per module."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The test process never attaches itself to a developer's running `crisis up` in the working
# folder; tests that check the connection start their own processes without this variable.
os.environ.setdefault("CRISIS_NO_AUTOCONNECT", "1")
# Persist events every half second (default 5 s), so read-backs are quick.
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.5")


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server with a temporary SQLite database, for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def mlflow_tracking_uri(tmp_path_factory, monkeypatch_module):
    """A temporary SQLite-backed MLflow tracking store and registry for one test module."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def crisis_home(tmp_path, monkeypatch):
    """A private `.crisis` folder for one test."""
    home = tmp_path / ".crisis"
    monkeypatch.setenv("CRISIS_HOME", str(home))
    monkeypatch.delenv("CRISIS_STORAGE", raising=False)
    return home


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` (`make test`) the end-to-end tests run one after another in one worker
    (they start servers on ports and share the MLflow UI's default port), except the docs' blocks: that run (about
    7 minutes, one stack of its own on free ports) goes to the other worker, beside the unit and flow tests, which
    would otherwise finish minutes before the end-to-end worker does. It runs first: xdist's worker reads the groups
    in its own hook of the same name (suffixing the node ids), and a group added after it would be ignored."""
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            alone = item.nodeid.startswith("tests/e2e/test_readme.py")
            item.add_marker(pytest.mark.xdist_group("e2e-docs" if alone else "e2e"))

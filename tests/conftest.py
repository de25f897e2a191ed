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


# `make test` runs `pytest -n 3`: three workers on the 2-core machine, since most of an end-to-end test's time is spent
# waiting for servers, runs and events. A test goes to a worker with the rest of its unit of work: its module (so a
# module's fixtures start once), or for the end-to-end tests one of three groups, each run one test after another in one
# worker: the stack commands (`crisis up`, serve, the faults), the closed loop (the ladder on a live stack), and the docs'
# blocks (one long test). The groups come first in collection order and are handed out first, so the longest work
# starts at once; the modules fill in around them.
E2E_GROUPS = {
    "tests/e2e/test_readme.py": "e2e-docs",
    "tests/e2e/test_closed_loop.py": "e2e-loop",
    "tests/e2e/test_cancel_deployed_run.py": "e2e-loop",
    "tests/e2e/test_worker_deploy.py": "e2e-loop",
}


def unit_of_work(nodeid: str) -> str:
    """The scheduling unit of a test: its end-to-end group, else its module.

    Example:
        >>> unit_of_work("tests/e2e/test_stack.py::test_up_status_demo_down"), unit_of_work("tests/unit/test_rules.py::test_x[1]")
        ('e2e-stack', 'tests/unit/test_rules.py')
    """
    module = nodeid.split("::", 1)[0]
    if module.startswith("tests/e2e/"):
        return E2E_GROUPS.get(module, "e2e-stack")
    return module


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduler over `unit_of_work`, in collection order (the end-to-end groups first)."""
    if config.getvalue("dist") == "each":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    config.option.loadscopereorder = False
    return UnitScheduling(config, log)

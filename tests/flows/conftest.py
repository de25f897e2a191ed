import pytest


@pytest.fixture(autouse=True)
def _server(prefect_server):
    """Every flow test runs against the session's real Prefect server."""

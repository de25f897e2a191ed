"""Defaults of the embedded stack, and precedence of a team's servers."""

from __future__ import annotations

import mlflow

from prefect_crisis.core.paths import default_storage, default_tracking_uri
from prefect_crisis.deployments.stack import server_environment


def test_embedded_defaults_live_under_the_crisis_home(crisis_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{crisis_home}/mlflow.db"
    assert default_storage() == str(crisis_home / "data")


def test_server_environment_keeps_state_local_and_analytics_off(crisis_home, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    environment = server_environment(crisis_home)
    assert environment["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert environment["PREFECT_HOME"] == str(crisis_home / "prefect")
    assert environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{crisis_home}/prefect.db"
    assert "PREFECT_API_URL" not in environment
    # the UI of a server on another port calls that server's API, not the default port's
    assert server_environment(crisis_home, port=4317)["PREFECT_UI_API_URL"] == "http://127.0.0.1:4317/api"


def test_a_configured_mlflow_store_wins_and_is_a_real_registry(mlflow_tracking_uri, crisis_home):
    assert default_tracking_uri() == mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri())
    client.create_registered_model("paths-test")
    assert [model.name for model in client.search_registered_models()] == ["paths-test"]

"""Credentials in tracking URIs never reach output or a block's plain fields (issue 8, item 15)."""

from __future__ import annotations

import doctest

import pytest
from pydantic import SecretStr

import prefect_crisis.core.uris as uris
from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.uris import mask_uri, split_password, with_password


def test_docstring_examples_run():
    assert doctest.testmod(uris).failed == 0


@pytest.mark.parametrize(
    ("uri", "secret"),
    [
        ("postgresql://ml:s3cret@db:5432/mlflow", "s3cret"),
        ("postgresql+psycopg2://ml:p@ss/w0rd@db/mlflow", "p@ss"),
        ("https://user:ghp_token123@mlflow.example.com/", "ghp_token123"),
        ("https://mlflow.example.com/?api_key=k3y&x=1", "k3y"),
        ("mysql://root:hunter2@localhost/mlflow?password=hunter2", "hunter2"),
    ],
)
def test_mask_uri_hides_the_secret_and_keeps_the_rest(uri, secret):
    masked = mask_uri(uri)
    assert secret not in masked
    assert "***" in masked
    assert masked.split("://")[0] == uri.split("://")[0]


@pytest.mark.parametrize("uri", ["sqlite:////tmp/crisis/mlflow.db", "http://127.0.0.1:4200/api", "https://token@host/", "databricks", ""])
def test_uris_without_a_password_are_left_as_they_are(uri):
    assert mask_uri(uri) == uri
    assert split_password(uri) == (uri, None)


def test_split_and_put_back_round_trip():
    uri = "postgresql://ml:p%40ss@db/mlflow"
    bare, password = split_password(uri)
    assert bare == "postgresql://ml@db/mlflow" and password == "p@ss"
    assert with_password(bare, password) == uri


def test_a_password_in_the_registry_uri_moves_to_a_secret_field():
    registry = ModelRegistry(model_name="churn", tracking_uri="postgresql://ml:s3cret@db/mlflow")
    assert registry.tracking_uri == "postgresql://ml@db/mlflow"
    assert isinstance(registry.tracking_password, SecretStr)
    assert "s3cret" not in repr(registry) and "s3cret" not in str(registry.model_dump())
    assert "s3cret" not in registry.display_tracking_uri
    # MLflow still gets the full URI
    assert registry.resolved_tracking_uri == "postgresql://ml:s3cret@db/mlflow"


def test_a_registry_with_uri_and_separate_password():
    registry = ModelRegistry(model_name="churn", tracking_uri="https://ci@mlflow.example.com", tracking_password=SecretStr("tok"))
    assert registry.resolved_tracking_uri == "https://ci:tok@mlflow.example.com"
    assert registry.display_tracking_uri == "https://ci:***@mlflow.example.com"


def test_a_saved_registry_block_keeps_the_password_secret(prefect_server):
    ModelRegistry(model_name="churn", tracking_uri="postgresql://ml:s3cret@db/mlflow").save("uri-secret-test", overwrite=True)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name("uri-secret-test", "crisis-model-registry", include_secrets=False)
    assert "s3cret" not in str(document.data)
    loaded = ModelRegistry.load("uri-secret-test")
    assert loaded.resolved_tracking_uri == "postgresql://ml:s3cret@db/mlflow"

"""MLflow's registry errors come out as one-line RegistryErrors that say what to do."""

from __future__ import annotations

import pytest

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.errors import RegistryError


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(model_name="churn", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def registered(registry) -> ModelRegistry:
    registry.ensure_registered_model()
    return registry


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_retire_of_a_version_that_does_not_exist(registered):
    with pytest.raises(RegistryError) as error:
        registered.retire("99", reason="bad")
    assert "no version 99" in one_line(error) and "registry.versions()" in one_line(error)


def test_retire_of_a_model_that_does_not_exist(registry):
    with pytest.raises(RegistryError) as error:
        registry.retire("1", reason="bad")
    assert "no registered model 'churn'" in one_line(error)


def test_version_of_a_model_that_does_not_exist_names_the_model(registry):
    with pytest.raises(RegistryError) as error:
        registry.version(1)
    assert "no registered model 'churn'" in one_line(error)


def test_promote_of_a_version_that_does_not_exist(registered):
    with pytest.raises(RegistryError) as error:
        registered.promote("7", reason="try")
    assert "no version 7" in one_line(error)
    assert registered.champion() is None


def test_set_tag_on_missing_version_leaves_no_audit(registered):
    with pytest.raises(RegistryError):
        registered.retire("3", reason="bad")
    assert registered.audit_trail() == []

"""Load the saved blocks a flow needs, with errors that say how to make them.
(References are read by `prefect_crisis.tasks.references`.)"""

from __future__ import annotations

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import ContractError, ContractErrorReason, RegistryError, TrainingError
from prefect_crisis.core.paths import validate_model_name


def load_contract(name: str) -> DataContract:
    """Load a saved DataContract block, with an error that says how to make one."""
    try:
        return DataContract.load(name)
    except ValueError as error:
        raise ContractError(
            ContractErrorReason.NOT_FOUND,
            f"no DataContract block named {name!r} on the Prefect server: save one with "
            f"DataContract(...).save({name!r}) or run `crisis demo` for the synthetic one",
        ) from error


def load_policy(name: str | None) -> TrainingPolicy:
    """The saved TrainingPolicy block `name`, or the defaults when no name is given."""
    if not name:
        return TrainingPolicy()
    try:
        return TrainingPolicy.load(name)
    except ValueError as error:
        raise TrainingError(
            f"no TrainingPolicy block named {name!r} on the Prefect server: save one with "
            f"TrainingPolicy(...).save({name!r}), or leave the policy out for the defaults"
        ) from error


def load_registry(name: str | None, model_name: str) -> ModelRegistry:
    """The saved ModelRegistry block `name`, or `model_name` on the default MLflow store."""
    if not name:
        return ModelRegistry(model_name=validate_model_name(model_name))
    try:
        registry = ModelRegistry.load(name)
    except ValueError as error:
        raise RegistryError(f"no ModelRegistry block named {name!r} on the Prefect server: save one, or leave it out") from error
    validate_model_name(registry.model_name)
    return registry

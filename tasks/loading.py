"""Load the saved blocks a flow needs, with errors that say how to make them,
and the reference batch drift is measured against."""

from __future__ import annotations

import pandas as pd

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import ContractError, ContractErrorReason, DataInputError, InputErrorReason, RegistryError, TrainingError
from prefect_crisis.core.paths import validate_model_name
from prefect_crisis.tasks.batches import load_frame


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


# Fewer reference rows than this give drift figures that mean nothing (an empty
# reference made every batch "PSI 0"): such a reference is refused, not used.
MIN_REFERENCE_ROWS = 30


def load_reference(uri: str) -> pd.DataFrame:
    """Read the reference batch drift is measured against; refuse an empty or tiny one."""
    reference = load_frame(uri)
    if len(reference) < MIN_REFERENCE_ROWS:
        raise DataInputError(
            InputErrorReason.TOO_FEW_ROWS,
            f"reference {uri!r} has {len(reference)} rows, drift needs at least {MIN_REFERENCE_ROWS}: "
            "point the contract's reference_uri at a larger clean batch",
        )
    return reference

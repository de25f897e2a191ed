"""Load the saved blocks a flow needs, with errors that say how to make them.
(References are read by `prefect_crisis.tasks.validation.references`.)"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from prefect.blocks.core import Block

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import ContractError, ContractErrorReason, RegistryError, TrainingError
from prefect_crisis.core.paths import validate_model_name

P = TypeVar("P", bound=Block)


def saved_block(kind: type[P], name: str) -> P:
    """The saved `kind` block `name`: Prefect's `Block.load` is sync-compatible (typed as maybe a coroutine), and from
    the sync code that calls this it returns the block itself.

    Raises:
        ValueError: no block document of that name (Prefect's).
    """
    return cast(P, kind.load(name))


def load_contract(name: str) -> DataContract:
    """Load a saved DataContract block, with an error that says how to make one."""
    try:
        return saved_block(DataContract, name)
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
        return saved_block(TrainingPolicy, name)
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
        registry = saved_block(ModelRegistry, name)
    except ValueError as error:
        raise RegistryError(f"no ModelRegistry block named {name!r} on the Prefect server: save one, or leave it out") from error
    validate_model_name(registry.model_name)
    return registry


# The field of the model's EscalationPolicy that may name a block of each kind.
NAMED_IN_ESCALATION = {"RollbackPolicy": "rollback_policy", "MonitoringPolicy": "monitoring_policy", "FallbackPolicy": "fallback_policy"}


def block_name_of(model: str) -> str:
    """The block name a model's own policies are saved under: Prefect block names are lowercase letters, digits and
    dashes, so the model's name is lowercased and every other character becomes a dash.

    Example:
        >>> block_name_of("Churn_v2")
        'churn-v2'
    """
    return re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-") or "model"


@dataclass(frozen=True)
class BoundPolicy(Generic[P]):
    """The policy that binds a model, and where it came from (a line `crisis status` shows)."""

    policy: P
    source: str
    block: str | None = None  # the saved block's name; None: the defaults


def _load(kind: type[P], name: str) -> P | None:
    try:
        return saved_block(kind, name)
    except ValueError:  # Prefect: no block document of that name
        return None


def bind_policy(kind: type[P], model: str, named: str | None = None) -> BoundPolicy[P]:
    """The `kind` policy of `model`, the most specific first: the block the model's EscalationPolicy (saved under its
    name) names, else the block saved under the model's name, else `named` (the deployment's default for every model),
    else the documented defaults; the source says which.

    Raises:
        PolicyError: a block named by the deployment or by the model's EscalationPolicy is not saved (a typo must not
            silently fall back to the defaults).
    """
    from prefect_crisis.blocks.escalation_policy import EscalationPolicy
    from prefect_crisis.core.errors import PolicyError

    label = kind.get_block_type_slug()
    own = block_name_of(model)
    field = NAMED_IN_ESCALATION.get(kind.__name__)
    escalation = _load(EscalationPolicy, own) if field else None
    if field and escalation is not None and (in_escalation := getattr(escalation, field)):
        policy = _load(kind, in_escalation)
        if policy is None:
            raise PolicyError(f"the escalation policy {own!r} names {label} {in_escalation!r}, which is not saved: save it, or empty {field}")
        return BoundPolicy(policy, f"block {in_escalation!r} (named in escalation policy {own!r})", in_escalation)
    policy = _load(kind, own)
    if policy is not None:
        return BoundPolicy(policy, f"block {own!r} (saved under the model's name)", own)
    if named:
        policy = _load(kind, named)
        if policy is None:
            raise PolicyError(f"no {label} block named {named!r} on the Prefect server: save it, or leave the name out for the defaults")
        return BoundPolicy(policy, f"block {named!r} (the deployment's default)", named)
    return BoundPolicy(kind(), f"defaults (no {label} block {own!r} saved)")

"""Prefect Block types of prefect-crisis: configuration that lives on the server.

Registered with `prefect block register -m prefect_crisis.blocks`.
"""

from prefect_crisis.blocks.contract import ColumnSpec, DataContract
from prefect_crisis.blocks.registry import AliasMove, ModelRegistry, VersionInfo
from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
from prefect_crisis.blocks.training_policy import TrainingPolicy

__all__ = [
    "AliasMove",
    "ColumnSpec",
    "DataContract",
    "MetricRule",
    "ModelRegistry",
    "RollbackPolicy",
    "TrainingPolicy",
    "VersionInfo",
]

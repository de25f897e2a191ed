"""Prefect Block types of prefect-crisis: configuration that lives on the server.

Registered with `prefect block register -m prefect_crisis.blocks`.

Importing the package has no side effects: a plain Python process that should use
the stack `crisis up` started calls `prefect_crisis.core.connection.connect()` first.
"""

from prefect_crisis.blocks.contract import ColumnSpec, DataContract
from prefect_crisis.blocks.escalation_policy import EscalationPolicy, LadderStep
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.monitoring_policy import HealthRule, MonitoringPolicy
from prefect_crisis.blocks.registry import AliasMove, ModelRegistry, VersionInfo
from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
from prefect_crisis.blocks.training_policy import TrainingPolicy

__all__ = [
    "AliasMove",
    "ColumnSpec",
    "DataContract",
    "EscalationPolicy",
    "FallbackPolicy",
    "HealthRule",
    "InferenceLog",
    "LadderStep",
    "MetricRule",
    "ModelRegistry",
    "MonitoringPolicy",
    "RollbackPolicy",
    "TrainingPolicy",
    "VersionInfo",
]

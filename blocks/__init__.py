"""Prefect Block types of prefect-crisis: configuration that lives on the server.

Registered with `prefect block register -m prefect_crisis.blocks`.

Importing the package points a plain Python process at the stack `crisis up`
started (found through `$CRISIS_HOME/server.json`), unless a Prefect API is
already configured: see `prefect_crisis.core.connection`.
"""

from prefect.logging import get_logger
from prefect.logging.configuration import ensure_logging_setup

from prefect_crisis.core.connection import connect_to_local_stack

from prefect_crisis.blocks.contract import ColumnSpec, DataContract
from prefect_crisis.blocks.escalation_policy import EscalationPolicy, LadderStep
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.monitoring_policy import HealthRule, MonitoringPolicy
from prefect_crisis.blocks.registry import AliasMove, ModelRegistry, VersionInfo
from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
from prefect_crisis.blocks.training_policy import TrainingPolicy

_connection = connect_to_local_stack()
if _connection is not None:
    ensure_logging_setup()  # Prefect configures its loggers lazily; the line must show in a plain script
    get_logger("crisis").info(
        "using the local stack: Prefect %s, state folder %s (found in %s)",
        _connection.api_url, _connection.home, _connection.home / "server.json",
    )

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

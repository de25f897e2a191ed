"""Flows composed of the crisis tasks.

Flow modules keep real (not postponed) annotations: Prefect builds the
parameter schema from them, and postponed ones fail to resolve in deployments.
"""

from prefect_crisis.flows.continuous_training import continuous_training
from prefect_crisis.flows.crisis_response import crisis_response
from prefect_crisis.flows.demo import crisis_demo
from prefect_crisis.flows.health_monitor import health_monitor
from prefect_crisis.flows.validate_batch import validate_batch
from prefect_crisis.tasks.run_logs import quiet_expected_errors

# A deployment imports its flow through this package: expected errors are one log line wherever a flow runs.
quiet_expected_errors()

__all__ = ["continuous_training", "crisis_demo", "crisis_response", "health_monitor", "validate_batch"]

"""Flows composed of the crisis tasks."""

from prefect_crisis.flows.demo import crisis_demo
from prefect_crisis.flows.validate_batch import validate_batch

__all__ = ["crisis_demo", "validate_batch"]

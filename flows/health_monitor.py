"""Deprecated (kept for one release): `health_monitor` lives in `prefect_crisis.flows.monitoring`.

Deployments created before the move name this module as their entrypoint
(`prefect_crisis.flows.health_monitor:health_monitor`); they keep running. `crisis deploy`
moves them to `prefect_crisis.flows.monitoring:health_monitor`.
"""

from __future__ import annotations

import warnings

from prefect_crisis.flows.monitoring import health_monitor

__all__ = ["health_monitor"]

warnings.warn(
    "prefect_crisis.flows.health_monitor is deprecated and goes in the next release: the flow is prefect_crisis.flows.monitoring:health_monitor "
    "(re-run `crisis deploy` to move deployments to it)",
    DeprecationWarning,
    stacklevel=2,
)

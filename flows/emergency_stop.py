"""Deprecated (kept for one release): `emergency_stop` lives in `prefect_crisis.flows.emergency`.

Deployments created before the move name this module as their entrypoint
(`prefect_crisis.flows.emergency_stop:emergency_stop`); they keep running. `crisis deploy`
moves them to `prefect_crisis.flows.emergency:emergency_stop`.
"""

from __future__ import annotations

import warnings

from prefect_crisis.flows.emergency import emergency_stop

__all__ = ["emergency_stop"]

warnings.warn(
    "prefect_crisis.flows.emergency_stop is deprecated and goes in the next release: the flow is prefect_crisis.flows.emergency:emergency_stop "
    "(re-run `crisis deploy` to move deployments to it)",
    DeprecationWarning,
    stacklevel=2,
)

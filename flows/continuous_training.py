"""Deprecated (kept for one release): `continuous_training` lives in `prefect_crisis.flows.training`.

Deployments created before the move name this module as their entrypoint
(`prefect_crisis.flows.continuous_training:continuous_training`); they keep running. `crisis deploy`
moves them to `prefect_crisis.flows.training:continuous_training`.
"""

from __future__ import annotations

import warnings

from prefect_crisis.flows.training import continuous_training

__all__ = ["continuous_training"]

warnings.warn(
    "prefect_crisis.flows.continuous_training is deprecated and goes in the next release: the flow is prefect_crisis.flows.training:continuous_training "
    "(re-run `crisis deploy` to move deployments to it)",
    DeprecationWarning,
    stacklevel=2,
)

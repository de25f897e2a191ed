"""Deprecated (kept for one release): `validate_batch` lives in `prefect_crisis.flows.validation`.

Deployments created before the move name this module as their entrypoint
(`prefect_crisis.flows.validate_batch:validate_batch`); they keep running. `crisis deploy`
moves them to `prefect_crisis.flows.validation:validate_batch`.
"""

from __future__ import annotations

import warnings

from prefect_crisis.flows.validation import validate_batch

__all__ = ["validate_batch"]

warnings.warn(
    "prefect_crisis.flows.validate_batch is deprecated and goes in the next release: the flow is prefect_crisis.flows.validation:validate_batch "
    "(re-run `crisis deploy` to move deployments to it)",
    DeprecationWarning,
    stacklevel=2,
)

"""Deprecated (kept for one release): `crisis_response` lives in `prefect_crisis.flows.response`.

Deployments created before the move name this module as their entrypoint
(`prefect_crisis.flows.crisis_response:crisis_response`); they keep running. `crisis deploy`
moves them to `prefect_crisis.flows.response:crisis_response`.
"""

from __future__ import annotations

import warnings

from prefect_crisis.flows.response import crisis_response

__all__ = ["crisis_response"]

warnings.warn(
    "prefect_crisis.flows.crisis_response is deprecated and goes in the next release: the flow is prefect_crisis.flows.response:crisis_response "
    "(re-run `crisis deploy` to move deployments to it)",
    DeprecationWarning,
    stacklevel=2,
)

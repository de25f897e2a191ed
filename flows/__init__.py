"""Flows composed of the crisis tasks.

Flow modules keep real (not postponed) annotations: Prefect builds the
parameter schema from them, and postponed ones fail to resolve in deployments.

Each flow is imported on first use (PEP 562 `__getattr__`): a deployment's run
imports only its own flow module, not every flow's dependencies. No flow shares
its module's name (`crisis_response` lives in `prefect_crisis.flows.response`),
so importing a flow module never hides the flow of the same name here.

The modules named after their flows before (`prefect_crisis.flows.crisis_response`
and four more) remain for one release as deprecated entrypoints: deployments
created with them keep running; `crisis deploy` moves them to the new paths.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "continuous_training": "prefect_crisis.flows.training",
    "crisis_demo": "prefect_crisis.flows.demo",
    "crisis_response": "prefect_crisis.flows.response",
    "emergency_stop": "prefect_crisis.flows.emergency",
    "health_monitor": "prefect_crisis.flows.monitoring",
    "validate_batch": "prefect_crisis.flows.validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

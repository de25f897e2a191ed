"""Flows composed of the crisis tasks.

Flow modules keep real (not postponed) annotations: Prefect builds the
parameter schema from them, and postponed ones fail to resolve in deployments.

Each flow is imported on first use (PEP 562): a deployment's run imports only
its own flow module, not every flow's dependencies.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "continuous_training": "prefect_crisis.flows.continuous_training",
    "crisis_demo": "prefect_crisis.flows.demo",
    "crisis_response": "prefect_crisis.flows.crisis_response",
    "emergency_stop": "prefect_crisis.flows.emergency_stop",
    "health_monitor": "prefect_crisis.flows.health_monitor",
    "validate_batch": "prefect_crisis.flows.validate_batch",
}

__all__ = sorted(_EXPORTS)
_loaded: dict[str, Any] = {}


class _FlowsPackage(types.ModuleType):
    """Three flows share their module's name (`prefect_crisis.flows.crisis_response` defines
    `crisis_response`); importing a module sets the package attribute to the module, so the
    names resolve here, always to the flow, as the eager imports this replaces did."""

    def __getattribute__(self, name: str) -> Any:
        if name in _EXPORTS:
            if name not in _loaded:
                _loaded[name] = getattr(importlib.import_module(_EXPORTS[name]), name)
            return _loaded[name]
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_EXPORTS))


sys.modules[__name__].__class__ = _FlowsPackage

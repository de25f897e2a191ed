"""Crisis steps as Prefect tasks over plain functions.

Names are re-exported lazily (PEP 562), so that importing one light module
such as `prefect_crisis.tasks.errors` does not import every crisis step, and
blocks can depend on errors without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CrisisError": "errors",
    "ContractError": "errors",
    "ContractErrorReason": "errors",
    "DataInputError": "errors",
    "InputErrorReason": "errors",
    "RegistryError": "errors",
    "StackError": "errors",
    "TrainingError": "errors",
    "CrisisEvent": "events",
    "emit_crisis_event": "events",
    "validate_data": "validation",
    "ValidationReport": "validation",
    "ValidationResult": "validation",
    "CheckFailure": "validation",
    "RowReason": "validation",
    "Verdict": "validation",
    "REASONS_COLUMN": "validation",
    "validate_data_task": "quarantine",
    "persist_parts_task": "quarantine",
    "publish_validation": "quarantine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__

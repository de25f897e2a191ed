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
    "PolicyError": "errors",
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
    # drift
    "dataframe_drift": "drift",
    "numeric_drift": "drift",
    "categorical_drift": "drift",
    "psi_numeric": "drift",
    "psi_categorical": "drift",
    "DriftSettings": "drift",
    "FeatureDrift": "drift",
    # training with the stop hook, and its stop conditions
    "train_with_stop_hook": "training",
    "make_estimator": "training",
    "Checkpoint": "training",
    "Position": "training",
    "TrainingOutcome": "training",
    "StopCondition": "stopping",
    "StopKind": "stopping",
    "StopReason": "stopping",
    "TrainingProgress": "stopping",
    "stop_any": "stopping",
    "stop_when_flag_set": "stopping",
    "stop_on_nonfinite_loss": "stopping",
    "stop_on_divergence": "stopping",
    "stop_on_stall": "stopping",
    "stop_after_seconds": "stopping",
    "train_model": "training_run",
    "set_stop_flag": "training_run",
    "clear_stop_flag": "training_run",
    "read_stop_flag": "training_run",
    # checkpoints
    "save_checkpoint": "checkpoints",
    "load_checkpoint": "checkpoints",
    "latest_checkpoint_run": "checkpoints",
    "training_experiment": "checkpoints",
    # promotion
    "decide_promotion": "promotion",
    "PromotionDecision": "promotion",
    # diagnosis, the rollback decision and its values, recovery
    "diagnose": "diagnostics",
    "DiagnosticReport": "diagnostics",
    "decide_rollback": "rollback",
    "judge_rules": "rollback",
    "check_rule": "rollback",
    "wilson_interval": "rollback",
    "candidates_from_registry": "rollback",
    "Candidate": "rollback",
    "DecisionKind": "rollback",
    "LiveWindow": "rollback",
    "RollbackDecision": "rollback",
    "RuleResults": "rollback",
    "Severity": "rollback",
    "Violation": "rollback",
    "execute_recovery": "recovery",
    "RecoveryOutcome": "recovery",
    "Strategy": "recovery",
    "Verification": "recovery",
    "ViolationType": "recovery",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__

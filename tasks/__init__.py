"""Crisis steps as Prefect tasks over plain functions, and the base names a user needs with them."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): a flow-run process that needs one step does not pay for
# every step's dependencies (skops, scipy, matplotlib) before its first line runs.
_EXPORTS = {
    "Breach": "prefect_crisis.tasks.health_rules",
    "HealthCheck": "prefect_crisis.tasks.health_rules",
    "Measure": "prefect_crisis.tasks.health_rules",
    "WindowMetrics": "prefect_crisis.tasks.health_rules",
    "check_any": "prefect_crisis.tasks.health_rules",
    "check_rule_on_windows": "prefect_crisis.tasks.health_rules",
    "policy_checks": "prefect_crisis.tasks.health_rules",
    "ModelHealth": "prefect_crisis.tasks.monitoring",
    "metric_history": "prefect_crisis.tasks.monitoring",
    "model_metrics": "prefect_crisis.tasks.monitoring",
    "report_health": "prefect_crisis.tasks.monitoring",
    "sweep_model": "prefect_crisis.tasks.monitoring",
    "system_metrics": "prefect_crisis.tasks.monitoring",
    "FallbackModel": "prefect_crisis.tasks.fallback_model",
    "FallbackResult": "prefect_crisis.tasks.fallback_model",
    "fit_fallback": "prefect_crisis.tasks.fallback_model",
    "keep_fallback": "prefect_crisis.tasks.fallback_model",
    "select_fallback_features": "prefect_crisis.tasks.fallback_model",
    "Candidate": "prefect_crisis.tasks.rollback",
    "CircuitBreaker": "prefect_crisis.tasks.breaker",
    "FallbackRouter": "prefect_crisis.tasks.serving",
    "CheckFailure": "prefect_crisis.tasks.validation",
    "Checkpoint": "prefect_crisis.tasks.training",
    "ContractError": "prefect_crisis.core.errors",
    "ContractErrorReason": "prefect_crisis.core.errors",
    "CrisisError": "prefect_crisis.core.errors",
    "CrisisEvent": "prefect_crisis.core.vocabulary",
    "DataInputError": "prefect_crisis.core.errors",
    "DecisionKind": "prefect_crisis.core.vocabulary",
    "DiagnosticReport": "prefect_crisis.tasks.diagnostics",
    "DriftSettings": "prefect_crisis.tasks.drift",
    "FeatureDrift": "prefect_crisis.tasks.drift",
    "Incident": "prefect_crisis.core.timeline",
    "InputErrorReason": "prefect_crisis.core.errors",
    "LiveWindow": "prefect_crisis.tasks.rollback",
    "PolicyError": "prefect_crisis.core.errors",
    "Position": "prefect_crisis.tasks.training",
    "PromotionDecision": "prefect_crisis.tasks.promotion",
    "REASONS_COLUMN": "prefect_crisis.tasks.validation",
    "RecoveryOutcome": "prefect_crisis.tasks.recovery",
    "RegistryError": "prefect_crisis.core.errors",
    "RollbackDecision": "prefect_crisis.tasks.rollback",
    "RowReason": "prefect_crisis.core.vocabulary",
    "RuleResults": "prefect_crisis.tasks.rollback",
    "Severity": "prefect_crisis.core.vocabulary",
    "StackError": "prefect_crisis.core.errors",
    "StopCondition": "prefect_crisis.tasks.stopping",
    "StopKind": "prefect_crisis.tasks.stopping",
    "StopReason": "prefect_crisis.tasks.stopping",
    "Strategy": "prefect_crisis.core.vocabulary",
    "Timeline": "prefect_crisis.core.timeline",
    "TrainingError": "prefect_crisis.core.errors",
    "TrainingOutcome": "prefect_crisis.tasks.training",
    "TrainingProgress": "prefect_crisis.tasks.stopping",
    "ValidationReport": "prefect_crisis.tasks.validation",
    "ValidationResult": "prefect_crisis.tasks.validation",
    "Verdict": "prefect_crisis.tasks.validation",
    "Verification": "prefect_crisis.tasks.recovery",
    "Violation": "prefect_crisis.tasks.rollback",
    "ViolationType": "prefect_crisis.core.vocabulary",
    "candidates_from_registry": "prefect_crisis.tasks.rollback",
    "categorical_drift": "prefect_crisis.tasks.drift",
    "check_rule": "prefect_crisis.tasks.rollback",
    "clear_stop_flag": "prefect_crisis.tasks.stop_flag",
    "dataframe_drift": "prefect_crisis.tasks.drift",
    "decide_promotion": "prefect_crisis.tasks.promotion",
    "decide_rollback": "prefect_crisis.tasks.rollback",
    "diagnose": "prefect_crisis.tasks.diagnostics",
    "emit_crisis_event": "prefect_crisis.core.timeline",
    "execute_recovery": "prefect_crisis.tasks.recovery",
    "publish_dashboard": "prefect_crisis.tasks.dashboard",
    "read_dashboard": "prefect_crisis.tasks.dashboard",
    "judge_rules": "prefect_crisis.tasks.rollback",
    "latest_checkpoint_run": "prefect_crisis.tasks.checkpoints",
    "load_checkpoint": "prefect_crisis.tasks.checkpoints",
    "make_estimator": "prefect_crisis.tasks.training",
    "numeric_drift": "prefect_crisis.tasks.drift",
    "persist_parts_task": "prefect_crisis.tasks.quarantine",
    "psi_categorical": "prefect_crisis.tasks.drift",
    "psi_numeric": "prefect_crisis.tasks.drift",
    "publish_validation": "prefect_crisis.tasks.quarantine",
    "read_stop_flag": "prefect_crisis.tasks.stop_flag",
    "save_checkpoint": "prefect_crisis.tasks.checkpoints",
    "set_stop_flag": "prefect_crisis.tasks.stop_flag",
    "stop_after_seconds": "prefect_crisis.tasks.stopping",
    "stop_any": "prefect_crisis.tasks.stopping",
    "stop_on_divergence": "prefect_crisis.tasks.stopping",
    "stop_on_nonfinite_loss": "prefect_crisis.tasks.stopping",
    "stop_on_stall": "prefect_crisis.tasks.stopping",
    "stop_when_flag_set": "prefect_crisis.tasks.stopping",
    "train_model": "prefect_crisis.tasks.training_run",
    "train_with_stop_hook": "prefect_crisis.tasks.training",
    "training_experiment": "prefect_crisis.tasks.checkpoints",
    "validate_data": "prefect_crisis.tasks.validation",
    "validate_data_task": "prefect_crisis.tasks.quarantine",
    "wilson_interval": "prefect_crisis.tasks.rollback",
    # real models on real data, the model's own policies, one incident per episode
    "BoundPolicy": "prefect_crisis.tasks.loading",
    "bind_policy": "prefect_crisis.tasks.loading",
    "Episode": "prefect_crisis.tasks.episodes",
    "read_episode": "prefect_crisis.tasks.episodes",
    "RealDataset": "prefect_crisis.tasks.datasets",
    "load_dataset": "prefect_crisis.tasks.datasets",
    "serving_accuracy": "prefect_crisis.tasks.real_models",
    "RoutingCalibration": "prefect_crisis.tasks.routing",
    "fit_routing": "prefect_crisis.tasks.routing",
    "load_routing": "prefect_crisis.tasks.routing",
    "log_routing": "prefect_crisis.tasks.routing",
    "Finding": "prefect_crisis.tasks.validation",
    "FindingReason": "prefect_crisis.tasks.validation",
    "training_input_findings": "prefect_crisis.tasks.validation",
    "freeze_golden_set": "prefect_crisis.tasks.promotion",
    "read_golden_set": "prefect_crisis.tasks.promotion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

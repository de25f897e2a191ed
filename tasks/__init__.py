"""Crisis steps as Prefect tasks over plain functions, in one package per feature, and the
base names a user needs with them.

- `validation`: the data contract's checks, drift, quarantine, batches and references
- `training`: the stop hook, stop conditions, checkpoints and resume, the promotion gate
- `serving`: the router, circuit breaker, fallback model, confidence routing, pyfunc, inference log
- `response`: diagnose, decide, recover and verify, incidents, episodes, the emergency step
- `monitoring`: windows of the inference log, health rules, the dashboard and its plot
- `drills`: synthetic streams, bundled real data sets and models, injected faults

Each feature package keeps its plain functions and values apart from the thin `@task`
modules on top. The modules of the flat layout (`prefect_crisis.tasks.rollback`, ...)
still import for one release, with a `DeprecationWarning` naming the new place.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect_crisis.core.lazy import MovedModules

# Imported on first use (PEP 562): a flow-run process that needs one step does not pay for
# every step's dependencies (skops, scipy, matplotlib) before its first line runs.
_EXPORTS = {
    "Breach": "prefect_crisis.tasks.monitoring.health_rules",
    "HealthCheck": "prefect_crisis.tasks.monitoring.health_rules",
    "Measure": "prefect_crisis.tasks.monitoring.health_rules",
    "WindowMetrics": "prefect_crisis.tasks.monitoring.health_rules",
    "check_any": "prefect_crisis.tasks.monitoring.health_rules",
    "check_rule_on_windows": "prefect_crisis.tasks.monitoring.health_rules",
    "policy_checks": "prefect_crisis.tasks.monitoring.health_rules",
    "ModelHealth": "prefect_crisis.tasks.monitoring.model_health",
    "metric_history": "prefect_crisis.tasks.monitoring.sweep_history",
    "model_metrics": "prefect_crisis.tasks.monitoring.windows",
    "report_health": "prefect_crisis.tasks.monitoring.sweep",
    "sweep_model": "prefect_crisis.tasks.monitoring.sweep",
    "system_metrics": "prefect_crisis.tasks.monitoring.sweep",
    "FallbackModel": "prefect_crisis.tasks.serving.fallback_fit",
    "FallbackResult": "prefect_crisis.tasks.serving.fallback_fit",
    "fit_fallback": "prefect_crisis.tasks.serving.fallback_fit",
    "keep_fallback": "prefect_crisis.tasks.serving.fallback_model",
    "select_fallback_features": "prefect_crisis.tasks.serving.fallback_columns",
    "Candidate": "prefect_crisis.tasks.response.candidates",
    "CircuitBreaker": "prefect_crisis.tasks.serving.breaker",
    "FallbackRouter": "prefect_crisis.tasks.serving.router",
    "CheckFailure": "prefect_crisis.tasks.validation.report",
    "Checkpoint": "prefect_crisis.tasks.training.loop",
    "ContractError": "prefect_crisis.core.errors",
    "ContractErrorReason": "prefect_crisis.core.errors",
    "CrisisError": "prefect_crisis.core.errors",
    "CrisisEvent": "prefect_crisis.core.vocabulary",
    "DataInputError": "prefect_crisis.core.errors",
    "DecisionKind": "prefect_crisis.core.vocabulary",
    "DiagnosticReport": "prefect_crisis.tasks.response.diagnostics",
    "DriftSettings": "prefect_crisis.tasks.validation.drift",
    "FeatureDrift": "prefect_crisis.tasks.validation.drift",
    "Incident": "prefect_crisis.core.timeline",
    "InputErrorReason": "prefect_crisis.core.errors",
    "LiveWindow": "prefect_crisis.tasks.response.rules",
    "PolicyError": "prefect_crisis.core.errors",
    "Position": "prefect_crisis.tasks.training.loop",
    "PromotionDecision": "prefect_crisis.tasks.training.gate",
    "REASONS_COLUMN": "prefect_crisis.tasks.validation.report",
    "RecoveryOutcome": "prefect_crisis.tasks.response.recovery",
    "RegistryError": "prefect_crisis.core.errors",
    "RollbackDecision": "prefect_crisis.tasks.response.rollback",
    "RowReason": "prefect_crisis.core.vocabulary",
    "RuleResults": "prefect_crisis.tasks.response.rules",
    "Severity": "prefect_crisis.core.vocabulary",
    "StackError": "prefect_crisis.core.errors",
    "StopCondition": "prefect_crisis.tasks.training.stopping",
    "StopKind": "prefect_crisis.tasks.training.stopping",
    "StopReason": "prefect_crisis.tasks.training.stopping",
    "Strategy": "prefect_crisis.core.vocabulary",
    "Timeline": "prefect_crisis.core.timeline",
    "TrainingError": "prefect_crisis.core.errors",
    "TrainingOutcome": "prefect_crisis.tasks.training.loop",
    "TrainingProgress": "prefect_crisis.tasks.training.stopping",
    "ValidationReport": "prefect_crisis.tasks.validation.report",
    "ValidationResult": "prefect_crisis.tasks.validation.report",
    "Verdict": "prefect_crisis.tasks.validation.report",
    "Verification": "prefect_crisis.tasks.response.recovery",
    "Violation": "prefect_crisis.tasks.response.rules",
    "ViolationType": "prefect_crisis.core.vocabulary",
    "candidates_from_registry": "prefect_crisis.tasks.response.reading",
    "categorical_drift": "prefect_crisis.tasks.validation.drift",
    "check_rule": "prefect_crisis.tasks.response.rules",
    "clear_stop_flag": "prefect_crisis.tasks.training.stop_flag",
    "dataframe_drift": "prefect_crisis.tasks.validation.drift",
    "decide_promotion": "prefect_crisis.tasks.training.gate",
    "decide_rollback": "prefect_crisis.tasks.response.rollback",
    "diagnose": "prefect_crisis.tasks.response.diagnostics",
    "emit_crisis_event": "prefect_crisis.core.timeline",
    "execute_recovery": "prefect_crisis.tasks.response.recovery",
    "publish_dashboard": "prefect_crisis.tasks.monitoring.dashboard",
    "read_dashboard": "prefect_crisis.tasks.monitoring.dashboard",
    "judge_rules": "prefect_crisis.tasks.response.rules",
    "latest_checkpoint_run": "prefect_crisis.tasks.training.checkpoints",
    "load_checkpoint": "prefect_crisis.tasks.training.checkpoints",
    "make_estimator": "prefect_crisis.tasks.training.loop",
    "numeric_drift": "prefect_crisis.tasks.validation.drift",
    "persist_parts_task": "prefect_crisis.tasks.validation.tasks",
    "psi_categorical": "prefect_crisis.tasks.validation.drift_statistics",
    "psi_numeric": "prefect_crisis.tasks.validation.drift_statistics",
    "publish_validation": "prefect_crisis.tasks.validation.tasks",
    "read_stop_flag": "prefect_crisis.tasks.training.stop_flag",
    "save_checkpoint": "prefect_crisis.tasks.training.checkpoints",
    "set_stop_flag": "prefect_crisis.tasks.training.stop_flag",
    "stop_after_seconds": "prefect_crisis.tasks.training.stopping",
    "stop_any": "prefect_crisis.tasks.training.stopping",
    "stop_on_divergence": "prefect_crisis.tasks.training.stopping",
    "stop_on_nonfinite_loss": "prefect_crisis.tasks.training.stopping",
    "stop_on_stall": "prefect_crisis.tasks.training.stopping",
    "stop_when_flag_set": "prefect_crisis.tasks.training.stopping",
    "train_model": "prefect_crisis.tasks.training.tasks",
    "train_with_stop_hook": "prefect_crisis.tasks.training.loop",
    "training_experiment": "prefect_crisis.tasks.training.checkpoints",
    "validate_data": "prefect_crisis.tasks.validation.checks",
    "validate_data_task": "prefect_crisis.tasks.validation.tasks",
    "wilson_interval": "prefect_crisis.tasks.response.rules",
    # real models on real data, the model's own policies, one incident per episode
    "BoundPolicy": "prefect_crisis.tasks.loading",
    "bind_policy": "prefect_crisis.tasks.loading",
    "Episode": "prefect_crisis.tasks.response.episodes",
    "read_episode": "prefect_crisis.tasks.response.episodes",
    "RealDataset": "prefect_crisis.tasks.drills.datasets",
    "load_dataset": "prefect_crisis.tasks.drills.datasets",
    "serving_accuracy": "prefect_crisis.tasks.drills.real_models",
    "RoutingCalibration": "prefect_crisis.tasks.serving.routing_calibration",
    "fit_routing": "prefect_crisis.tasks.serving.confidence_routing",
    "load_routing": "prefect_crisis.tasks.serving.routing_artifact",
    "log_routing": "prefect_crisis.tasks.serving.routing_artifact",
    "Finding": "prefect_crisis.tasks.validation.report",
    "FindingReason": "prefect_crisis.tasks.validation.report",
    "training_input_findings": "prefect_crisis.tasks.validation.labels",
    "freeze_golden_set": "prefect_crisis.tasks.training.promotion",
    "read_golden_set": "prefect_crisis.tasks.training.promotion",
}

__all__ = sorted(_EXPORTS)

# The flat layout's module names -> their feature package (removed in the next release).
MOVED_MODULES = {
    "prefect_crisis.tasks.columns": "prefect_crisis.tasks.validation.columns",
    "prefect_crisis.tasks.drift": "prefect_crisis.tasks.validation.drift",
    "prefect_crisis.tasks.references": "prefect_crisis.tasks.validation.references",
    "prefect_crisis.tasks.quarantine": "prefect_crisis.tasks.validation.quarantine",
    "prefect_crisis.tasks.batches": "prefect_crisis.tasks.validation.batches",
    "prefect_crisis.tasks.stopping": "prefect_crisis.tasks.training.stopping",
    "prefect_crisis.tasks.resume": "prefect_crisis.tasks.training.resume",
    "prefect_crisis.tasks.checkpoints": "prefect_crisis.tasks.training.checkpoints",
    "prefect_crisis.tasks.stop_flag": "prefect_crisis.tasks.training.stop_flag",
    "prefect_crisis.tasks.promotion": "prefect_crisis.tasks.training",  # split into gate, promotion and tasks
    "prefect_crisis.tasks.training_run": "prefect_crisis.tasks.training",  # split into data, run and tasks
    "prefect_crisis.tasks.routing": "prefect_crisis.tasks.serving.confidence_routing",
    "prefect_crisis.tasks.breaker": "prefect_crisis.tasks.serving.breaker",
    "prefect_crisis.tasks.fallback_model": "prefect_crisis.tasks.serving.fallback_model",
    "prefect_crisis.tasks.serving_model": "prefect_crisis.tasks.serving.pyfunc",
    "prefect_crisis.tasks.crisis_model_code": "prefect_crisis.tasks.serving.pyfunc_code",
    "prefect_crisis.tasks.inference_log": "prefect_crisis.tasks.serving.inference_log",
    "prefect_crisis.tasks.diagnostics": "prefect_crisis.tasks.response.diagnostics",
    "prefect_crisis.tasks.rollback": "prefect_crisis.tasks.response.rollback",
    "prefect_crisis.tasks.recovery": "prefect_crisis.tasks.response.recovery",
    "prefect_crisis.tasks.incident": "prefect_crisis.tasks.response.incident",
    "prefect_crisis.tasks.incident_report": "prefect_crisis.tasks.response.report",
    "prefect_crisis.tasks.episodes": "prefect_crisis.tasks.response.episodes",
    "prefect_crisis.tasks.emergency": "prefect_crisis.tasks.response.emergency",
    "prefect_crisis.tasks.health_rules": "prefect_crisis.tasks.monitoring.health_rules",
    "prefect_crisis.tasks.dashboard": "prefect_crisis.tasks.monitoring.dashboard",
    "prefect_crisis.tasks.health_plot": "prefect_crisis.tasks.monitoring.health_plot",
    "prefect_crisis.tasks.synthetic": "prefect_crisis.tasks.drills.synthetic",
    "prefect_crisis.tasks.datasets": "prefect_crisis.tasks.drills.datasets",
    "prefect_crisis.tasks.real_models": "prefect_crisis.tasks.drills.real_models",
}
MovedModules(MOVED_MODULES).install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

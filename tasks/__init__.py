"""Crisis steps as Prefect tasks over plain functions, and the base names a user needs with them."""

from prefect_crisis.core.errors import ContractError, ContractErrorReason, CrisisError, DataInputError, InputErrorReason, PolicyError, RegistryError, StackError, TrainingError
from prefect_crisis.core.timeline import Incident, Timeline, emit_crisis_event
from prefect_crisis.core.vocabulary import CrisisEvent, DecisionKind, RowReason, Severity, Strategy, ViolationType
from prefect_crisis.tasks.checkpoints import latest_checkpoint_run, load_checkpoint, save_checkpoint, training_experiment
from prefect_crisis.tasks.diagnostics import DiagnosticReport, diagnose
from prefect_crisis.tasks.drift import DriftSettings, FeatureDrift, categorical_drift, dataframe_drift, numeric_drift, psi_categorical, psi_numeric
from prefect_crisis.tasks.health_rules import Breach, HealthCheck, Measure, WindowMetrics, check_any, check_rule_on_windows, policy_checks
from prefect_crisis.tasks.monitoring import ModelHealth, metric_history, model_metrics, report_health, sweep_model, system_metrics
from prefect_crisis.tasks.promotion import PromotionDecision, decide_promotion
from prefect_crisis.tasks.quarantine import persist_parts_task, publish_validation, validate_data_task
from prefect_crisis.tasks.recovery import RecoveryOutcome, Verification, execute_recovery
from prefect_crisis.tasks.breaker import CircuitBreaker
from prefect_crisis.tasks.serving import FallbackRouter
from prefect_crisis.tasks.rollback import Candidate, LiveWindow, RollbackDecision, RuleResults, Violation, candidates_from_registry, check_rule, decide_rollback, judge_rules, wilson_interval
from prefect_crisis.tasks.stop_flag import clear_stop_flag, read_stop_flag, set_stop_flag
from prefect_crisis.tasks.stopping import StopCondition, StopKind, StopReason, TrainingProgress, stop_after_seconds, stop_any, stop_on_divergence, stop_on_nonfinite_loss, stop_on_stall, stop_when_flag_set
from prefect_crisis.tasks.training import Checkpoint, Position, TrainingOutcome, make_estimator, train_with_stop_hook
from prefect_crisis.tasks.training_run import train_model
from prefect_crisis.tasks.validation import CheckFailure, REASONS_COLUMN, ValidationReport, ValidationResult, Verdict, validate_data

__all__ = [
    "Breach",
    "HealthCheck",
    "Measure",
    "WindowMetrics",
    "check_any",
    "check_rule_on_windows",
    "policy_checks",
    "ModelHealth",
    "metric_history",
    "model_metrics",
    "report_health",
    "sweep_model",
    "system_metrics",
    "Candidate",
    "CircuitBreaker",
    "FallbackRouter",
    "CheckFailure",
    "Checkpoint",
    "ContractError",
    "ContractErrorReason",
    "CrisisError",
    "CrisisEvent",
    "DataInputError",
    "DecisionKind",
    "DiagnosticReport",
    "DriftSettings",
    "FeatureDrift",
    "Incident",
    "InputErrorReason",
    "LiveWindow",
    "PolicyError",
    "Position",
    "PromotionDecision",
    "REASONS_COLUMN",
    "RecoveryOutcome",
    "RegistryError",
    "RollbackDecision",
    "RowReason",
    "RuleResults",
    "Severity",
    "StackError",
    "StopCondition",
    "StopKind",
    "StopReason",
    "Strategy",
    "Timeline",
    "TrainingError",
    "TrainingOutcome",
    "TrainingProgress",
    "ValidationReport",
    "ValidationResult",
    "Verdict",
    "Verification",
    "Violation",
    "ViolationType",
    "candidates_from_registry",
    "categorical_drift",
    "check_rule",
    "clear_stop_flag",
    "dataframe_drift",
    "decide_promotion",
    "decide_rollback",
    "diagnose",
    "emit_crisis_event",
    "execute_recovery",
    "judge_rules",
    "latest_checkpoint_run",
    "load_checkpoint",
    "make_estimator",
    "numeric_drift",
    "persist_parts_task",
    "psi_categorical",
    "psi_numeric",
    "publish_validation",
    "read_stop_flag",
    "save_checkpoint",
    "set_stop_flag",
    "stop_after_seconds",
    "stop_any",
    "stop_on_divergence",
    "stop_on_nonfinite_loss",
    "stop_on_stall",
    "stop_when_flag_set",
    "train_model",
    "train_with_stop_hook",
    "training_experiment",
    "validate_data",
    "validate_data_task",
    "wilson_interval",
]

"""Crisis steps as Prefect tasks over plain functions."""

from prefect_crisis.tasks.errors import (
    ContractError,
    ContractErrorReason,
    CrisisError,
    DataInputError,
    InputErrorReason,
    StackError,
)
from prefect_crisis.tasks.events import CrisisEvent, emit_crisis_event
from prefect_crisis.tasks.quarantine import persist_parts_task, publish_validation, validate_data_task
from prefect_crisis.tasks.validation import (
    REASONS_COLUMN,
    CheckFailure,
    RowReason,
    ValidationReport,
    ValidationResult,
    Verdict,
    validate_data,
)

__all__ = [
    "REASONS_COLUMN",
    "CheckFailure",
    "ContractError",
    "ContractErrorReason",
    "CrisisError",
    "CrisisEvent",
    "DataInputError",
    "InputErrorReason",
    "RowReason",
    "StackError",
    "ValidationReport",
    "ValidationResult",
    "Verdict",
    "emit_crisis_event",
    "persist_parts_task",
    "publish_validation",
    "validate_data",
    "validate_data_task",
]

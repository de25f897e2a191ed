"""The project's exception types.

One base class, `CrisisError`, so callers can catch everything this plugin
raises on purpose in one clause; each subclass carries a reason from an Enum,
so code (and tests) can branch on *why* without parsing the message. Messages
say what was wrong with the input and what to do, in one line.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class CrisisError(Exception):
    """Base class of every error prefect-crisis raises on purpose."""


class InputErrorReason(str, Enum):
    """Why a batch could not be validated at all."""

    NOT_A_DATAFRAME = "not_a_dataframe"
    EMPTY_FRAME = "empty_frame"
    DUPLICATE_COLUMN_NAMES = "duplicate_column_names"
    ALL_NULL_COLUMN = "all_null_column"
    TEXT_IN_NUMERIC_COLUMN = "text_in_numeric_column"
    UNHASHABLE_VALUES = "unhashable_values"
    UNREADABLE_SOURCE = "unreadable_source"
    MISSING_SOURCE = "missing_source"
    TOO_FEW_ROWS = "too_few_rows"
    INVALID_NAME = "invalid_name"


class DataInputError(CrisisError):
    """The input is not something validation can judge row by row.

    Attributes:
        reason: an `InputErrorReason`.
        column: the offending column, when one is to blame.
    """

    def __init__(self, reason: InputErrorReason, message: str, column: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.column = column


class ContractErrorReason(str, Enum):
    """Why a data contract cannot be applied."""

    UNKNOWN_COLUMN = "unknown_column"
    NOT_FOUND = "not_found"
    INCOMPATIBLE_REFERENCE = "incompatible_reference"
    REFERENCE_TOO_SMALL = "reference_too_small"
    INVALID_NAME = "invalid_name"


class ContractError(CrisisError):
    """The data contract itself is inconsistent with what it is applied to."""

    def __init__(self, reason: ContractErrorReason, message: str, columns: list[str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.columns = columns or []


class StackError(CrisisError):
    """The local Prefect/MLflow stack could not be started, reached or stopped."""


class RegistryError(CrisisError):
    """A registry action could not be done; the registry is left as it was."""


class RegistryUnavailableError(RegistryError):
    """The MLflow store stayed down, locked or out of reach for the whole retry budget (a later try may succeed)."""


class TrainingError(CrisisError):
    """Training cannot start or continue (bad policy, estimator or checkpoint)."""


class PolicyError(CrisisError):
    """A policy block cannot be applied as written (unknown metric, contradictory rule)."""


class ExitCode(IntEnum):
    """Exit codes of the `crisis` command line, one scheme for every command.

    0 done; 1 an unexpected failure (a bug: the traceback is printed);
    2 a usage or input error (bad argument, unknown name, missing file);
    3 the work was refused or halted on purpose (batch rejected, training stopped);
    4 the stack cannot be used (no server, server unreachable or frozen, port taken);
    130 interrupted (Ctrl-C): one line, nothing half-written (alias moves are audited and settled).
    """

    DONE = 0
    FAILURE = 1
    USAGE = 2
    REJECTED = 3
    STACK = 4
    INTERRUPTED = 130


class DrillError(CrisisError):
    """A drill scenario's steps ran out of order (a registry read before setup made one, a time read before inject
    stamped it): a bug in the scenario, recorded as the iteration's failure."""


class DemoError(CrisisError):
    """The demo's story did not happen as told: a bug or a broken stack, not bad input."""


class IncidentError(CrisisError):
    """An incident cannot be found or read (unknown id, no events left for it)."""


class ServingError(CrisisError):
    """The serving model cannot start (no champion, a version it cannot load)."""


class ServingInputError(CrisisError):
    """A prediction request does not match what the served models need (missing column, wrong type).

    The scoring server answers it with HTTP 400 and this one-line reason; the server keeps serving.
    """


class InferenceLogError(CrisisError):
    """The inference log's database cannot be read or written (labels, windows); predictions are never refused for it."""


class MonitoringError(CrisisError):
    """A model's health cannot be measured (its baseline cannot be read, its metric history is unreadable)."""

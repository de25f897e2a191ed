"""The vocabulary of prefect-crisis, as enums, in one place.

Severity, violations, recovery strategies, alias actions, audit outcomes,
MLflow tag keys, quarantine reasons and event names. Code compares members of
these enums, never their string values, so a renamed value is one edit here.
"""

from __future__ import annotations

from enum import Enum, StrEnum

TAG_PREFIX = "crisis."  # every MLflow tag prefect-crisis writes starts with it


class Severity(str, Enum):
    """How bad an incident is; EMERGENCY ignores the rollback cool-down."""

    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


class ViolationType(str, Enum):
    """What went wrong: picks the recovery strategies."""

    QUALITY = "quality"
    LATENCY = "latency"
    ERRORS = "errors"
    DATA_INTEGRITY = "data-integrity"


class Strategy(str, Enum):
    """A recovery strategy; ROLLBACK and FALLBACK are also alias actions."""

    ROLLBACK = "rollback"
    FALLBACK = "fallback"
    STOP_TRAINING = "stop-training"


class DecisionKind(str, Enum):
    """What the rollback decision says to do."""

    HOLD = "hold"
    ROLLBACK = "rollback"
    FALLBACK = "fallback"
    INCONCLUSIVE = "inconclusive"


class AliasAction(StrEnum):
    """An audited registry action (the `crisis.action` tag of an audit row)."""

    REGISTER = "register"
    RETIRE = "retire"
    MOVE = "move"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    FALLBACK = "fallback"

    @property
    def is_recovery(self) -> bool:
        """A move made by recovery: it starts the rollback cool-down."""
        return self in (AliasAction.ROLLBACK, AliasAction.FALLBACK)


class AuditOutcome(StrEnum):
    """The outcome of an audit row; a failure is written `failed: <why>`."""

    APPLIED = "applied"
    PENDING = "pending"
    FAILED = "failed"

    def because(self, why: str) -> str:
        """`failed: <why>`, as the audit writes a refused move."""
        return f"{self.value}: {why}"


INCIDENT_EXPERIMENT = "crisis-incidents"  # the MLflow experiment of the incidents' runs (diagnosis, health plot)


class TagKey(StrEnum):
    """MLflow tag keys written by prefect-crisis (runs, versions, models, experiments)."""

    MODEL = TAG_PREFIX + "model"
    VERSION = TAG_PREFIX + "version"
    INCIDENT = TAG_PREFIX + "incident"
    ACTION = TAG_PREFIX + "action"
    ALIAS = TAG_PREFIX + "alias"
    FROM_VERSION = TAG_PREFIX + "from_version"
    TO_VERSION = TAG_PREFIX + "to_version"
    REASON = TAG_PREFIX + "reason"
    FLOW_RUN_ID = TAG_PREFIX + "flow_run_id"
    AT = TAG_PREFIX + "at"
    OUTCOME = TAG_PREFIX + "outcome"
    RETIRED = TAG_PREFIX + "retired"
    MANAGED = TAG_PREFIX + "managed"
    AUDIT = TAG_PREFIX + "audit"
    FEATURES = TAG_PREFIX + "features"
    FALLBACK_MEETS_BAR = TAG_PREFIX + "fallback.meets_bar"  # "true" / "false": the fallback reaches fallback_min_ratio x the primary
    FALLBACK_BAR = TAG_PREFIX + "fallback.bar"  # the figures when it does not
    GOLDEN_VERSION = TAG_PREFIX + "golden_version"  # registered model: the version whose holdout is the golden set
    LABEL_FINDING = TAG_PREFIX + "label_finding"  # a version the gate held back for a label-quality finding
    FINGERPRINT = TAG_PREFIX + "fingerprint"
    VALIDATION = TAG_PREFIX + "validation"
    STATUS = TAG_PREFIX + "status"
    RESUMED_FROM = TAG_PREFIX + "resumed_from"
    RESUMED_BY = TAG_PREFIX + "resumed_by"
    FAMILY = TAG_PREFIX + "family"  # the learner a training chose (`estimator="auto"`) or was told to use
    FAMILY_CHOICE = TAG_PREFIX + "family_choice"  # why: each family's cross-validated accuracy
    RESUME_REFUSED = TAG_PREFIX + "resume_refused"
    STOP_REASON = TAG_PREFIX + "stop_reason"
    STOP_KIND = TAG_PREFIX + "stop_kind"
    CHECKPOINT = TAG_PREFIX + "checkpoint"
    CRASH_REASON = TAG_PREFIX + "crash_reason"
    ROLE = TAG_PREFIX + "role"
    WRAPS = TAG_PREFIX + "wraps"
    SERVING_CONFIG = TAG_PREFIX + "serving_config"  # digest of a serving wrapper's configuration


class VersionRole(StrEnum):
    """The `crisis.role` tag of a registered version that is not an ordinary candidate."""

    FALLBACK = "fallback"  # the simple model behind the `fallback` alias
    SERVING = "serving"  # a CrisisModel wrapper, registered as `<model>-serving`


class Responder(StrEnum):
    """Which model answered a row of a prediction (the inference log's `answered_by`)."""

    PRIMARY = "primary"
    FALLBACK = "fallback"
    NONE = "none"  # neither could: the row is marked failed with its reason


class BreakerState(StrEnum):
    """The serving circuit breaker's states (pybreaker's names)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class RouteReason(StrEnum):
    """Why serving sent a row to the fallback: the first words of the row's `reason` (in the answer and in the
    inference log's `reason` column), the detail after them."""

    PRIMARY_INPUT_INVALID = "primary input invalid"  # + ": '<column>' is missing" (or infinite, text, ...)
    LOW_CONFIDENCE = "primary confidence under"  # + " <threshold>", " (calibrated)" on a fitted map
    NON_FINITE_SCORES = "primary gave non-finite"  # + " <score> scores": blown-up weights
    PRIMARY_FAILED = "primary failed"  # "primary v<n> failed: <error>": it raised or timed out
    BREAKER_OPEN = "breaker open"  # + ": primary v<n> not called"


class RunStatusTag(StrEnum):
    """Values of the `crisis.status` tag of a training run."""

    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    CRASHED = "crashed"


class RowReason(str, Enum):
    """Why a row was quarantined."""

    NULL = "null"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    WRONG_TYPE = "wrong_type"
    DUPLICATE_KEY = "duplicate_key"
    DUPLICATE_ROW = "duplicate_row"
    OUTLIER = "outlier"
    BATCH_REJECTED = "batch_rejected"


class CrisisEvent(str, Enum):
    """Event names (DESIGN.md). Severity is in the name, because automation
    triggers match names and labels, not payloads."""

    DATA_VALIDATED = "ml.data.validated"
    DATA_REJECTED = "ml.data.rejected"
    TRAINING_STARTED = "ml.training.started"
    TRAINING_COMPLETED = "ml.training.completed"
    TRAINING_STOPPED = "ml.training.stopped"
    MODEL_REGISTERED = "ml.model.registered"
    MODEL_PROMOTED = "ml.model.promoted"
    MODEL_ROLLED_BACK = "ml.model.rolled-back"
    BREACH_WARNING = "ml.breach.warning"
    BREACH_CRITICAL = "ml.breach.critical"
    BREACH_EMERGENCY = "ml.breach.emergency"
    INCIDENT_OPENED = "ml.incident.opened"
    INCIDENT_JOINED = "ml.incident.joined"  # a later breach of the same episode joined the open incident
    DIAGNOSIS_DONE = "ml.diagnosis.done"
    DECISION_TAKEN = "ml.decision.taken"
    FALLBACK_ENGAGED = "ml.fallback.engaged"
    FALLBACK_RELEASED = "ml.fallback.released"
    RECOVERY_SUCCEEDED = "ml.recovery.succeeded"
    RECOVERY_FAILED = "ml.recovery.failed"
    HEALTH_REPORTED = "ml.health.reported"  # every monitor sweep: the dead man's switch listens for its absence
    LABELS_RECORDED = "ml.labels.recorded"  # labels joined to the inference log: runs the monitor at once
    SERVING_ERRORS = "ml.serving.errors"  # a burst of failed rows or requests in serving: runs the monitor at once
    EMERGENCY_STOPPED = "ml.emergency.stopped"  # the emergency-stop flow acted
    EMERGENCY_RESOLVED = "ml.emergency.resolved"  # the emergency-stop flow undid its stop (flag lowered, schedules resumed)


class Serving(StrEnum):
    """What answers as the champion: a model version, or the model's fallback moved onto the champion alias (a stopgap)."""

    CHAMPION = "champion"
    FALLBACK = "fallback"


SERVING_LABEL = "ml.model.serving"  # resource label of ml.health.reported: a Serving value (automations match labels, not payloads)

# Resource ids and roles of the events' related resources.
EVENT_PREFIX = "ml."  # every event prefect-crisis emits starts with it
MODEL_RESOURCE = "ml.model."
MODEL_NAME_LABEL = "ml.model.name"  # label of every event's resource: automations run for_each on it
# label of ml.recovery.succeeded: "true" while the model's emergency stop is in force (only then the ladder resolves it)
EMERGENCY_LABEL = "ml.model.emergency"
MODEL_VERSION_RESOURCE = "ml.model-version."
INCIDENT_RESOURCE = "ml.incident."
DRILL_PREFIX = "drill-"  # a recovery drill's models: their incidents are drills, and the ladder's pages skip them
# The only drill models the dead man's switch watches: the others report while their drill runs and then go quiet
# for good, and a diagnose-only response for each, minutes later, would crowd the workers of the next drills.
SILENT_DRILL_PREFIX = DRILL_PREFIX + "monitor-silent-"


def is_drill_model(model: str) -> bool:
    """True for a drill's model (`drill-...`): its incidents are drills and page nobody.

    Example:
        >>> is_drill_model("drill-poisoned-retrain-1a2b3c"), is_drill_model("churn")
        (True, False)
    """
    return model.startswith(DRILL_PREFIX)


INCIDENT_ROLE = "incident"
MODEL_VERSION_ROLE = "model-version"
INCIDENT_RUN_TAG = "incident:"  # flow runs of a response carry `incident:<id>`


class MetricKind(StrEnum):
    """How a rollback rule's metric is measured: a rate with a confidence bound, or a latency percentile."""

    RATE = "rate"
    LATENCY = "latency"

"""The EscalationPolicy block: the numbers of the escalation ladder.

`crisis deploy` builds one Prefect automation per step of the ladder from this
block (deployments/automations.py); saving a changed policy and deploying
again updates those automations in place.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from prefect.blocks.core import Block
from pydantic import Field


class LadderStep(StrEnum):
    """One automation of the ladder; its automation is named `crisis-<value>`."""

    WARNING = "warning"  # a warning breach: diagnose only
    CRITICAL = "critical"  # a critical breach: the full response, with the cool-down
    ESCALATE_WARNINGS = "escalate-warnings"  # repeated warnings for one model: the full response
    EMERGENCY = "emergency"  # emergency breach, failed recovery or rejected data: emergency stop
    RESOLVED = "resolved"  # recovery succeeded: undo the emergency stop
    MONITOR_SILENT = "monitor-silent"  # the dead man's switch: the monitor stopped reporting a model
    STOPGAP = "stopgap"  # the fallback serves: look again for a good version, once per cool-down
    EVIDENCE = "evidence"  # new labels or serving errors: run the monitor at once
    STALLED = "stalled"  # a response or emergency stop stopped sending heartbeats (its worker died): mark it Crashed
    RETRY_RESPONSE = "retry-response"  # a crashed response: run it again, same parameters, same incident
    RETRY_EMERGENCY = "retry-emergency"  # a crashed emergency stop: run it again

    @property
    def automation_name(self) -> str:
        """The automation's name on the server, e.g. `crisis-critical`."""
        return f"crisis-{self.value}"


class EscalationPolicy(Block):
    """When a breach escalates, how long the cool-down lasts, and when a silent monitor counts as dead.

    Example:
        ```python
        from prefect_crisis.blocks import EscalationPolicy

        EscalationPolicy(warnings_to_escalate=5, cooldown_minutes=60, notification_block="slack-webhook/on-call").save("churn", overwrite=True)
        ```
        then `crisis deploy --escalation-policy churn` applies it.
    """

    _block_type_name = "Crisis Escalation Policy"
    _block_type_slug = "crisis-escalation-policy"
    _description = "The escalation ladder's thresholds, cool-down, dead man's switch and notification, applied as Prefect automations."

    warnings_to_escalate: int = Field(
        default=3, ge=1, description="This many ml.breach.warning for one model within the escalation window start the full (critical) response."
    )
    escalation_window_minutes: float = Field(
        default=10.0,
        gt=0,
        description="The window in which repeated warnings escalate; after escalating, further warnings are quiet for the rest of it.",
    )
    cooldown_minutes: float = Field(
        default=30.0,
        gt=0,
        description="After a critical breach starts a response, further critical breaches of that model start none for this long (the rollback-storm guard).",
    )
    monitor_interval_seconds: float = Field(
        default=60.0, ge=5, description="How often the health-monitor deployment sweeps the inference log (its schedule)."
    )
    dead_man_intervals: int = Field(
        default=3,
        ge=1,
        description="A model without ml.health.reported for this many monitor intervals counts as unmonitored (the dead man's switch).",
    )
    notification_block: str | None = Field(
        default=None,
        description="Notification block as `<block-type-slug>/<name>` (e.g. `slack-webhook/on-call`); empty: the ladder notifies nobody.",
    )
    rollback_policy: str | None = Field(
        default=None,
        description="The RollbackPolicy block the responses of the models this policy is saved for use; empty: the block saved "
        "under the model's name, else the defaults.",
    )
    monitoring_policy: str | None = Field(
        default=None,
        description="The MonitoringPolicy block their health sweeps use; empty: the block saved under the model's name, else the defaults.",
    )
    fallback_policy: str | None = Field(
        default=None,
        description="The FallbackPolicy block their serving uses; empty: the block saved under the model's name, else the defaults.",
    )
    enabled_levels: list[LadderStep] = Field(
        default_factory=lambda: list(LadderStep),
        description="Steps whose automations are enabled; the others are kept on the server, disabled.",
    )

    @property
    def escalation_window(self) -> timedelta:
        return timedelta(minutes=self.escalation_window_minutes)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)

    @property
    def dead_man_window(self) -> timedelta:
        """How long a model may go without a health report; at least 10 s (Prefect's minimum for a proactive trigger)."""
        return timedelta(seconds=max(10.0, self.dead_man_intervals * self.monitor_interval_seconds))

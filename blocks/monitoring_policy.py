"""The MonitoringPolicy block: which health metrics breach at which severity,
over which windows, and how much metric history the monitor keeps.

A rule names a metric from a fixed vocabulary (`HEALTH_METRICS`), a severity
and a threshold, absolute or relative to the champion's baseline. Rates are
judged like the rollback decision judges them (a Wilson bound, at least
`min_samples` samples), so a breach is never one the response would call
inconclusive. Rules compose like the stop policies: `rule_a | rule_b`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_crisis.core.errors import PolicyError
from prefect_crisis.core.vocabulary import Severity


@dataclass(frozen=True)
class HealthMetricSpec:
    """What a health metric is: a rate judged by a Wilson bound, or a plain value."""

    rate: bool  # a share of bad events (judged by a Wilson bound on the long window), else a plain value
    unit: str  # what `samples` counts for this metric
    description: str


HEALTH_METRICS: dict[str, HealthMetricSpec] = {
    "error_rate": HealthMetricSpec(True, "labelled rows", "share of the labelled rows the champion answered whose answer was wrong"),
    "fallback_share": HealthMetricSpec(True, "rows", "share of rows answered by the fallback"),
    "fallback_error_rate": HealthMetricSpec(True, "labelled rows", "share of the labelled rows the fallback answered whose answer was wrong"),
    "failed_row_share": HealthMetricSpec(True, "rows", "share of rows nobody could answer"),
    "exception_rate": HealthMetricSpec(True, "requests", "share of requests refused or with a failed row"),
    "latency_p50_ms": HealthMetricSpec(False, "requests", "median request latency"),
    "latency_p95_ms": HealthMetricSpec(False, "requests", "95th percentile of request latency"),
    "confidence_p10": HealthMetricSpec(False, "rows", "10th percentile of answer confidence"),
    "confidence_p50": HealthMetricSpec(False, "rows", "median answer confidence"),
    "confidence_mean": HealthMetricSpec(False, "rows", "mean answer confidence"),
    "missing_ratio": HealthMetricSpec(False, "rows", "share of missing feature values"),
    "drifted_features": HealthMetricSpec(False, "rows", "features drifted against the contract's reference"),
    "cpu_percent": HealthMetricSpec(False, "readings", "CPU use of the monitor's host"),
    "memory_percent": HealthMetricSpec(False, "readings", "memory use of the monitor's host"),
    "disk_percent": HealthMetricSpec(False, "readings", "use of the state folder's disk"),
}


class HealthRule(BaseModel):
    """One metric, one severity, one threshold.

    `relative_to`: "absolute" compares with `threshold`; "plus" with the
    baseline plus `threshold`; "times" with the baseline times `threshold`.

    Example:
        >>> HealthRule(name="quality", metric="error_rate", severity="critical", threshold=0.1, relative_to="plus").severity.value
        'critical'
        >>> HealthRule(name="x", metric="eror_rate", severity="warning", threshold=0.1)
        Traceback (most recent call last):
        ...
        prefect_crisis.core.errors.PolicyError: unknown metric 'eror_rate' in health rule 'x': use one of error_rate, fallback_share, fallback_error_rate, failed_row_share, exception_rate, latency_p50_ms, latency_p95_ms, confidence_p10, confidence_p50, confidence_mean, missing_ratio, drifted_features, cpu_percent, memory_percent, disk_percent
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Names the rule in breach events and logs.")
    metric: str = Field(description="One of " + ", ".join(HEALTH_METRICS) + ".")
    severity: Severity = Field(description="warning, critical or emergency: the event emitted when the rule breaches.")
    threshold: float = Field(description="The limit, or what is added to / multiplied with the baseline (see relative_to).")
    relative_to: Literal["absolute", "plus", "times"] = Field(
        default="absolute", description="absolute: the threshold itself; plus: baseline + threshold; times: baseline x threshold."
    )
    direction: Literal["above", "below"] = Field(
        default="above", description="above: breaches when the metric is above the limit; below: when under it (confidence)."
    )
    min_samples: int = Field(default=30, ge=1, description="Fewer samples than this in the long window cannot breach (as in the rollback rules).")

    @model_validator(mode="after")
    def _known_metric(self) -> HealthRule:
        spec = HEALTH_METRICS.get(self.metric)
        if spec is None:
            raise PolicyError(f"unknown metric {self.metric!r} in health rule {self.name!r}: use one of {', '.join(HEALTH_METRICS)}")
        if spec.rate and self.direction != "above":
            raise PolicyError(f"{self.metric} is a rate of bad events: rule {self.name!r} can only breach above its limit")
        return self

    @property
    def spec(self) -> HealthMetricSpec:
        return HEALTH_METRICS[self.metric]

    def limit(self, baseline: float | None) -> float | None:
        """The value the metric is compared with; None when the rule needs a baseline and there is none."""
        if self.relative_to == "absolute":
            return self.threshold
        if baseline is None:
            return None
        return baseline + self.threshold if self.relative_to == "plus" else baseline * self.threshold


def default_rules() -> list[HealthRule]:
    """The rules a MonitoringPolicy starts with."""
    return [
        HealthRule(name="quality-warning", metric="error_rate", severity=Severity.WARNING, threshold=0.05, relative_to="plus"),
        HealthRule(name="quality-critical", metric="error_rate", severity=Severity.CRITICAL, threshold=0.10, relative_to="plus"),
        HealthRule(name="quality-emergency", metric="error_rate", severity=Severity.EMERGENCY, threshold=0.5),
        HealthRule(name="fallback-warning", metric="fallback_share", severity=Severity.WARNING, threshold=0.3),
        HealthRule(name="fallback-critical", metric="fallback_share", severity=Severity.CRITICAL, threshold=0.6),
        HealthRule(name="failed-rows-critical", metric="failed_row_share", severity=Severity.CRITICAL, threshold=0.05),
        HealthRule(name="failed-rows-emergency", metric="failed_row_share", severity=Severity.EMERGENCY, threshold=0.2),
        HealthRule(name="exceptions-warning", metric="exception_rate", severity=Severity.WARNING, threshold=0.1, min_samples=20),
        HealthRule(name="latency-warning", metric="latency_p95_ms", severity=Severity.WARNING, threshold=2.0, relative_to="times", min_samples=20),
        HealthRule(name="memory-emergency", metric="memory_percent", severity=Severity.EMERGENCY, threshold=95.0, min_samples=1),
        HealthRule(name="drift-warning", metric="drifted_features", severity=Severity.WARNING, threshold=2, min_samples=30),
    ]


class MonitoringPolicy(Block):
    """How the health monitor judges a model.

    Example:
        ```python
        from prefect_crisis.blocks import HealthRule, MonitoringPolicy

        MonitoringPolicy(
            long_window_minutes=60, short_window_minutes=5,
            rules=[HealthRule(name="quality", metric="error_rate", severity="critical", threshold=0.1, relative_to="plus")],
            contract_block="churn-input",
        ).save("churn", overwrite=True)
        ```
    """

    _block_type_name = "Crisis Monitoring Policy"
    _block_type_slug = "crisis-monitoring-policy"
    _description = "Which health metrics of a served model breach at which severity, over a long and a short window."

    rules: list[HealthRule] = Field(default_factory=default_rules, description="Each metric's limit and the severity of a breach.")
    long_window_minutes: float = Field(
        default=60.0, gt=0, description="The long window: a breach there says it is not noise (and is what the response reads)."
    )
    short_window_minutes: float = Field(
        default=5.0,
        gt=0,
        description="The short window: a breach there says it is still happening. Labelled metrics end it at the newest label; "
        "it reaches further back when it holds fewer than short_min_samples requests (labelled rows).",
    )
    short_min_samples: int = Field(default=10, ge=1, description="Fewer samples than this in the short window cannot confirm a breach.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Confidence of the Wilson bound for rates (use the rollback policy's).")
    contract_block: str | None = Field(
        default=None, description="DataContract whose reference the recent inputs are compared with for drift; empty: no drift metric."
    )
    history_sweeps: int = Field(default=1_000, ge=1, description="Sweeps of metric history kept per model (for plots).")
    dashboard_every_minutes: float = Field(
        default=10.0,
        ge=0,
        description="A healthy sweep refreshes the model's dashboard artifact at most this often (each refresh is a new artifact "
        "version with its plot, ~30 KB); a breach, a change of severity or of serving version refreshes it at once. 0: every sweep.",
    )

    @model_validator(mode="after")
    def _short_inside_long(self) -> MonitoringPolicy:
        if self.short_window_minutes > self.long_window_minutes:
            raise PolicyError(
                f"short_window_minutes ({self.short_window_minutes:g}) is longer than long_window_minutes ({self.long_window_minutes:g}): swap them"
            )
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PolicyError(f"health rules share names {repeated}: give each rule its own name")
        return self

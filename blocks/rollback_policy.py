"""The RollbackPolicy block: when a live model counts as degraded, and where to go back to.

Rules name metrics from a fixed vocabulary (`METRICS`): a rule on a metric the
live window never reports would otherwise never fire, and a policy that
cannot fire passes silently. Unknown names, and a kind or direction that
contradicts the metric, are refused when the rule is built (or loaded).
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, model_validator

from prefect_crisis.core.errors import PolicyError
from prefect_crisis.core.metrics import METRICS, MetricSpec


class MetricRule(BaseModel):
    """One metric the live window is judged on.

    Example:
        >>> MetricRule(metric="error_rate", tolerance=0.02).higher_is_better
        False
        >>> MetricRule(metric="acuracy")
        Traceback (most recent call last):
        ...
        prefect_crisis.core.errors.PolicyError: unknown metric 'acuracy' in a rollback rule: use one of accuracy, error_rate, latency_p50_ms, latency_p90_ms, latency_p95_ms, latency_p99_ms
    """

    metric: str = Field(description="One of " + ", ".join(METRICS) + " (accuracy and error_rate are one fact, either can be judged).")
    kind: Literal["rate", "latency"] | None = Field(
        default=None, description="rate: a proportion judged by a Wilson bound; latency: a high percentile. Empty: from the metric."
    )
    higher_is_better: bool | None = Field(default=None, description="Direction of the metric. Empty: from the metric.")
    tolerance: float = Field(default=0.02, ge=0, description="How much worse than the baseline is still fine.")
    relative: bool = Field(default=False, description="Tolerance as a fraction of the baseline instead of absolute.")
    min_samples: int = Field(
        default=30,
        ge=1,
        description=(
            "Fewer live samples than this cannot decide. The Wilson bound already makes a small window "
            "conclusive only for a large gap; 30 matches the health monitor's quality rules, so a breach "
            "the monitor raises is never INCONCLUSIVE here."
        ),
    )

    @model_validator(mode="after")
    def _known_metric(self) -> MetricRule:
        spec = METRICS.get(self.metric)
        if spec is None:
            raise PolicyError(f"unknown metric {self.metric!r} in a rollback rule: use one of {', '.join(METRICS)}")
        if self.kind not in (None, spec.kind):
            raise PolicyError(f"{self.metric} is a {spec.kind}, not a {self.kind}: drop kind= from the rule")
        if self.higher_is_better not in (None, spec.higher_is_better):
            direction = "higher" if spec.higher_is_better else "lower"
            raise PolicyError(f"for {self.metric} {direction} is better: drop higher_is_better= from the rule")
        self.kind, self.higher_is_better = spec.kind, spec.higher_is_better
        return self

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]


class RollbackPolicy(Block):
    """Rules for deciding a rollback.

    Example:
        ```python
        from prefect_crisis.blocks import MetricRule, RollbackPolicy

        RollbackPolicy(
            rules=[
                MetricRule(metric="error_rate", tolerance=0.03),
                MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True),
            ],
            stability_window_minutes=60,
            cooldown_minutes=30,
        ).save("churn", overwrite=True)
        ```
    """

    _block_type_name = "Crisis Rollback Policy"
    _block_type_slug = "crisis-rollback-policy"
    _description = "When a live model is degraded, which stable version to return to, and the cool-down between rollbacks."

    rules: list[MetricRule] = Field(
        default_factory=lambda: [
            MetricRule(metric="accuracy", tolerance=0.02),
            MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True, min_samples=50),
        ],
        min_length=1,
        description="Metrics the live window is judged on.",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Confidence of the Wilson bound for rates.")
    stability_window_minutes: float = Field(
        default=60.0, ge=0, description="A version must have served this long without an incident to be a rollback target."
    )
    prefer: Literal["most-recent", "best-metric"] = Field(
        default="most-recent", description="Among stable versions: the most recent, or the best on the first rule's metric."
    )
    cooldown_minutes: float = Field(default=30.0, ge=0, description="No second rollback of a model within this time, unless emergency.")

"""The RollbackPolicy block: when a live model counts as degraded, and where to go back to."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field


class MetricRule(BaseModel):
    """One metric the live window is judged on."""

    metric: str = Field(description="accuracy, error_rate, latency_p95_ms, ... as the live window reports it.")
    kind: Literal["rate", "latency"] = Field(
        default="rate", description="rate: a proportion judged by a Wilson bound; latency: a high percentile."
    )
    higher_is_better: bool = Field(default=True, description="Direction of the metric.")
    tolerance: float = Field(default=0.02, ge=0, description="How much worse than the baseline is still fine.")
    relative: bool = Field(default=False, description="Tolerance as a fraction of the baseline instead of absolute.")
    min_samples: int = Field(default=200, ge=1, description="Fewer live samples than this cannot decide.")


class RollbackPolicy(Block):
    """Rules for deciding a rollback.

    Example:
        ```python
        from prefect_crisis.blocks import MetricRule, RollbackPolicy

        RollbackPolicy(
            rules=[
                MetricRule(metric="accuracy", tolerance=0.03),
                MetricRule(metric="latency_p95_ms", kind="latency", higher_is_better=False, tolerance=0.5, relative=True),
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
            MetricRule(metric="latency_p95_ms", kind="latency", higher_is_better=False, tolerance=0.5, relative=True, min_samples=50),
        ],
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

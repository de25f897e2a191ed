"""The metrics a rollback rule may name, as plain values: how each is measured and which way is better.

They live in the base (not beside the RollbackPolicy block) so the response's decision code reads them
without importing Prefect; `prefect_crisis.blocks.rollback_policy` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricSpec:
    """What a metric name means: how it is measured and which way is better."""

    kind: Literal["rate", "latency"]
    higher_is_better: bool
    complement: str | None = None  # a rate whose value is 1 minus this one (the same fact)
    percentile: float | None = None  # latency: the percentile of the window's samples


METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec("rate", True, complement="error_rate"),
    "error_rate": MetricSpec("rate", False, complement="accuracy"),
    "latency_p50_ms": MetricSpec("latency", False, percentile=50),
    "latency_p90_ms": MetricSpec("latency", False, percentile=90),
    "latency_p95_ms": MetricSpec("latency", False, percentile=95),
    "latency_p99_ms": MetricSpec("latency", False, percentile=99),
}

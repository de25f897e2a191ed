"""One sweep of one model as a value (`ModelHealth`): both windows' metrics, the baseline, the confirmed breaches,
what served, its `ml.health.reported` payload and its log line; and the breaches escalated, one per metric."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect_crisis.core.vocabulary import Serving, Severity
from prefect_crisis.tasks.monitoring.health_rules import Breach, WindowMetrics, worst


@dataclass(frozen=True)
class ModelHealth:
    """One sweep of one model: both windows' metrics, the baselines, the confirmed breaches, and what
    served in the window (`serving`: a Serving value, None without a champion; `serving_since`: when the
    window's version began serving; `rows_left_out`: rows of the long window answered by another version
    or before it began serving)."""

    model: str
    version: str | None
    at: datetime
    long: WindowMetrics
    short: WindowMetrics
    baseline: dict[str, float]
    breaches: tuple[Breach, ...] = ()
    drifted_features: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    limits: dict[str, float] = field(default_factory=dict)  # "<metric>:<severity>" -> the line judged against (plots)
    serving: Serving | None = None
    serving_since: datetime | None = None
    rows_left_out: int = 0

    @property
    def severity(self) -> Severity | None:
        return worst(self.breaches)

    @property
    def healthy(self) -> bool:
        """No breach, and a model version serves (a model served by its fallback is never healthy)."""
        return not self.breaches and self.serving is not Serving.FALLBACK

    def payload(self) -> dict[str, Any]:
        """The `ml.health.reported` payload."""
        return {
            "metrics": self.long.to_dict(),
            "short_metrics": self.short.to_dict(),
            "baseline": self.baseline,
            "window_minutes": {"long": self.long.minutes, "short": self.short.minutes},
            "version": self.version,
            "breaches": [breach.rule for breach in self.breaches],
            "severity": self.severity.value if self.severity else None,
            "drifted_features": list(self.drifted_features),
            "notes": list(self.notes),
            "at": self.at.isoformat(),
            "serving": self.serving.value if self.serving else None,
            "serving_since": self.serving_since.isoformat() if self.serving_since else None,
            "rows_left_out": self.rows_left_out,
        }

    def line(self) -> str:
        """One log line."""
        metrics = self.long.to_dict()

        def shown(name: str, spec: str) -> str:
            value = metrics.get(name)
            return "n/a" if value is None else format(value, spec)

        verdict = "; ".join(str(breach) for breach in self.breaches) or ("served by its fallback" if self.serving is Serving.FALLBACK else "healthy")
        return (
            f"{self.model} v{self.version or '-'}{' (its fallback)' if self.serving is Serving.FALLBACK else ''}: "
            f"{int(metrics.get('requests') or 0)} requests, {int(metrics.get('rows') or 0)} rows, "
            f"error rate {shown('error_rate', '.2%')} of {metrics.get('error_rate_samples', 0)} labelled, "
            f"fallback {shown('fallback_share', '.1%')} (error rate {shown('fallback_error_rate', '.2%')} of {metrics.get('fallback_error_rate_samples', 0)}), "
            f"failed {shown('failed_row_share', '.1%')}, p95 {shown('latency_p95_ms', '.1f')} ms: {verdict}"
        )


def escalated(breaches: Iterable[Breach]) -> list[Breach]:
    """Per metric, only its most severe breach: an error rate past the emergency line is not also a
    warning and a critical, or one sweep would start a diagnosis, a rollback and an emergency stop
    at once, racing each other for the champion alias."""
    order = list(Severity)
    kept: dict[str, Breach] = {}
    for breach in breaches:
        held = kept.get(breach.metric)
        if held is None or order.index(breach.severity) > order.index(held.severity):
            kept[breach.metric] = breach
    return list(kept.values())

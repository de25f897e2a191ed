"""Health rules as small composable checks (after tenacity), judged on two windows.

A check looks at the metrics of a long and a short window and returns the
breaches it finds (an empty tuple: healthy); `check_a | check_b` returns the
breaches of both. A rule breaches only when it breaches on BOTH windows, in
the style of SRE multi-window burn-rate alerts: the long window says it is
not noise, the short one that it is still happening.

On the long window a rate is judged exactly as the rollback decision judges
it (`tasks.rollback.check_rule`: the optimistic end of the Wilson interval
must be past the limit, and never with fewer than `min_samples` samples), so
the monitor never raises a quality breach the response would find
inconclusive. The short window confirms with the plain value (at least
`short_min_samples` samples): it can only remove breaches, never add one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.errors import MonitoringError
from prefect_crisis.core.metrics import METRICS, MetricSpec
from prefect_crisis.core.vocabulary import Severity
from prefect_crisis.tasks.response.rules import LiveWindow, check_rule

if TYPE_CHECKING:
    from prefect_crisis.blocks.monitoring_policy import HealthRule, MonitoringPolicy


@dataclass(frozen=True)
class Measure:
    """One metric over one window: its value, how many samples it rests on, and for a
    rate the count of bad events (its numerator)."""

    value: float
    samples: int
    count: int | None = None


@dataclass(frozen=True)
class WindowMetrics:
    """Every metric measured over one window of the inference log (and the host)."""

    minutes: float
    measures: dict[str, Measure] = field(default_factory=dict)

    def get(self, metric: str) -> Measure | None:
        measure = self.measures.get(metric)
        return None if measure is None or math.isnan(measure.value) else measure

    def to_dict(self) -> dict[str, float | int | None]:
        """Flat values: `<metric>` and `<metric>_samples` (NaN as None, for JSON payloads)."""
        flat: dict[str, float | int | None] = {}
        for name, measure in self.measures.items():
            flat[name] = None if math.isnan(measure.value) else round(float(measure.value), 6)
            flat[f"{name}_samples"] = int(measure.samples)
        return flat


@dataclass(frozen=True)
class Judgement:
    """One rule on one window: breached or not, or `undecided` (why it could not be judged)."""

    breached: bool
    value: float | None = None
    limit: float | None = None
    bound: float | None = None  # the Wilson bound a rate was judged by
    samples: int = 0
    undecided: str = ""


@dataclass(frozen=True)
class Breach:
    """A rule confirmed on both windows: what the breach event carries."""

    rule: str
    metric: str
    severity: Severity
    value: float
    threshold: float
    samples: int
    bound: float | None
    short_value: float
    short_samples: int
    long_window_minutes: float
    short_window_minutes: float
    baseline: float | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "metric": self.metric,
            "severity": self.severity.value,
            "value": self.value,
            "threshold": self.threshold,
            "samples": self.samples,
            "bound": self.bound,
            "short_value": self.short_value,
            "short_samples": self.short_samples,
            "window_minutes": {"long": self.long_window_minutes, "short": self.short_window_minutes},
            "baseline": self.baseline,
        }

    def __str__(self) -> str:
        return (
            f"{self.severity.value} {self.rule}: {self.metric} {self.value:.4g} > {self.threshold:.4g} "
            f"(n={self.samples}; short window {self.short_value:.4g}, n={self.short_samples})"
        )


@dataclass(frozen=True)
class RateRule:
    """The rollback decision's rule (`MetricRule`) for the error rate with no tolerance, as `check_rule` reads it:
    the health rule's limit is its baseline, so a rate is judged by the same Wilson bound and the same comparison."""

    metric: str = "error_rate"
    tolerance: float = 0.0
    relative: bool = False
    min_samples: int = 0

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better


def judge_long(rule: HealthRule, window: WindowMetrics, baseline: dict[str, float], confidence: float) -> Judgement:
    """The rule on the long window: rates by the rollback decision's own `check_rule`."""
    measure = window.get(rule.metric)
    if measure is None:
        return Judgement(False, undecided=f"{rule.metric}: not measured")
    limit = rule.limit(baseline.get(rule.metric))
    if limit is None:
        return Judgement(False, measure.value, samples=measure.samples, undecided=f"{rule.metric}: no baseline")
    if measure.samples < rule.min_samples:
        return Judgement(
            False, measure.value, limit, samples=measure.samples, undecided=f"{rule.metric}: {measure.samples} samples < {rule.min_samples}"
        )
    if rule.spec.rate:
        # The limit is the rollback rule's baseline with no tolerance: the same Wilson bound, the same comparison.
        as_rollback_rule = RateRule(min_samples=rule.min_samples)  # pragma: no mutate
        live = LiveWindow({"error_rate": int(measure.count or 0)}, {"error_rate": measure.samples})
        violation = check_rule(as_rollback_rule, live, limit, confidence)
        if violation is not None:
            return Judgement(True, measure.value, limit, violation.bound, measure.samples)
        return Judgement(False, measure.value, limit, samples=measure.samples)
    past = measure.value > limit if rule.direction == "above" else measure.value < limit
    return Judgement(bool(past), measure.value, limit, samples=measure.samples)


def judge_short(rule: HealthRule, window: WindowMetrics, limit: float, min_samples: int) -> Judgement:
    """The rule on the short window: the plain value past the same limit, with at least `min_samples`."""
    measure = window.get(rule.metric)
    if measure is None:
        return Judgement(False, undecided=f"{rule.metric}: not measured in the short window")
    if measure.samples < min(min_samples, rule.min_samples):
        return Judgement(
            False, measure.value, limit, samples=measure.samples, undecided=f"{rule.metric}: {measure.samples} samples in the short window"
        )
    past = measure.value > limit if rule.direction == "above" else measure.value < limit
    return Judgement(bool(past), measure.value, limit, samples=measure.samples)


class HealthCheck(ABC):
    """Base of the health checks; compose with `|`."""

    @abstractmethod
    def __call__(self, long: WindowMetrics, short: WindowMetrics, baseline: dict[str, float]) -> tuple[Breach, ...]:
        """The breaches confirmed on both windows (empty: healthy)."""

    def __or__(self, other: HealthCheck) -> HealthCheck:
        return check_any(self, other)


class check_rule_on_windows(HealthCheck):
    """One HealthRule judged on the long and the short window.

    Example:
        >>> from prefect_crisis.blocks.monitoring_policy import HealthRule
        >>> rule = HealthRule(name="failed", metric="failed_row_share", severity="critical", threshold=0.05)
        >>> long = WindowMetrics(60, {"failed_row_share": Measure(0.3, 400, 120)})
        >>> short = WindowMetrics(5, {"failed_row_share": Measure(0.4, 30, 12)})
        >>> [b.rule for b in check_rule_on_windows(rule)(long, short, {})]
        ['failed']
        >>> check_rule_on_windows(rule)(long, WindowMetrics(5, {"failed_row_share": Measure(0.0, 30, 0)}), {})
        ()
    """

    def __init__(self, rule: HealthRule, *, confidence: float = 0.95, short_min_samples: int = 10):
        self.rule = rule
        self.confidence = confidence
        self.short_min_samples = short_min_samples

    def __call__(self, long: WindowMetrics, short: WindowMetrics, baseline: dict[str, float]) -> tuple[Breach, ...]:
        judged = judge_long(self.rule, long, baseline, self.confidence)
        if not judged.breached:
            return ()
        if judged.value is None or judged.limit is None:  # pragma: no mutate
            raise MonitoringError(f"rule {self.rule.name!r}: judged breached on the long window without a value and a limit")  # pragma: no mutate
        confirmed = judge_short(self.rule, short, judged.limit, self.short_min_samples)
        if not confirmed.breached:
            return ()
        if confirmed.value is None:
            raise MonitoringError(f"rule {self.rule.name!r}: judged breached on the short window without a value")  # pragma: no mutate
        return (
            Breach(
                self.rule.name,
                self.rule.metric,
                self.rule.severity,
                float(judged.value),
                float(judged.limit),
                judged.samples,
                judged.bound,
                float(confirmed.value),
                confirmed.samples,
                long.minutes,
                short.minutes,
                baseline.get(self.rule.metric),
            ),
        )


class check_any(HealthCheck):
    """Every breach of every check (a flat composition, like `stop_any`)."""

    def __init__(self, *checks: HealthCheck):
        self.checks: tuple[HealthCheck, ...] = tuple(
            part for check in checks for part in (check.checks if isinstance(check, check_any) else (check,))
        )

    def __call__(self, long: WindowMetrics, short: WindowMetrics, baseline: dict[str, float]) -> tuple[Breach, ...]:
        return tuple(breach for check in self.checks for breach in check(long, short, baseline))


def policy_checks(policy: MonitoringPolicy) -> HealthCheck:
    """The policy's rules composed into one check."""
    return check_any(
        *(check_rule_on_windows(rule, confidence=policy.confidence, short_min_samples=policy.short_min_samples) for rule in policy.rules)
    )


def worst(breaches: tuple[Breach, ...]) -> Severity | None:
    """The highest severity among the breaches; None when there is none."""
    order = list(Severity)
    return max((breach.severity for breach in breaches), key=order.index, default=None)

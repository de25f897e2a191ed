"""Judge a policy's metric rules on a live window, as plain functions over values.

The seed's rule fired when accuracy did *not* drop (it compared a relative change with `> -0.05`). Here a
metric is degraded only when the live window's confidence bound says so with enough samples; a rule that
cannot be judged (too few samples, no baseline, the metric not reported) is named, never skipped silently.

Rules and policies are read by their fields (`metric`, `tolerance`, `relative`, `min_samples`; `rules`,
`confidence`): the `RollbackPolicy` block, or any value shaped like it. Nothing here imports Prefect or MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import stats

from prefect_crisis.core.errors import PolicyError
from prefect_crisis.core.metrics import METRICS, MetricSpec
from prefect_crisis.core.vocabulary import MetricKind

if TYPE_CHECKING:
    from prefect_crisis.blocks.rollback_policy import RollbackPolicy

EMERGENCY_MIN_SAMPLES = 10  # an emergency judges a window this small (the Wilson bound asks it for a large gap)


class JudgedRule(Protocol):
    """What judging one metric reads of a rule: a rollback `MetricRule`, or the health monitor's `RateRule`."""

    @property
    def metric(self) -> str: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def higher_is_better(self) -> bool | None: ...
    @property
    def tolerance(self) -> float: ...
    @property
    def relative(self) -> bool: ...
    @property
    def spec(self) -> MetricSpec: ...


@dataclass(frozen=True)
class LiveWindow:
    """What the live model did recently: counts for rates, samples for latency.

    `successes[metric]` counts the rate's numerator: correct predictions for
    accuracy, errors for error_rate. Either one is enough; the other is
    derived (they are one fact).

    Example:
        >>> LiveWindow({"accuracy": 430}, {"accuracy": 1_000}).rate("error_rate")
        (0.57, 1000)
    """

    successes: dict[str, int]  # rate metric -> count of its numerator events
    samples: dict[str, int]  # rate metric -> trials
    latencies_ms: tuple[float, ...] = ()

    def rate(self, metric: str) -> tuple[float, int] | None:
        """(value, trials) of a rate, derived from its complement if need be; None: not reported."""
        if metric in self.samples:
            trials = self.samples[metric]
            return (self.successes.get(metric, 0) / trials if trials else math.nan), trials
        complement = METRICS[metric].complement if metric in METRICS else None
        if complement is not None and complement in self.samples:
            trials = self.samples[complement]
            return ((trials - self.successes.get(complement, 0)) / trials if trials else math.nan), trials
        return None

    def value(self, rule: JudgedRule) -> tuple[float, int] | None:
        """(value, samples) of the rule's metric; None when the window does not measure it."""
        if rule.kind == MetricKind.LATENCY:
            if not self.latencies_ms:
                return None
            percentile = rule.spec.percentile
            if percentile is None:
                raise PolicyError(f"{rule.metric} is a latency without a percentile: add one to its MetricSpec")
            return float(np.percentile(np.asarray(self.latencies_ms), percentile)), len(self.latencies_ms)
        return self.rate(rule.metric)


def accuracy_of(window: LiveWindow | None) -> float | None:
    """The window's accuracy; None when there is no window or it has no labelled row.

    Example:
        >>> accuracy_of(LiveWindow({"accuracy": 9}, {"accuracy": 10})), accuracy_of(LiveWindow({}, {"accuracy": 0})), accuracy_of(None)
        (0.9, None, None)
    """
    measured = window.rate("accuracy") if window is not None else None
    return None if measured is None or math.isnan(measured[0]) else measured[0]


def baseline_value(metric: str, baseline: dict[str, float]) -> float | None:
    """The baseline of `metric`, or 1 minus its complement's (accuracy <-> error_rate); None if neither.

    Example:
        >>> baseline_value("error_rate", {"accuracy": 0.9, "f1": 0.88})
        0.1
    """
    if metric in baseline:
        return baseline[metric]
    complement = METRICS[metric].complement if metric in METRICS else None
    if complement is not None and complement in baseline:
        return round(1.0 - baseline[complement], 12)
    return None


@dataclass(frozen=True)
class Violation:
    metric: str
    live: float
    bound: float
    baseline: float
    samples: int

    def __str__(self) -> str:
        return f"{self.metric} {self.live:.4g} (bound {self.bound:.4g}) vs baseline {self.baseline:.4g}, n={self.samples}"


@dataclass(frozen=True)
class RuleResults:
    """Every rule of a policy judged on one live window: nothing is skipped silently."""

    violations: tuple[Violation, ...] = ()
    undecided: tuple[str, ...] = ()  # rules that cannot be judged: each says why
    not_measured: tuple[str, ...] = ()  # latency rules with no latency samples at all


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Example:
        >>> [round(x, 3) for x in wilson_interval(80, 100)]
        [0.711, 0.867]
    """
    if trials == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def allowed_value(rule: JudgedRule, baseline: float) -> float:
    """The worst value the rule still accepts: the baseline moved by the tolerance (a fraction of it when `relative`).

    Example:
        >>> from types import SimpleNamespace as Rule
        >>> allowed_value(Rule(tolerance=0.5, relative=True, higher_is_better=False), 200.0)
        300.0
        >>> allowed_value(Rule(tolerance=0.02, relative=False, higher_is_better=True), 0.9)
        0.88
    """
    slack = rule.tolerance * abs(baseline) if rule.relative else rule.tolerance
    return baseline - slack if rule.higher_is_better else baseline + slack


def check_rule(rule: JudgedRule, live: LiveWindow, baseline: float, confidence: float) -> Violation | None:
    """A violation when the live metric is worse than allowed beyond doubt.

    For rates the *optimistic* end of the Wilson interval must still be worse
    than the allowed value, so one noisy window does not roll back a model.
    """
    measured = live.value(rule)
    if measured is None or math.isnan(measured[0]):
        return None
    value, samples = measured
    allowed = allowed_value(rule, baseline)
    if rule.kind == MetricKind.RATE:
        low, high = wilson_interval(round(value * samples), samples, confidence)
        bound = high if rule.higher_is_better else low
    else:
        bound = value
    worse = bound < allowed if rule.higher_is_better else bound > allowed
    return Violation(rule.metric, value, bound, baseline, samples) if worse else None


def judge_rules(live: LiveWindow, baseline: dict[str, float], policy: RollbackPolicy, *, min_samples_cap: int | None = None) -> RuleResults:
    """Judge every rule; a rule that cannot be judged is named in `undecided`.

    A latency rule with no latency samples at all is `not_measured` (latency
    is not collected), which does not stand in the way of a HOLD.
    `min_samples_cap`: judge with at most this many samples required (an emergency does not wait for more;
    the Wilson bound still asks a small window for a large gap).

    Example:
        >>> from prefect_crisis.blocks.rollback_policy import MetricRule, RollbackPolicy
        >>> policy = RollbackPolicy(rules=[MetricRule(metric="error_rate", tolerance=0.02)])
        >>> judge_rules(LiveWindow({"accuracy": 430}, {"accuracy": 1_000}), {"accuracy": 0.9}, policy).violations[0].metric
        'error_rate'
    """
    violations, undecided, not_measured = [], [], []
    for rule in policy.rules:
        measured = live.value(rule)
        if measured is None:
            if rule.kind == MetricKind.LATENCY:
                not_measured.append(f"{rule.metric} (no latency samples)")
            else:
                undecided.append(f"{rule.metric}: the live window does not report it")
            continue
        reference = baseline_value(rule.metric, baseline)
        if reference is None:
            known = ", ".join(sorted(baseline)) or "none"
            undecided.append(f"{rule.metric}: no baseline (the champion records {known})")
            continue
        _, samples = measured
        needed = rule.min_samples if min_samples_cap is None else min(rule.min_samples, min_samples_cap)
        if samples < needed:
            undecided.append(f"{rule.metric}: {samples} samples < {needed}")
            continue
        violation = check_rule(rule, live, reference, policy.confidence)
        if violation:
            violations.append(violation)
    return RuleResults(tuple(violations), tuple(undecided), tuple(not_measured))

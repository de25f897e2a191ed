"""Health monitoring (seed slides 6 and 10): model, system and data metrics over
a long and a short window of the inference log, judged by the MonitoringPolicy's
rules, reported as `ml.breach.<severity>` and `ml.health.reported` events.

A window belongs to one serving version: the rows logged since the current
champion took the alias (the registry's audit says when), without the rows a
previous version answered. Rows the fallback answered stay in the window for the
serving figures (fallback share, failed rows, requests) but are judged apart
(`fallback_error_rate`): they are never the champion's errors or successes.
While the champion is the model's fallback version, the sweep says so
(`serving: "fallback"`) and never calls the model healthy.

The windows and their metrics are plain functions over plain data
(tasks/monitoring/windows.py), the rules plain values (tasks/monitoring/health_rules.py);
this module reads the log, the registry and the host, and reports.

The sweep's result is `model_health`, the version it judges and its rows `serving_window`, the metric history
`sweep_history`; their names still import from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import psutil
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.blocks.registry import ModelRegistry, first_line
from prefect_crisis.core.errors import CrisisError, MonitoringError
from prefect_crisis.core.paths import crisis_home, validate_model_name
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import SERVING_LABEL, CrisisEvent, Serving, Severity, TagKey, VersionRole, is_drill_model
from prefect_crisis.tasks.loading import saved_block
from prefect_crisis.tasks.monitoring.health_rules import HealthCheck, Measure, policy_checks
from prefect_crisis.tasks.monitoring.model_health import ModelHealth, escalated
from prefect_crisis.tasks.monitoring.serving_window import ServingVersion, champion_began, serving_rows
from prefect_crisis.tasks.monitoring.sweep_history import append_history, history_path, metric_history  # noqa: F401 - imported from here before the split
from prefect_crisis.tasks.monitoring.windows import (  # noqa: F401 - the windows' functions, imported from here before
    HISTORY_BASELINE_METRICS,
    LABELLED_METRICS,
    MIN_HISTORY_SWEEPS,
    _rate,
    _refused,
    _since,
    baseline_of,
    error_rate,
    input_drift,
    model_metrics,
    split_windows,
    window_pair,
)
from prefect_crisis.tasks.response.candidates import promotion_guarded, promotions_over
from prefect_crisis.tasks.serving.inference_log import logged_models, read_window
from prefect_crisis.tasks.validation.references import load_reference

# tests/unit/test_docstrings.py runs this module's examples; those of the modules split out of it run with them.
__test__ = {
    "split_out": """
>>> import doctest
>>> from prefect_crisis.tasks.monitoring import model_health, serving_window, sweep_history
>>> [doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS).failed for module in (model_health, serving_window, sweep_history)]
[0, 0, 0]
"""
}

BREACH_EVENTS = {
    Severity.WARNING: CrisisEvent.BREACH_WARNING,
    Severity.CRITICAL: CrisisEvent.BREACH_CRITICAL,
    Severity.EMERGENCY: CrisisEvent.BREACH_EMERGENCY,
}


def system_metrics(path: Path | None = None) -> dict[str, Measure]:
    """CPU, memory and disk use (%) of the host the monitor runs on; disk: the disk of `path`
    (the state folder by default, or its nearest existing parent)."""
    folder = Path(path or crisis_home())
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return {
        "cpu_percent": Measure(float(psutil.cpu_percent(interval=0.1)), 1),
        "memory_percent": Measure(float(psutil.virtual_memory().percent), 1),
        "disk_percent": Measure(float(psutil.disk_usage(str(folder)).percent), 1),
    }


def _replaced_metrics(registry: ModelRegistry, version: str) -> dict[str, float] | None:
    """The registered metrics of the version `version` was last promoted over; None when it became champion otherwise."""
    try:
        replaced = promotions_over(registry.audit_trail(registry.champion_alias)).get(version)
        return dict(registry.version(replaced).metrics) if replaced else None
    except (CrisisError, MlflowException):
        return None  # unreadable now: the champion's own figures


def read_champion(registry: ModelRegistry) -> tuple[str | None, dict[str, float]]:
    """(version, registered metrics none looser than the version it was promoted over) of the champion;
    (None, {}) when there is none yet.

    Raises:
        MonitoringError: the registry cannot be read.
    """
    champion = registry.champion()
    if champion is not None:
        return champion.version, promotion_guarded(champion.metrics, _replaced_metrics(registry, champion.version))
    try:  # `champion()` says None for an unreachable registry too: tell the two apart
        registry.client.search_registered_models(max_results=1)
    except MlflowException as error:
        raise MonitoringError(
            f"cannot read the champion of {registry.model_name!r} from {registry.display_tracking_uri}: {first_line(str(error))} "
            "(check the registry server and MLFLOW_TRACKING_URI)"
        ) from None
    return None, {}


def _is_fallback(registry: ModelRegistry, version: str) -> bool:
    """The version is the model's fallback: tagged so, or under the fallback alias too."""
    found = registry.client.get_model_version(registry.model_name, str(version))
    return (found.tags or {}).get(TagKey.ROLE) == VersionRole.FALLBACK or registry.fallback_alias in (found.aliases or ())


def read_serving(registry: ModelRegistry) -> ServingVersion:
    """The champion (`read_champion`), since when it serves, and whether it is the model's fallback.

    Raises:
        MonitoringError: the registry cannot be read.
    """
    version, registered = read_champion(registry)
    if version is None:
        return ServingVersion(None, {})
    notes = []
    try:
        since = champion_began(registry.audit_trail(registry.champion_alias), registry.champion_alias, version)
        if since is None:
            notes.append(
                f"v{version} took @{registry.champion_alias} outside the audit: its window starts after the last row another version answered"
            )
    except (CrisisError, MlflowException) as error:
        since = None
        notes.append(f"the audit cannot be read ({first_line(str(error))}): v{version}'s window starts after the last row another version answered")
    try:
        serving = Serving.FALLBACK if _is_fallback(registry, version) else Serving.CHAMPION
    except MlflowException as error:
        raise MonitoringError(
            f"cannot read v{version} of {registry.model_name!r} from {registry.display_tracking_uri}: {first_line(str(error))} "
            "(check the registry server and MLFLOW_TRACKING_URI)"
        ) from None
    return ServingVersion(version, registered, since, serving, tuple(notes))


def sweep_model(
    model: str,
    log: InferenceLog,
    policy: MonitoringPolicy,
    registry: ModelRegistry,
    *,
    now: datetime,
    checks: HealthCheck | None = None,
    system: dict[str, Measure] | None = None,
    contract: DataContract | None = None,
    reference: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
) -> ModelHealth:
    """Measure and judge one model at `now`, on the window of the version that serves (`serving_rows`).

    Raises:
        MonitoringError: the champion cannot be read.
        InferenceLogError: the inference log cannot be read.
    """
    serving = read_serving(registry)
    logged = read_window(log, model, now - timedelta(minutes=policy.long_window_minutes), now, labelled_only=False)
    frame, began = serving_rows(logged, serving.version, serving.since)
    long, short, drifted = window_pair(frame, now, policy, system=system, contract=contract, reference=reference)
    baseline = baseline_of(serving.registered, history)
    notes = list(serving.notes)
    if serving.version is None:
        notes.append(f"no champion of {model!r} in {registry.display_tracking_uri}: rules relative to a baseline not judged")
    if serving.serving is Serving.FALLBACK:
        notes.append(
            f"served by its fallback v{serving.version}: judged against the fallback's own figures, which says nothing of the model; "
            "a good version is still to be found"
        )
    left_out = len(logged) - len(frame)
    if left_out:
        notes.append(f"{left_out} rows answered by another version or before v{serving.version} began serving left out")
    breaches = (checks or policy_checks(policy))(long, short, baseline)
    return ModelHealth(
        model,
        serving.version,
        now,
        long,
        short,
        baseline,
        breaches,
        drifted,
        tuple(notes),
        rule_limits(policy, baseline),
        serving.serving,
        began,
        left_out,
    )


def rule_limits(policy: MonitoringPolicy, baseline: dict[str, float]) -> dict[str, float]:
    """Per metric and severity, the tightest line the policy's rules draw with this baseline.

    Example:
        >>> rule_limits(MonitoringPolicy(), {"error_rate": 0.08})["error_rate:critical"]
        0.18
    """
    limits: dict[str, float] = {}
    for rule in policy.rules:
        limit = rule.limit(baseline.get(rule.metric))
        if limit is not None:
            key = f"{rule.metric}:{rule.severity.value}"
            limits[key] = round(min(limit, limits.get(key, limit)), 6)
    return limits


def report_health(health: ModelHealth, timeline: Timeline) -> None:
    """One `ml.breach.<severity>` per breaching metric (its most severe rule), then `ml.health.reported`."""
    for breach in escalated(health.breaches):
        timeline.emit(BREACH_EVENTS[breach.severity], health.model, breach.payload(), version=health.version)
    labels = {SERVING_LABEL: health.serving.value} if health.serving else None
    timeline.emit(CrisisEvent.HEALTH_REPORTED, health.model, health.payload(), version=health.version, labels=labels)


# -- the sweep of many models, and its tasks ------------------------------------------------------


def models_to_sweep(
    log: InferenceLog,
    now: datetime,
    minutes: float,
    model_names: Iterable[str] | None = None,
    model_name: str | None = None,
    drill_minutes: float | None = None,
) -> list[str]:
    """The models named (either parameter, or both), else every model with records in the last `minutes`; a drill
    model (`drill-*`) only while it has records in the last `drill_minutes` (the short window): the schedule stays
    the safety net of a drill in progress, and stops judging its faults soon after the drill ended."""
    named = list(dict.fromkeys([*(model_names or []), *([model_name] if model_name else [])]))
    for name in named:
        validate_model_name(name)
    if named:
        return named
    models = logged_models(log, now - timedelta(minutes=minutes), now)
    if not any(is_drill_model(model) for model in models):
        return models  # the usual case: one query
    recent = set(logged_models(log, now - timedelta(minutes=drill_minutes), now)) if drill_minutes else set()
    return [model for model in models if not is_drill_model(model) or model in recent]


def load_drift_reference(policy: MonitoringPolicy) -> tuple[DataContract | None, pd.DataFrame | None]:
    """The policy's contract and its reference; (None, None) when no contract is named.

    Raises:
        MonitoringError: the contract names no reference_uri.
    """
    if not policy.contract_block:
        return None, None
    contract = saved_block(DataContract, policy.contract_block)
    if not contract.reference_uri:
        raise MonitoringError(
            f"data contract {policy.contract_block!r} has no reference_uri: drift needs one (or drop contract_block from the policy)"
        )
    return contract, load_reference(contract.reference_uri)


@task(name="sweep-model", cache_policy=NO_CACHE)
def sweep_model_task(
    model: str,
    log: InferenceLog,
    policy: MonitoringPolicy,
    *,
    now: datetime,
    system: dict[str, Measure] | None = None,
    contract: DataContract | None = None,
    reference: pd.DataFrame | None = None,
    registry_for: Callable[[str], ModelRegistry] | None = None,
    timeline: Timeline | None = None,
) -> ModelHealth:
    """Sweep one model, report it (events, history) and log one line."""
    registry = (registry_for or (lambda name: ModelRegistry(model_name=name)))(model)
    history = metric_history(model)
    health = sweep_model(model, log, policy, registry, now=now, system=system, contract=contract, reference=reference, history=history)
    report_health(health, timeline or Timeline())
    append_history(health, policy.history_sweeps)
    get_run_logger().info(health.line())
    return health

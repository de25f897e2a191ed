"""Monitoring: windows of the inference log, health rules, the dashboard and its plots.

Pure (neither Prefect nor MLflow): `windows` (the inference log's windows and their metrics), `health_rules`
(a rule judged on two windows), `dashboard_view` (the
dashboard's values and markdown), `health_plot`, `model_health` (one sweep's result), `serving_window` (the
version a sweep judges and its rows); adapters (`ADAPTERS`): `sweep` (reads the log, the registry, the host;
reports events), `sweep_history` (the sweeps' parquet history), `dashboard` (gathers the dashboard, publishes its
artifacts).

Names are imported on first use (PEP 562), so importing one part does not load the rest."""

from prefect_crisis.core.lazy import lazy_exports

# The submodules that may import Prefect or MLflow (directly, or through prefect_crisis.blocks, core.timeline,
# core.connection or core.paths); every other submodule is pure (tests/unit/test_layers.py checks it).
ADAPTERS = frozenset({"dashboard", "sweep", "sweep_history"})

_EXPORTS = {
    "Dashboard": "dashboard_view",
    "HISTORY_COLUMNS": "dashboard_view",
    "LEVELS": "dashboard_view",
    "champion_sweep": "dashboard_view",
    "crisis_level": "dashboard_view",
    "dashboard_due": "dashboard_view",
    "dashboard_markdown": "dashboard_view",
    "fallback_quality": "dashboard",
    "gather_dashboard": "dashboard",
    "incident_run": "dashboard",
    "incident_runs": "dashboard",
    "log_health_plot": "dashboard",
    "publish_dashboard": "dashboard",
    "read_dashboard": "dashboard",
    "recent_incidents": "dashboard",
    "refresh_dashboard": "dashboard",
    "shown_time": "dashboard_view",
    "sweeps_of": "dashboard_view",
    "MARK_STYLE": "health_plot",
    "PANELS": "health_plot",
    "SEVERITY_STYLE": "health_plot",
    "VERSION_COLOURS": "health_plot",
    "plot_health": "health_plot",
    "version_segments": "health_plot",
    "Breach": "health_rules",
    "HealthCheck": "health_rules",
    "Judgement": "health_rules",
    "Measure": "health_rules",
    "RateRule": "health_rules",
    "WindowMetrics": "health_rules",
    "check_any": "health_rules",
    "check_rule_on_windows": "health_rules",
    "judge_long": "health_rules",
    "judge_short": "health_rules",
    "policy_checks": "health_rules",
    "worst": "health_rules",
    "BREACH_EVENTS": "sweep",
    "HISTORY_BASELINE_METRICS": "windows",
    "LABELLED_METRICS": "windows",
    "MIN_HISTORY_SWEEPS": "windows",
    "ModelHealth": "model_health",
    "ServingVersion": "serving_window",
    "append_history": "sweep_history",
    "baseline_of": "windows",
    "champion_began": "serving_window",
    "error_rate": "windows",
    "escalated": "model_health",
    "history_path": "sweep_history",
    "input_drift": "windows",
    "load_drift_reference": "sweep",
    "metric_history": "sweep_history",
    "model_metrics": "windows",
    "models_to_sweep": "sweep",
    "read_champion": "sweep",
    "read_serving": "sweep",
    "report_health": "sweep",
    "rule_limits": "sweep",
    "serving_rows": "serving_window",
    "split_windows": "windows",
    "sweep_model": "sweep",
    "sweep_model_task": "sweep",
    "system_metrics": "sweep",
    "window_pair": "windows",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

"""The crisis dashboard of one model: what serves, how it is, what happened.

`read_dashboard` gathers it from the places that already hold the truth (the
MLflow registry and its audit, the monitor's metric history, the incidents'
Prefect events, the emergency Variable); `dashboard_markdown` renders it for
the keyed Prefect artifact `crisis-dashboard-<model>` (the Artifacts page of
the UI keeps its versions); `publish_dashboard` writes it, with the metric
history and the audit as keyed table artifacts. `crisis status MODEL` prints
the same state in the terminal.

The crisis level now: `emergency` while the model's emergency stop is in
force; else the worst severity of the latest health sweep when that sweep
breached and the champion has not moved since; else `ok`. A model served by
its fallback (the champion alias on the fallback version) is at least at
`warning`: the fallback is a stopgap, not a healthy model.

The champion's health is the latest sweep of the current champion since it
took the alias (`champion_health`; None until the monitor has swept it); the
fallback's figures (share of rows, error rate of its labelled rows) are
counted apart in it.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_crisis.blocks.registry import AliasMove, ModelRegistry
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.paths import artifact_key, ensure_experiment, mlflow_run_link, mlflow_ui_url
from prefect_crisis.core.vocabulary import INCIDENT_EXPERIMENT, Serving, TagKey
from prefect_crisis.tasks.monitoring.dashboard_view import (  # noqa: F401 - the dashboard's values, imported from here before
    HISTORY_COLUMNS,
    LEVELS,
    Dashboard,
    _iso,
    _percent,
    _run_links,
    _seconds,
    _since,
    _v,
    champion_sweep,
    crisis_level,
    dashboard_due,
    dashboard_markdown,
    shown_time,
    sweeps_of,
)
from prefect_crisis.tasks.monitoring.health_plot import plot_health


def read_dashboard(
    registry: ModelRegistry,
    history: pd.DataFrame | None = None,
    incidents: list[dict[str, Any]] | None = None,
    emergency: dict[str, Any] | None = None,
    now: datetime | None = None,
    mlflow_ui: str | None = None,
) -> Dashboard:
    """The model's dashboard from its registry and what the caller read elsewhere (plain data: testable without a server).

    Args:
        history: the monitor's metric history (`tasks.monitoring.metric_history`).
        incidents: the last incidents, newest first (`recent_incidents`).
        emergency: the model's emergency record as a dict, None when no stop is in force.

    Raises:
        RegistryError: the model is not registered in the registry's store.
    """
    aliases = registry.aliases()
    if aliases is None:
        raise RegistryError(f"no model {registry.model_name!r} in {registry.display_tracking_uri}: check the name")
    moves = registry.audit_trail()
    versions = {}
    for role, alias in (("champion", registry.champion_alias), ("challenger", registry.challenger_alias), ("fallback", registry.fallback_alias)):
        version = aliases.get(alias)
        versions[role] = {"version": version, "since": _since(moves, alias, version) if version else None}
    if versions["fallback"]["version"]:
        versions["fallback"]["quality"] = fallback_quality(registry, versions["fallback"]["version"])
    sweeps = sweeps_of(history if history is not None else pd.DataFrame())
    latest = sweeps[-1] if sweeps else None
    champion = versions["champion"]
    health = champion_sweep(sweeps, champion["version"], champion["since"])
    by_fallback = champion["version"] is not None and (
        champion["version"] == versions["fallback"]["version"] or (health or {}).get("serving") == Serving.FALLBACK
    )
    serving = None if champion["version"] is None else (Serving.FALLBACK if by_fallback else Serving.CHAMPION).value
    champion_moves = [move.at for move in moves if move.alias == registry.champion_alias and move.applied]
    level = crisis_level(emergency, latest, max(champion_moves) if champion_moves else None, served_by_fallback=by_fallback)
    actions = [
        {
            "at": _iso(move.at),
            "action": move.action,
            "alias": move.alias,
            "from": move.from_version,
            "to": move.to_version,
            "outcome": move.outcome,
            "incident": move.incident,
            "reason": move.reason,
        }
        for move in sorted(moves, key=lambda move: move.at, reverse=True)[:8]
    ]
    incidents = [_recovered_from_audit(dict(item), moves, registry.champion_alias) for item in list(incidents or [])[:5]]
    return Dashboard(
        model=registry.model_name,
        level=level,
        at=(now or datetime.now(UTC)).isoformat(),
        versions=versions,
        latest_sweep=latest,
        breaches=[sweep for sweep in reversed(sweeps) if sweep.get("severity")][:8],
        actions=actions,
        incidents=incidents,
        emergency=emergency,
        champion_moves=[
            {
                "at": _iso(move.at),
                "action": move.action,
                "alias": move.alias,
                "from": move.from_version,
                "to": move.to_version,
                "outcome": move.outcome,
            }
            for move in sorted(moves, key=lambda move: move.at, reverse=True)
            if move.alias == registry.champion_alias and move.applied
        ][:50],
        mlflow_ui=mlflow_ui,
        serving=serving,
        champion_health=health,
    )


def _recovered_from_audit(incident: dict[str, Any], moves: list[AliasMove], champion_alias: str) -> dict[str, Any]:
    """Fill a missing time to recover from the audit: the incident's applied champion move is the recovery as
    the registry saw it (the incident's own events may still be on their way to the server)."""
    if incident.get("time_to_recover_s") is not None or not incident.get("opened_at"):
        return incident
    landed = [move.at for move in moves if move.incident == incident.get("id") and move.applied and move.alias == champion_alias]
    if landed:
        incident["time_to_recover_s"] = round((pd.Timestamp(max(landed)) - pd.Timestamp(incident["opened_at"])).total_seconds(), 3)
    return incident


def incident_runs(client, model: str, limit: int = 50) -> dict[str, tuple[str, str]]:
    """The model's incidents' MLflow runs (experiment `crisis-incidents`): incident id -> (experiment id, run id), newest run kept."""
    experiment = client.get_experiment_by_name(INCIDENT_EXPERIMENT)
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TagKey.MODEL}` = '{model}'", max_results=limit, order_by=["attributes.start_time DESC"]
    )
    found: dict[str, tuple[str, str]] = {}
    for run in runs:
        incident = run.data.tags.get(TagKey.INCIDENT)
        if incident and incident not in found:
            found[incident] = (run.info.experiment_id, run.info.run_id)
    return found


def incident_run(client, model: str, incident: str) -> str:
    """The run id of the incident's MLflow run (the diagnosis made it), created when the incident has none
    (an emergency stop diagnoses nothing)."""
    known = incident_runs(client, model).get(incident)
    if known is not None:
        return known[1]
    run = client.create_run(
        ensure_experiment(client, INCIDENT_EXPERIMENT), tags={TagKey.MODEL: model, TagKey.INCIDENT: incident}, run_name=f"incident-{model}-{incident}"
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_health_plot(client, run_id: str, png: bytes) -> None:
    """Write the health plot as `health.png` into the run's artifacts."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "health.png"
        path.write_bytes(png)
        client.log_artifact(run_id, str(path))


def recent_incidents(model: str, limit: int = 5, ui_url: str | None = None) -> list[dict[str, Any]]:
    """The model's last incidents from the Prefect server, newest first: id, severity, opened, times, the run's link."""
    from prefect_crisis.core.errors import IncidentError
    from prefect_crisis.tasks.response.report import build_report, first_symptom, incident_events, opened_incidents

    found = []
    for opened in list(reversed(opened_incidents(model)))[:limit]:
        identifier = opened.payload.get("id") or opened.payload.get("incident")
        runs = [related.id.rsplit(".", 1)[-1] for related in opened.related if related.role == "flow-run"]
        entry = {
            "id": identifier,
            "severity": opened.payload.get("severity"),
            "violation": opened.payload.get("violation"),
            "opened_at": _iso(opened.occurred),
            "flow_run": runs[0] if runs else None,
            "link": f"{ui_url}/runs/flow-run/{runs[0]}" if ui_url and runs else None,
        }
        try:  # the times only: the audit's rows (the report's other steps) are read once, by read_dashboard
            if identifier is None:
                raise IncidentError("the incident's opening event names no incident id: no report to time")
            symptom = first_symptom(model, opened, opened.payload.get("triggering_event_id"))
            report = build_report(incident_events(identifier), symptom_at=symptom).to_dict()
            entry.update(time_to_detect_s=report["time_to_detect_s"], time_to_recover_s=report["time_to_recover_s"])
        except IncidentError:
            entry.update(time_to_detect_s=None, time_to_recover_s=None)
        found.append(entry)
    return found


def fallback_quality(registry: ModelRegistry, version: str) -> str:
    """A line on the fallback model's quality as its training recorded it: its holdout accuracy, against the primary's, and
    whether it reached its bar (`crisis.fallback.meets_bar`); a fallback that misses it makes the ladder prefer rollback harder.

    Example:
        >>> from types import SimpleNamespace as Info
        >>> registry = Info(version=lambda v: Info(metrics={"accuracy": 0.875, "accuracy_ratio": 0.915}, tags={TagKey.FALLBACK_MEETS_BAR: "true"}))
        >>> fallback_quality(registry, "2")
        'holdout accuracy 87.5% (0.92 x the primary): meets its bar'
    """
    info = registry.version(version)
    accuracy, ratio = info.metrics.get("accuracy"), info.metrics.get("accuracy_ratio")
    shown = (
        "holdout accuracy " + ("not recorded" if accuracy is None else f"{accuracy:.1%}") + ("" if ratio is None else f" ({ratio:.2f} x the primary)")
    )
    verdict = {"true": "meets its bar", "false": "MISSES its bar: the ladder prefers any version that served to it"}.get(
        info.tags.get(TagKey.FALLBACK_MEETS_BAR, ""), "its bar not recorded"
    )
    return f"{shown}: {verdict}"


def gather_dashboard(registry: ModelRegistry) -> tuple[Dashboard, pd.DataFrame]:
    """The dashboard read from the stack this process talks to (Prefect for incidents and the emergency
    Variable, the monitor's history, the registry), and the metric history it used.

    Raises:
        RegistryError: the model is not registered.
    """
    from prefect.settings import PREFECT_UI_URL

    from prefect_crisis.tasks.monitoring.sweep import metric_history
    from prefect_crisis.tasks.response.emergency import EmergencyRecord

    record = EmergencyRecord.read(registry.model_name)
    history = metric_history(registry.model_name)
    incidents = recent_incidents(registry.model_name, ui_url=PREFECT_UI_URL.value())
    ui = mlflow_ui_url()
    if incidents:
        runs = incident_runs(registry.client, registry.model_name)
        for entry in incidents:
            run = runs.get(entry["id"])  # (experiment id, run id)
            entry.update(mlflow_run=run[1] if run else None, mlflow_link=mlflow_run_link(ui, *run) if run else None)
    board = read_dashboard(registry, history, incidents, asdict(record) if record else None, mlflow_ui=ui)
    return board, history


@task(name="publish-dashboard", cache_policy=NO_CACHE)
def publish_dashboard(registry: ModelRegistry, incident: str | None = None) -> Dashboard:
    """Refresh the model's keyed artifacts: `crisis-dashboard-<model>` (markdown with the health plot),
    `crisis-metrics-<model>` (the metric history) and `crisis-audit-<model>` (the registry's audit); with
    `incident`, the health plot also goes to that incident's MLflow run as `health.png`. Returns the dashboard."""
    board, history = gather_dashboard(registry)
    plot = plot_health(registry.model_name, history, board.champion_moves, registry.champion_alias, now=board.at)
    if incident:
        log_health_plot(registry.client, incident_run(registry.client, registry.model_name, incident), plot)
    create_markdown_artifact(
        key=artifact_key("crisis-dashboard", registry.model_name),
        markdown=dashboard_markdown(board, plot),
        description=f"crisis dashboard of {registry.model_name}: {board.level}",
    )
    sweeps = sweeps_of(history)[-200:]
    if sweeps:
        create_table_artifact(
            key=artifact_key("crisis-metrics", registry.model_name),
            table=sweeps,
            description=f"health sweeps of {registry.model_name}, oldest first (last 200)",
        )
    if board.actions:
        create_table_artifact(
            key=artifact_key("crisis-audit", registry.model_name),
            table=board.actions,
            description=f"the registry's audit of {registry.model_name}, newest first",
        )
    return board


def refresh_dashboard(registry: ModelRegistry, logger: Any = None, incident: str | None = None) -> Dashboard | None:
    """`publish_dashboard` for the calling flow, never failing it: a warning instead. Skipped for a model the
    registry does not know (a mistyped name makes no dashboard)."""
    if registry.aliases() is None:
        return None
    state = publish_dashboard(registry, incident, return_state=True)
    if state.is_completed():
        return state.result()
    if logger is not None:
        logger.warning("dashboard of %s not refreshed: %s", registry.model_name, state.message)
    return None

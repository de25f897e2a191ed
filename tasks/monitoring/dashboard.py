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

import base64
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
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
from prefect_crisis.tasks.monitoring.health_plot import plot_health

LEVELS = ("ok", "warning", "critical", "emergency")
HISTORY_COLUMNS = (
    "at", "version", "serving", "serving_since", "severity", "rows", "rows_left_out", "error_rate", "error_rate_samples", "fallback_share",
    "fallback_error_rate", "fallback_error_rate_samples", "failed_row_share", "latency_p95_ms",
)


@dataclass(frozen=True)
class Dashboard:
    """One model's crisis picture (plain values: it goes to markdown, a rich table and JSON alike)."""

    model: str
    level: str
    at: str
    versions: dict[str, dict[str, Any]]  # role -> {version, since}
    latest_sweep: dict[str, Any] | None = None
    breaches: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    emergency: dict[str, Any] | None = None
    champion_moves: list[dict[str, Any]] = field(default_factory=list)  # applied champion moves, newest first (the plot's marks and band)
    mlflow_ui: str | None = None  # where people open the MLflow UI, for links
    serving: str | None = None  # a Serving value: "fallback" while the champion is the fallback version; None: no champion
    champion_health: dict[str, Any] | None = None  # the latest sweep of the current champion since it took the alias

    @property
    def in_crisis(self) -> bool:
        return self.level != "ok"

    @property
    def served_by_fallback(self) -> bool:
        return self.serving == Serving.FALLBACK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_crisis": self.in_crisis}


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def _since(moves: list[AliasMove], alias: str, version: str | None) -> str | None:
    """When `alias` last moved to `version`, from the audit (None: never moved by this project)."""
    landed = [move.at for move in moves if move.alias == alias and move.applied and move.to_version == version]
    return _iso(max(landed)) if landed else None


def crisis_level(
    emergency: dict[str, Any] | None, latest: dict[str, Any] | None, champion_moved_at: datetime | None, *, served_by_fallback: bool = False
) -> str:
    """The level now (see the module docstring).

    Example:
        >>> crisis_level(None, {"severity": "critical", "at": "2026-01-01T10:00:00+00:00"}, None)
        'critical'
        >>> from datetime import datetime, timezone
        >>> crisis_level(None, {"severity": "critical", "at": "2026-01-01T10:00:00+00:00"}, datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc))
        'ok'
        >>> crisis_level({"incident": "inc-1"}, None, None)
        'emergency'
        >>> crisis_level(None, None, None, served_by_fallback=True)
        'warning'
    """
    if emergency is not None:
        return "emergency"
    floor = "warning" if served_by_fallback else "ok"
    severity = (latest or {}).get("severity")
    if not severity or severity not in LEVELS:
        return floor
    swept_at = pd.Timestamp(latest["at"])
    if champion_moved_at is not None and pd.Timestamp(champion_moved_at) > swept_at:
        return floor  # the response acted after the sweep that breached: the next sweep judges the new champion
    return max(severity, floor, key=LEVELS.index)


def champion_sweep(sweeps: list[dict[str, Any]], version: str | None, since: str | None) -> dict[str, Any] | None:
    """The latest sweep that judged `version` after it took the champion alias at `since` (ISO; None: unknown).

    Example:
        >>> sweeps = [{"at": "2026-01-01T10:00:00+00:00", "version": "2"}, {"at": "2026-01-01T10:10:00+00:00", "version": "3"}]
        >>> champion_sweep(sweeps, "2", None)["at"], champion_sweep(sweeps, "3", "2026-01-01T10:20:00+00:00")
        ('2026-01-01T10:00:00+00:00', None)
    """
    for sweep in reversed(sweeps):
        if version is not None and str(sweep.get("version")) == str(version):
            return sweep if since is None or pd.Timestamp(sweep["at"]) >= pd.Timestamp(since) else None
    return None


def sweeps_of(history: pd.DataFrame) -> list[dict[str, Any]]:
    """The metric history's rows as plain dicts (the columns the dashboard shows), oldest first."""
    if history is None or history.empty:
        return []
    shown = history[[column for column in HISTORY_COLUMNS if column in history.columns]].copy()
    rows = []
    for row in shown.to_dict("records"):
        row["at"] = _iso(row.get("at"))
        rows.append({key: (None if isinstance(value, float) and pd.isna(value) else value) for key, value in row.items()})
    return rows


def dashboard_due(history: pd.DataFrame, every_minutes: float) -> bool:
    """Whether the sweep just recorded (the history's last row) should refresh the dashboard: it breached,
    its severity or serving version differs from the sweep before, or it is the first sweep of a new
    `every_minutes` period (so a healthy model's dashboard is at most that old, without a new artifact
    version per sweep).

    Example:
        >>> h = pd.DataFrame({"at": pd.to_datetime(["2026-01-01T10:01Z", "2026-01-01T10:02Z"]), "version": ["1", "1"], "severity": [None, None]})
        >>> dashboard_due(h, 10), dashboard_due(h, 0)
        (False, True)
        >>> dashboard_due(h.assign(severity=[None, "warning"]), 10)
        True
    """
    if history is None or len(history) < 2 or every_minutes <= 0:
        return True
    last, before = history.iloc[-1], history.iloc[-2]

    def severity(row: pd.Series) -> str | None:
        value = row.get("severity")
        return None if value is None or pd.isna(value) or value == "" else str(value)

    if severity(last) or severity(before) != severity(last) or str(before.get("version")) != str(last.get("version")):
        return True
    period = pd.Timedelta(minutes=every_minutes)
    return pd.Timestamp(last["at"]).floor(period) != pd.Timestamp(before["at"]).floor(period)


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
        {"at": _iso(move.at), "action": move.action, "alias": move.alias, "from": move.from_version, "to": move.to_version,
         "outcome": move.outcome, "incident": move.incident, "reason": move.reason}
        for move in sorted(moves, key=lambda move: move.at, reverse=True)[:8]
    ]
    incidents = [_recovered_from_audit(dict(item), moves, registry.champion_alias) for item in list(incidents or [])[:5]]
    return Dashboard(
        model=registry.model_name,
        level=level,
        at=(now or datetime.now(timezone.utc)).isoformat(),
        versions=versions,
        latest_sweep=latest,
        breaches=[sweep for sweep in reversed(sweeps) if sweep.get("severity")][:8],
        actions=actions,
        incidents=incidents,
        emergency=emergency,
        champion_moves=[
            {"at": _iso(move.at), "action": move.action, "alias": move.alias, "from": move.from_version, "to": move.to_version, "outcome": move.outcome}
            for move in sorted(moves, key=lambda move: move.at, reverse=True) if move.alias == registry.champion_alias and move.applied
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
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TagKey.MODEL}` = '{model}'",
                              max_results=limit, order_by=["attributes.start_time DESC"])
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
    run = client.create_run(ensure_experiment(client, INCIDENT_EXPERIMENT), tags={TagKey.MODEL: model, TagKey.INCIDENT: incident},
                            run_name=f"incident-{model}-{incident}")
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
        entry = {"id": identifier, "severity": opened.payload.get("severity"), "violation": opened.payload.get("violation"),
                 "opened_at": _iso(opened.occurred), "flow_run": runs[0] if runs else None,
                 "link": f"{ui_url}/runs/flow-run/{runs[0]}" if ui_url and runs else None}
        try:  # the times only: the audit's rows (the report's other steps) are read once, by read_dashboard
            symptom = first_symptom(model, opened, opened.payload.get("triggering_event_id"))
            report = build_report(incident_events(identifier), symptom_at=symptom).to_dict()
            entry.update(time_to_detect_s=report["time_to_detect_s"], time_to_recover_s=report["time_to_recover_s"])
        except IncidentError:
            entry.update(time_to_detect_s=None, time_to_recover_s=None)
        found.append(entry)
    return found


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def shown_time(value: str | None) -> str:
    """An ISO time as a person reads it in a table: to the second, in UTC.

    Example:
        >>> shown_time("2026-12-03T17:06:55.425176+00:00")
        '2026-12-03 17:06:55 UTC'
    """
    return "-" if not value else f"{pd.Timestamp(value).tz_convert('UTC'):%Y-%m-%d %H:%M:%S} UTC"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def _run_links(incident: dict[str, Any]) -> str:
    """The incident's response flow run and MLflow run as links (ids when no UI is known)."""
    shown = []
    if incident.get("link"):
        shown.append(f"[response]({incident['link']})")
    elif incident.get("flow_run"):
        shown.append(f"response {incident['flow_run'][:8]}")
    if incident.get("mlflow_link"):
        shown.append(f"[MLflow]({incident['mlflow_link']})")
    elif incident.get("mlflow_run"):
        shown.append(f"MLflow {incident['mlflow_run'][:8]}")
    return ", ".join(shown) or "-"


def dashboard_markdown(board: Dashboard, plot_png: bytes | None = None) -> str:
    """The dashboard as the markdown of the `crisis-dashboard-<model>` artifact; `plot_png` (the health plot)
    is embedded as a picture (a data: URI: the UI shows it without reaching any file or server)."""
    badge = {"ok": "OK", "warning": "WARNING", "critical": "CRITICAL", "emergency": "EMERGENCY"}[board.level]
    lines = [f"# {board.model}: {badge}", "", f"As of {shown_time(board.at)}."]
    if board.mlflow_ui:
        lines.append(f"Versions and runs in the MLflow UI: [{board.model}]({board.mlflow_ui}/#/models/{board.model}).")
    lines.append("")
    if board.emergency:
        lines += [f"**Emergency stop in force** since {shown_time(board.emergency.get('at'))} (incident {board.emergency.get('incident')}): "
                  f"{board.emergency.get('reason')}. Training is stopped, serving is on the fallback.", ""]
    lines += ["## Versions", "", "| role | version | since |", "|---|---|---|"]
    lines += [f"| {role} | {('v' + v['version']) if v['version'] else '-'} | {shown_time(v['since'])} |" for role, v in board.versions.items()]
    if board.versions.get("fallback", {}).get("quality"):
        lines += ["", f"Fallback: {board.versions['fallback']['quality']}"]
    sweep = board.champion_health
    if plot_png:
        lines += ["", "## Health history", "", f"![Health of {board.model}: metrics against the policy's lines, registry moves, serving version]"
                  f"(data:image/png;base64,{base64.b64encode(plot_png).decode()})"]
    champion = board.versions.get("champion", {}).get("version")
    lines += ["", "## Health of the champion (latest sweep)", ""]
    if board.served_by_fallback:
        lines += [f"**Served by its fallback** v{champion}: no good version serves; the fallback's figures below are not a recovery.", ""]
    if sweep:
        lines += [
            "| at | version | severity | error rate (labelled) | failed rows | p95 latency | fallback share | fallback error rate (labelled) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {shown_time(sweep.get('at'))} | v{sweep.get('version') or '-'} | {sweep.get('severity') or 'healthy'} | {_percent(sweep.get('error_rate'))} "
            f"({int(sweep.get('error_rate_samples') or 0)}) | {_percent(sweep.get('failed_row_share'))} | "
            f"{'-' if sweep.get('latency_p95_ms') is None else format(sweep['latency_p95_ms'], '.1f') + ' ms'} | {_percent(sweep.get('fallback_share'))} | "
            f"{_percent(sweep.get('fallback_error_rate'))} ({int(sweep.get('fallback_error_rate_samples') or 0)}) |",
        ]
    elif board.latest_sweep:
        lines.append(f"No sweep of the champion {_v(champion)} since it took the alias yet (the latest judged {_v(board.latest_sweep.get('version'))}).")
    else:
        lines.append("No sweep yet: the health-monitor deployment has not seen this model in the inference log.")
    lines += ["", "## Recent breaches", ""]
    if board.breaches:
        lines += ["| at | severity | version | error rate |", "|---|---|---|---|"]
        lines += [f"| {shown_time(b['at'])} | {b['severity']} | v{b.get('version') or '-'} | {_percent(b.get('error_rate'))} |" for b in board.breaches]
    else:
        lines.append("None recorded.")
    lines += ["", "## Incidents", ""]
    if board.incidents:
        lines += ["| incident | severity | opened | detected in | recovered in | runs |", "|---|---|---|---|---|---|"]
        lines += [
            f"| `{i['id']}` | {i.get('severity') or '-'} | {shown_time(i.get('opened_at'))} | {_seconds(i.get('time_to_detect_s'))} | "
            f"{_seconds(i.get('time_to_recover_s')) if i.get('time_to_recover_s') is not None else 'not recovered'} | {_run_links(i)} |"
            for i in board.incidents
        ]
        lines += ["", f"Timeline of one: `crisis incident show {board.incidents[0]['id']}`, or the event feed of `ml.incident.<id>`."]
    else:
        lines.append("None.")
    lines += ["", "## Recent registry actions", ""]
    if board.actions:
        lines += ["| at | action | alias | from -> to | outcome | incident |", "|---|---|---|---|---|---|"]
        lines += [f"| {shown_time(a['at'])} | {a['action']} | {a['alias'] or '-'} | {_v(a['from'])} -> {_v(a['to'])} | {a['outcome']} | {a['incident'] or '-'} |"
                  for a in board.actions]
    else:
        lines.append("None.")
    return "\n".join(lines)


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
    shown = "holdout accuracy " + ("not recorded" if accuracy is None else f"{accuracy:.1%}") + ("" if ratio is None else f" ({ratio:.2f} x the primary)")
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

    from prefect_crisis.tasks.response.emergency import EmergencyRecord
    from prefect_crisis.tasks.monitoring.sweep import metric_history

    record = EmergencyRecord.read(registry.model_name)
    history = metric_history(registry.model_name)
    incidents = recent_incidents(registry.model_name, ui_url=PREFECT_UI_URL.value())
    ui = mlflow_ui_url()
    if incidents:
        runs = incident_runs(registry.client, registry.model_name)
        for entry in incidents:
            experiment_id, run_id = runs.get(entry["id"], (None, None))
            entry.update(mlflow_run=run_id, mlflow_link=mlflow_run_link(ui, experiment_id, run_id) if run_id else None)
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
    create_markdown_artifact(key=artifact_key("crisis-dashboard", registry.model_name), markdown=dashboard_markdown(board, plot),
                             description=f"crisis dashboard of {registry.model_name}: {board.level}")
    sweeps = sweeps_of(history)[-200:]
    if sweeps:
        create_table_artifact(key=artifact_key("crisis-metrics", registry.model_name), table=sweeps,
                              description=f"health sweeps of {registry.model_name}, oldest first (last 200)")
    if board.actions:
        create_table_artifact(key=artifact_key("crisis-audit", registry.model_name), table=board.actions,
                              description=f"the registry's audit of {registry.model_name}, newest first")
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

"""The crisis dashboard of one model as plain values: the `Dashboard` (what serves, how it is, what happened), the
crisis level now, the champion's latest sweep, when a sweep refreshes it, and its markdown. Reading it from the
registry, the metric history and Prefect, and publishing it as artifacts, is tasks/monitoring/dashboard.py.

The crisis level now: `emergency` while the model's emergency stop is in force; else the worst severity of the
latest health sweep when that sweep breached and the champion has not moved since; else `ok`. A model served by
its fallback (the champion alias on the fallback version) is at least at `warning`: the fallback is a stopgap,
not a healthy model.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from prefect_crisis.core.vocabulary import Serving

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import AliasMove


LEVELS = ("ok", "warning", "critical", "emergency")
HISTORY_COLUMNS = (
    "at",
    "version",
    "serving",
    "serving_since",
    "severity",
    "rows",
    "rows_left_out",
    "error_rate",
    "error_rate_samples",
    "fallback_share",
    "fallback_error_rate",
    "fallback_error_rate_samples",
    "failed_row_share",
    "latency_p95_ms",
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
    severity = latest.get("severity") if latest is not None else None
    if latest is None or not severity or severity not in LEVELS:
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
        lines += [
            f"**Emergency stop in force** since {shown_time(board.emergency.get('at'))} (incident {board.emergency.get('incident')}): "
            f"{board.emergency.get('reason')}. Training is stopped, serving is on the fallback.",
            "",
        ]
    lines += ["## Versions", "", "| role | version | since |", "|---|---|---|"]
    lines += [f"| {role} | {('v' + v['version']) if v['version'] else '-'} | {shown_time(v['since'])} |" for role, v in board.versions.items()]
    if board.versions.get("fallback", {}).get("quality"):
        lines += ["", f"Fallback: {board.versions['fallback']['quality']}"]
    sweep = board.champion_health
    if plot_png:
        lines += [
            "",
            "## Health history",
            "",
            f"![Health of {board.model}: metrics against the policy's lines, registry moves, serving version]"
            f"(data:image/png;base64,{base64.b64encode(plot_png).decode()})",
        ]
    champion = board.versions.get("champion", {}).get("version")
    lines += ["", "## Health of the champion (latest sweep)", ""]
    if board.served_by_fallback:
        lines += [f"**Served by its fallback** v{champion}: no good version serves; the fallback's figures below are not a recovery.", ""]
    if sweep:
        lines += [
            "| at | version | severity | error rate (labelled) | failed rows | p95 latency | fallback share | fallback error rate (labelled) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {shown_time(sweep.get('at'))} | v{sweep.get('version') or '-'} | {sweep.get('severity') or 'healthy'} | "
            f"{_percent(sweep.get('error_rate'))} "
            f"({int(sweep.get('error_rate_samples') or 0)}) | {_percent(sweep.get('failed_row_share'))} | "
            f"{'-' if sweep.get('latency_p95_ms') is None else format(sweep['latency_p95_ms'], '.1f') + ' ms'} | "
            f"{_percent(sweep.get('fallback_share'))} | "
            f"{_percent(sweep.get('fallback_error_rate'))} ({int(sweep.get('fallback_error_rate_samples') or 0)}) |",
        ]
    elif board.latest_sweep:
        lines.append(
            f"No sweep of the champion {_v(champion)} since it took the alias yet (the latest judged {_v(board.latest_sweep.get('version'))})."
        )
    else:
        lines.append("No sweep yet: the health-monitor deployment has not seen this model in the inference log.")
    lines += ["", "## Recent breaches", ""]
    if board.breaches:
        lines += ["| at | severity | version | error rate |", "|---|---|---|---|"]
        lines += [
            f"| {shown_time(b['at'])} | {b['severity']} | v{b.get('version') or '-'} | {_percent(b.get('error_rate'))} |" for b in board.breaches
        ]
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
        lines += [
            f"| {shown_time(a['at'])} | {a['action']} | {a['alias'] or '-'} | {_v(a['from'])} -> {_v(a['to'])} | {a['outcome']} | "
            f"{a['incident'] or '-'} |"
            for a in board.actions
        ]
    else:
        lines.append("None.")
    return "\n".join(lines)

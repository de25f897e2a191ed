"""`crisis status MODEL`: one model's crisis picture in the terminal (the same as its
`crisis-dashboard-<model>` artifact), as rich tables or `--json`.

The health shown is the current champion's: the latest sweep that judged it since it
took the alias, with the fallback's share and error rate apart; a model served by its
fallback says so.

Exit code 3 when the model is in crisis (level warning, critical or emergency), so
a script can gate on it: `crisis status churn || page-someone`.
"""

from __future__ import annotations

import json as _json
import sys
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from prefect_crisis.core.errors import DataInputError, ExitCode, InputErrorReason

LEVEL_STYLE = {"ok": "green", "warning": "yellow", "critical": "red", "emergency": "bold red"}


def read_model_dashboard(model: str):
    """The model's dashboard, read from the stack this process is connected to.

    Raises:
        DataInputError: the MLflow store has no model of that name.
    """
    from prefect_crisis.blocks.registry import ModelRegistry
    from prefect_crisis.core.errors import RegistryError
    from prefect_crisis.tasks.monitoring.dashboard import gather_dashboard

    try:
        board, _history = gather_dashboard(ModelRegistry(model_name=model))
    except RegistryError as error:
        raise DataInputError(InputErrorReason.INVALID_NAME, str(error)) from None
    return board


def read_policy_sources(model: str) -> dict[str, str]:
    """Which RollbackPolicy, MonitoringPolicy and FallbackPolicy bind the model, and where each came from (`bind_policy`);
    a kind whose block cannot be read says why instead."""
    from prefect_crisis.blocks.fallback_policy import FallbackPolicy
    from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
    from prefect_crisis.blocks.rollback_policy import RollbackPolicy
    from prefect_crisis.core.errors import CrisisError
    from prefect_crisis.tasks.loading import bind_policy

    sources = {}
    for kind in (RollbackPolicy, MonitoringPolicy, FallbackPolicy):
        try:
            sources[kind.get_block_type_slug()] = bind_policy(kind, model).source
        except CrisisError as error:
            sources[kind.get_block_type_slug()] = f"error: {error}"
    return sources


def _percent(value) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def print_champion_health(board, champion: str | None, console: Console) -> None:
    """The current champion's latest sweep, then the fallback's figures apart (what serving routed to it)."""
    from prefect_crisis.tasks.monitoring.dashboard import shown_time

    sweep = board.champion_health
    if not sweep:
        latest = board.latest_sweep
        console.print(
            f"no health sweep of the champion v{champion or '-'} since it took the alias yet (the latest judged v{latest.get('version') or '-'})"
            if latest
            else "no health sweep yet"
        )
        return
    health = Table(title=f"health of the champion v{sweep.get('version') or '-'} (latest sweep)", title_justify="left")
    for column in ("at", "since", "severity", "rows", "error rate", "labelled", "failed rows", "p95 ms"):
        health.add_column(column)
    health.add_row(
        shown_time(sweep.get("at")),
        shown_time(sweep.get("serving_since")),
        sweep.get("severity") or "healthy",
        str(int(sweep.get("rows") or 0)),
        _percent(sweep.get("error_rate")),
        str(int(sweep.get("error_rate_samples") or 0)),
        _percent(sweep.get("failed_row_share")),
        "-" if sweep.get("latency_p95_ms") is None else f"{sweep['latency_p95_ms']:.1f}",
    )
    console.print(health)
    console.print(
        f"fallback, counted apart: {_percent(sweep.get('fallback_share'))} of rows, error rate {_percent(sweep.get('fallback_error_rate'))} "
        f"of {int(sweep.get('fallback_error_rate_samples') or 0)} labelled"
        + (f"; {int(sweep['rows_left_out'])} rows of other versions left out" if sweep.get("rows_left_out") else "")
    )


def print_model_status(
    board, console: Console, as_json: bool, stack_report: Mapping[str, object] | None = None, policies: dict[str, str] | None = None
) -> None:
    """Print the dashboard and which policies bind the model; exit 3 when the model is in crisis."""
    if as_json:
        print(_json.dumps({"stack": stack_report, "model": {**board.to_dict(), "policies": policies or {}}}, default=str))
    else:
        from prefect_crisis.tasks.monitoring.dashboard import shown_time

        style = LEVEL_STYLE[board.level]
        console.print(f"[{style}]{board.model}: {board.level.upper()}[/{style}]  (as of {shown_time(board.at)})")
        if board.mlflow_ui:
            console.print(f"MLflow UI: {board.mlflow_ui}/#/models/{board.model}", soft_wrap=True)
        if board.emergency:
            console.print(
                f"[bold red]emergency stop in force[/bold red] (incident {board.emergency.get('incident')}): {board.emergency.get('reason')}"
            )
        versions = Table(title="versions", title_justify="left")
        for column in ("role", "version", "since", "note"):
            versions.add_column(column)
        for role, info in board.versions.items():
            versions.add_row(role, f"v{info['version']}" if info["version"] else "-", shown_time(info["since"]), info.get("quality") or "")
        console.print(versions)
        champion = board.versions.get("champion", {}).get("version")
        if board.served_by_fallback:
            console.print(f"[yellow]served by its fallback v{champion}[/yellow]: no good version serves (the fallback's health is no recovery)")
        print_champion_health(board, champion, console)
        if policies:
            bound = Table(title="policies that bind it", title_justify="left")
            for column in ("policy", "from"):
                bound.add_column(column)
            for kind, source in policies.items():
                bound.add_row(kind, source)
            console.print(bound)
        if board.incidents:
            incidents = Table(title="incidents", title_justify="left")
            for column in ("incident", "severity", "opened", "detect s", "recover s"):
                incidents.add_column(column)
            for item in board.incidents:
                incidents.add_row(
                    str(item["id"]),
                    str(item.get("severity") or "-"),
                    shown_time(item.get("opened_at")),
                    "-" if item.get("time_to_detect_s") is None else f"{item['time_to_detect_s']:.1f}",
                    "not recovered" if item.get("time_to_recover_s") is None else f"{item['time_to_recover_s']:.1f}",
                )
            console.print(incidents)
        if board.actions:
            actions = Table(title="registry actions", title_justify="left")
            for column in ("at", "action", "alias", "from -> to", "outcome", "incident"):
                actions.add_column(column)
            for action in board.actions[:5]:
                actions.add_row(
                    shown_time(action["at"]),
                    action["action"],
                    action["alias"] or "-",
                    f"{'v' + action['from'] if action['from'] else '-'} -> {'v' + action['to'] if action['to'] else '-'}",
                    action["outcome"],
                    action["incident"] or "-",
                )
            console.print(actions)
    if board.in_crisis:
        sys.exit(ExitCode.REJECTED)

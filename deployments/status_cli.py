"""`crisis status MODEL`: one model's crisis picture in the terminal (the same as its
`crisis-dashboard-<model>` artifact), as rich tables or `--json`.

Exit code 3 when the model is in crisis (level warning, critical or emergency), so
a script can gate on it: `crisis status churn || page-someone`.
"""

from __future__ import annotations

import json as _json
import sys

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
    from prefect_crisis.tasks.dashboard import gather_dashboard

    try:
        board, _history = gather_dashboard(ModelRegistry(model_name=model))
    except RegistryError as error:
        raise DataInputError(InputErrorReason.INVALID_NAME, str(error)) from None
    return board


def print_model_status(board, console: Console, as_json: bool, stack_report: dict | None = None) -> None:
    """Print the dashboard; exit 3 when the model is in crisis."""
    if as_json:
        print(_json.dumps({"stack": stack_report, "model": board.to_dict()}, default=str))
    else:
        from prefect_crisis.tasks.dashboard import shown_time

        style = LEVEL_STYLE[board.level]
        console.print(f"[{style}]{board.model}: {board.level.upper()}[/{style}]  (as of {shown_time(board.at)})")
        if board.mlflow_ui:
            console.print(f"MLflow UI: {board.mlflow_ui}/#/models/{board.model}", soft_wrap=True)
        if board.emergency:
            console.print(f"[bold red]emergency stop in force[/bold red] (incident {board.emergency.get('incident')}): {board.emergency.get('reason')}")
        versions = Table(title="versions", title_justify="left")
        for column in ("role", "version", "since"):
            versions.add_column(column)
        for role, info in board.versions.items():
            versions.add_row(role, f"v{info['version']}" if info["version"] else "-", shown_time(info["since"]))
        console.print(versions)
        sweep = board.latest_sweep
        if sweep:
            health = Table(title="latest health sweep", title_justify="left")
            for column in ("at", "version", "severity", "error rate", "labelled", "fallback share", "p95 ms"):
                health.add_column(column)
            health.add_row(shown_time(sweep.get("at")), f"v{sweep.get('version') or '-'}", sweep.get("severity") or "healthy",
                           "-" if sweep.get("error_rate") is None else f"{sweep['error_rate']:.1%}", str(int(sweep.get("error_rate_samples") or 0)),
                           "-" if sweep.get("fallback_share") is None else f"{sweep['fallback_share']:.1%}",
                           "-" if sweep.get("latency_p95_ms") is None else f"{sweep['latency_p95_ms']:.1f}")
            console.print(health)
        else:
            console.print("no health sweep yet")
        if board.incidents:
            incidents = Table(title="incidents", title_justify="left")
            for column in ("incident", "severity", "opened", "detect s", "recover s"):
                incidents.add_column(column)
            for item in board.incidents:
                incidents.add_row(str(item["id"]), str(item.get("severity") or "-"), shown_time(item.get("opened_at")),
                                  "-" if item.get("time_to_detect_s") is None else f"{item['time_to_detect_s']:.1f}",
                                  "not recovered" if item.get("time_to_recover_s") is None else f"{item['time_to_recover_s']:.1f}")
            console.print(incidents)
        if board.actions:
            actions = Table(title="registry actions", title_justify="left")
            for column in ("at", "action", "alias", "from -> to", "outcome", "incident"):
                actions.add_column(column)
            for action in board.actions[:5]:
                actions.add_row(shown_time(action["at"]), action["action"], action["alias"] or "-", f"{'v' + action['from'] if action['from'] else '-'} -> {'v' + action['to'] if action['to'] else '-'}",
                                action["outcome"], action["incident"] or "-")
            console.print(actions)
    if board.in_crisis:
        sys.exit(ExitCode.REJECTED)


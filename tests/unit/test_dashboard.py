"""The crisis dashboard from a real SQLite MLflow registry and plain history data: the level
now, the versions and since when, the registry's actions, and the markdown the artifact shows."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from prefect_crisis.core.vocabulary import AliasAction
from prefect_crisis.tasks.monitoring.dashboard import crisis_level, dashboard_markdown, read_dashboard
from tests.unit.test_recovery import START, clock, registry, serve, sink  # noqa: F401 - fixtures


def sweep(at, severity, error_rate=0.3, version="3", samples=300, fallback=0.02):
    return {
        "at": pd.Timestamp(at),
        "version": version,
        "severity": severity,
        "error_rate": error_rate,
        "error_rate_samples": samples,
        "fallback_share": fallback,
        "failed_row_share": 0.0,
        "latency_p95_ms": 4.2,
    }


@pytest.mark.parametrize(
    ("emergency", "severity", "moved_after", "level"),
    [
        (None, None, False, "ok"),
        (None, "warning", False, "warning"),
        (None, "critical", False, "critical"),
        (None, "critical", True, "ok"),  # the response moved the champion after the sweep that breached
        ({"incident": "inc-9"}, None, False, "emergency"),
        ({"incident": "inc-9"}, "warning", True, "emergency"),
    ],
)
def test_the_level_now(emergency, severity, moved_after, level):
    latest = {"severity": severity, "at": START.isoformat()}
    moved = START + timedelta(minutes=5) if moved_after else START - timedelta(minutes=5)
    assert crisis_level(emergency, latest, moved) == level


def test_a_breach_after_the_last_move_is_a_crisis_and_a_rollback_after_it_ends_it(registry, clock):
    serve(registry, clock, "1", 3)
    serve(registry, clock, "3", 1)
    breached = clock[0]
    history = pd.DataFrame([sweep(breached - timedelta(minutes=10), None, 0.09), sweep(breached, "critical", 0.45)])
    before = read_dashboard(registry, history)
    assert before.level == "critical" and before.in_crisis
    assert before.versions["champion"] == {"version": "3", "since": (breached - timedelta(hours=1)).isoformat()}
    assert [b["severity"] for b in before.breaches] == ["critical"]

    clock[0] += timedelta(minutes=2)
    registry.move_alias(registry.champion_alias, "1", "rollback: degraded", "inc-1", action=AliasAction.ROLLBACK)
    after = read_dashboard(
        registry,
        history,
        incidents=[
            {
                "id": "inc-1",
                "severity": "critical",
                "opened_at": breached.isoformat(),
                "time_to_detect_s": 1.2,
                "time_to_recover_s": 1.9,
                "flow_run": "abcdef12-x",
                "link": "http://127.0.0.1:4200/runs/flow-run/abcdef12-x",
            }
        ],
    )
    assert after.level == "ok" and not after.in_crisis
    unseen = read_dashboard(
        registry, history, incidents=[{"id": "inc-1", "opened_at": (clock[0] - timedelta(seconds=3)).isoformat(), "time_to_recover_s": None}]
    )
    assert unseen.incidents[0]["time_to_recover_s"] == 3.0  # the recovery's events not read yet: the audit's move says it
    assert after.versions["champion"]["version"] == "1" and after.versions["fallback"]["version"] is None
    assert after.actions[0]["action"] == "rollback" and (after.actions[0]["from"], after.actions[0]["to"]) == ("3", "1")

    markdown = dashboard_markdown(after)
    assert markdown.startswith(f"# {registry.model_name}: OK")
    assert "| champion | v1 |" in markdown and "| rollback | champion | v3 -> v1 | applied | inc-1 |" in markdown
    assert "[response](http://127.0.0.1:4200/runs/flow-run/abcdef12-x)" in markdown and "1.9 s" in markdown
    assert "| critical | v3 | 45.0% |" in markdown


def test_an_emergency_and_no_history_say_so(registry, clock):
    serve(registry, clock, "1", 1)
    board = read_dashboard(registry, pd.DataFrame(), emergency={"incident": "inc-7", "reason": "ml.breach.emergency", "at": START.isoformat()})
    markdown = dashboard_markdown(board)
    assert board.level == "emergency" and board.to_dict()["in_crisis"] is True
    assert "**Emergency stop in force**" in markdown and "inc-7" in markdown
    assert "No sweep yet" in markdown and "Recent breaches\n\nNone recorded." in markdown

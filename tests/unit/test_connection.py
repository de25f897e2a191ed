"""A plain process finds the running stack only where that is safe; a deployment
made without CRISIS_HOME exported fails with one line, not in a folder named after a template."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefect_crisis.core.connection import connect_to_local_stack, recorded_api_url
from prefect_crisis.core.errors import StackError
from prefect_crisis.core.paths import crisis_home


def test_unrendered_crisis_home_template_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("CRISIS_HOME", "{{ $CRISIS_HOME }}")
    with pytest.raises(StackError, match="crisis deploy"):
        crisis_home()


def test_a_record_of_a_dead_server_is_ignored(tmp_path, monkeypatch):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "server.json").write_text(json.dumps({"pid": int(finished.stdout), "api_url": "http://127.0.0.1:9/api"}))
    assert recorded_api_url(tmp_path) is None


def test_nothing_changes_when_an_api_is_configured(tmp_path, monkeypatch):
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/api"}))
    monkeypatch.setenv("CRISIS_HOME", str(tmp_path))
    monkeypatch.delenv("CRISIS_NO_AUTOCONNECT", raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:8/api"}):
        assert connect_to_local_stack() is None


def test_a_recorded_server_that_does_not_answer_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid(), "api_url": "http://127.0.0.1:9/api"}))
    probe = subprocess.run(
        [sys.executable, "-c", "from prefect_crisis.core.connection import connect_to_local_stack; print(connect_to_local_stack())"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CRISIS_"))}, "CRISIS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "None", probe.stderr[-2000:]

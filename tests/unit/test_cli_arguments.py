"""The CLI's argument errors: one line, exit code 2, before any server is asked."""

from __future__ import annotations

import pytest

from prefect_crisis.core.errors import ExitCode
from prefect_crisis.deployments.cli import main


@pytest.fixture(autouse=True)
def no_server(monkeypatch, tmp_path):
    # Nothing listens here: a command that reached for the server would fail with STACK (4), not USAGE (2).
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("CRISIS_HOME", str(tmp_path / ".crisis"))


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_.value.code, [line for line in (captured.out + captured.err).splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("incident", "list", "bad name!"), "bad name!"),
        (("validate", "no-such-batch.parquet", "--model", "churn", "--contract", "c"), "does not exist"),
        (("demo", "--model", "Bad Name"), "Bad Name"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(capsys, argv, says):
    code, lines = run(capsys, *argv)
    assert code == ExitCode.USAGE
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]


def test_a_missing_incident_id_is_a_usage_error(capsys):
    code, lines = run(capsys, "incident", "show")
    assert code != ExitCode.DONE and any("INCIDENT" in line.upper() for line in lines)

"""Model names, storage paths, parquet parts and run logs: bad names never reach
a path, a failed write never damages a part, an expected error is one log line."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pytest

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.errors import (
    ContractError,
    ContractErrorReason,
    DataInputError,
    DemoError,
    ExitCode,
    InputErrorReason,
    StackError,
)
from prefect_crisis.core.paths import validate_model_name
from prefect_crisis.deployments.cli import exit_code
from prefect_crisis.tasks.drills.synthetic import check_demo_rows, demo_model_name
from prefect_crisis.tasks.run_logs import ExpectedErrorFilter
from prefect_crisis.tasks.training.stop_flag import stop_flag_name
from prefect_crisis.tasks.validation.quarantine import storage_uri, write_parquet

BAD_NAMES = ["../../../../outside", "a b/../x", "a/b", "a:b", "..", "", "Churn", "-x", "x-", "a b", "x" * 101]
GOOD_NAMES = ["synthetic", "a-b-x", "churn_v2", "m", "a--b", "0", "x" * 100]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_names_are_one_line_input_errors(name):
    with pytest.raises(DataInputError) as caught:
        validate_model_name(name)
    assert caught.value.reason is InputErrorReason.INVALID_NAME
    assert "\n" not in str(caught.value)


def test_stop_flag_names_of_valid_models_are_distinct_and_keep_the_name():
    # Cleaning used to map `a b/../x` and `a-b-x` to one flag; a valid name is its own flag.
    assert [validate_model_name(name) for name in GOOD_NAMES] == GOOD_NAMES
    flags = [stop_flag_name(name) for name in GOOD_NAMES]
    assert flags == [f"crisis-stop-{name}" for name in GOOD_NAMES]
    assert len(set(flags)) == len(flags)


def test_the_registry_block_refuses_a_path_as_model_name():
    with pytest.raises(DataInputError, match="invalid model name"):
        ModelRegistry(model_name="../../../../outside")
    assert ModelRegistry(model_name="churn").model_name == "churn"


def test_storage_paths_never_leave_the_storage_root(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataInputError) as caught:
        storage_uri(str(root), "../../../../outside", "kept", "b.parquet")
    assert caught.value.reason is InputErrorReason.INVALID_NAME
    assert not any(tmp_path.rglob("outside"))
    assert storage_uri(str(root), "m", "kept", "b.parquet") == str(root / "m" / "kept" / "b.parquet")


def test_a_failed_write_leaves_the_previous_part_whole_and_no_temporary_file(tmp_path):
    part = tmp_path / "kept.parquet"
    write_parquet(pd.DataFrame({"x": [1.0, 2.0]}), str(part))
    # Parquet has no type for this Arrow index type: the writer opens the file, then fails.
    interval = pd.ArrowDtype(pa.month_day_nano_interval())
    unwritable = pd.DataFrame({"x": [3.0]}, index=pd.Index(pd.array(pa.array([(1, 2, 3)], type=interval.pyarrow_dtype), dtype=interval)))
    with pytest.raises(pa.ArrowException):
        write_parquet(unwritable, str(part))
    assert pd.read_parquet(part)["x"].tolist() == [1.0, 2.0]
    assert [path.name for path in tmp_path.iterdir()] == ["kept.parquet"]


@pytest.mark.parametrize("rows", [0, -5, 10, 999, 2_000_000])
def test_the_demo_refuses_row_counts_it_cannot_tell_its_story_with(rows):
    with pytest.raises(DataInputError, match=r"--rows .* the demo needs between 1,000 and 1,000,000 rows"):
        check_demo_rows(rows)
    assert check_demo_rows(1_000) == 1_000


def test_each_demo_run_gets_a_model_of_its_own():
    names = {demo_model_name("synthetic") for _ in range(20)}
    assert len(names) == 20
    assert all(name.startswith("synthetic-") and validate_model_name(name) == name for name in names)


def test_exit_codes_follow_one_scheme():
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 130]  # 130: interrupted (Ctrl-C), as shells report it
    assert exit_code(StackError("no server")) is ExitCode.STACK
    assert exit_code(DemoError("story did not happen")) is ExitCode.FAILURE
    assert exit_code(ContractError(ContractErrorReason.NOT_FOUND, "no block")) is ExitCode.USAGE


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        import sys

        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed: %r", (error,), sys.exc_info())


def test_expected_errors_lose_their_traceback_and_bugs_keep_it(monkeypatch):
    monkeypatch.delenv("CRISIS_DEBUG", raising=False)
    expected = _record(DataInputError(InputErrorReason.MISSING_SOURCE, "batch 'x' does not exist"))
    bug = _record(KeyError("f01"))
    assert ExpectedErrorFilter().filter(expected) and ExpectedErrorFilter().filter(bug)
    assert expected.exc_info is None and "does not exist" in expected.getMessage()
    assert bug.exc_info is not None
    monkeypatch.setenv("CRISIS_DEBUG", "1")
    debugged = _record(DataInputError(InputErrorReason.MISSING_SOURCE, "batch 'x' does not exist"))
    ExpectedErrorFilter().filter(debugged)
    assert debugged.exc_info is not None

"""Coercion of a column to its declared type: a bool column's values, and dict
literals in the validation modules that would hide a key (1 == True)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prefect_crisis.core.contract_spec import ColumnSpec
from prefect_crisis.tasks.validation.columns import TRUTH_VALUES, coerce_column

ROOT = Path(__file__).resolve().parents[2]
VALIDATION_MODULES = [
    *sorted((ROOT / "tasks" / "validation").glob("*.py")),
    ROOT / "core" / "contract_spec.py",
    ROOT / "core" / "contract_inference.py",
    ROOT / "blocks" / "contract.py",
]


def test_a_bool_column_reads_bools_numbers_and_text():
    series = pd.Series([True, False, 1, 0, 1.0, np.int64(0), "true", " FALSE ", "1", "0", 2, "yes", 0.5, None], dtype=object)
    column = coerce_column(series, ColumnSpec(name="flag", dtype="bool", nullable=True))
    assert column.series.tolist()[:10] == [True, False, True, False, True, False, True, False, True, False]
    assert column.wrong_type.tolist() == [False] * 10 + [True, True, True, False]
    assert column.null.tolist() == [False] * 13 + [True]
    assert column.coercion == "object -> bool"


def test_the_truth_table_names_each_value_once():
    # 1 and True (0 and False) are one dict key: a literal holding both silently keeps one.
    assert len(TRUTH_VALUES) == 6
    assert all(TRUTH_VALUES[number] is expected for number, expected in [(1, True), (0, False), (1.0, True), (np.int64(0), False)])


def equal_keys(path: Path) -> list[str]:
    """Dict literals whose constant keys compare equal (1 and True, 0 and False.0 ...)."""
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Dict):
            keys = [key.value for key in node.keys if isinstance(key, ast.Constant)]
            if len(set(keys)) < len(keys):
                wrong.append(f"line {node.lineno}: keys {keys}")
    return wrong


@pytest.mark.parametrize("path", VALIDATION_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_dict_literal_repeats_a_key(path: Path):
    assert equal_keys(path) == []


def test_the_key_check_catches_one_beside_true(tmp_path: Path):
    planted = tmp_path / "planted.py"
    planted.write_text('truth = {True: True, 1: True, "1": True}\n')
    assert equal_keys(planted) == ["line 1: keys [True, 1, '1']"]

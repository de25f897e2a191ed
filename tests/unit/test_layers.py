"""The layers import one way: core <- blocks <- tasks <- flows <- deployments.

Every module is parsed (not imported), so a lazy import inside a function
counts as much as one at the top. Flow modules are imported only for a flow,
and the vocabulary's strings are compared nowhere but in the vocabulary.
"""

from __future__ import annotations

import ast
import importlib
from enum import Enum
from pathlib import Path

import pytest
from prefect import Flow

from prefect_crisis.core import vocabulary

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "blocks", "tasks", "flows", "deployments")
MODULES = sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


def imported_modules(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "prefect_crisis" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def test_every_layer_has_modules():
    assert {path.relative_to(ROOT).parts[0] for path in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_do_not_go_up_a_layer(path: Path):
    own = LAYERS.index(path.relative_to(ROOT).parts[0])
    wrong = []
    for line, module, _ in imported_modules(ast.parse(path.read_text(), str(path))):
        if module.split(".")[0] in LAYERS:
            wrong.append(f"line {line}: bare `{module}` (import through prefect_crisis.*)")
        layer = layer_of(module)
        if layer is not None and LAYERS.index(layer) > own:
            wrong.append(f"line {line}: {module} is above {LAYERS[own]}")
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_flow_modules_are_imported_only_for_their_flow(path: Path):
    for line, module, names in imported_modules(ast.parse(path.read_text(), str(path))):
        if layer_of(module) != "flows" or module == "prefect_crisis.flows":
            continue
        imported = importlib.import_module(module)
        helpers = [name for name in names if not isinstance(getattr(imported, name), Flow)]
        assert not helpers, f"{path.relative_to(ROOT)} line {line} imports {helpers} from {module}: move shared helpers to tasks/ or core/"


def vocabulary_strings() -> set[str]:
    values = {
        member.value
        for item in vars(vocabulary).values()
        if isinstance(item, type) and issubclass(item, Enum) and item.__module__ == vocabulary.__name__
        for member in item
    }
    return {value for value in values if isinstance(value, str)} | {vocabulary.TAG_PREFIX}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_vocabulary_string_outside_the_vocabulary(path: Path):
    if path == ROOT / "core" / "vocabulary.py":
        return
    words = vocabulary_strings()
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                candidates = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                wrong += [f"line {c.lineno}: compares {c.value!r}" for c in candidates if isinstance(c, ast.Constant) and c.value in words]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(vocabulary.TAG_PREFIX) and " " not in node.value:
            wrong.append(f"line {node.lineno}: tag key {node.value!r} spelled out")
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong) + " (use the enums of core/vocabulary.py)"


def test_the_layer_test_catches_an_upward_import(tmp_path: Path):
    module = "from prefect_crisis.tasks.response.rollback import decide_rollback\n"
    assert [layer_of(name) for _, name, _ in imported_modules(ast.parse(module))] == ["tasks"]

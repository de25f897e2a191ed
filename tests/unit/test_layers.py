"""The layers import one way: core <- blocks <- tasks <- flows <- deployments.

Every module is parsed (not imported) by `tests/layer_rules.py`: lazy imports inside
functions, relative imports, `from prefect_crisis import x`, names a package exports
lazily and module names in strings all count. Import cycles are refused, and the
domain modules of the feature packages import neither Prefect nor MLflow. Each rule
is shown to catch a planted violation. Flow modules are imported only for a flow,
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
from tests import layer_rules
from tests.layer_rules import LAYERS, import_cycles, impure_domain_modules, layer_of, parse, upward_imports

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))
TREE = parse(layer_rules.modules_of_tree(ROOT))
FEATURES = ("validation", "training", "serving", "response", "monitoring", "drills")


def imported_modules(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def test_every_layer_has_modules():
    assert {path.relative_to(ROOT).parts[0] for path in MODULES} == set(LAYERS)


def test_imports_do_not_go_up_a_layer():
    assert upward_imports(TREE) == []


def test_no_import_cycles():
    assert import_cycles(TREE) == []


def test_every_feature_package_names_its_adapters():
    declared = {name.rpartition(".")[2] for name, module in TREE.items() if module.adapters is not None}
    assert declared >= set(FEATURES)


def test_domain_modules_import_neither_prefect_nor_mlflow():
    assert impure_domain_modules(TREE) == []


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
    constants = {value for name, value in vars(vocabulary).items() if name.isupper() and isinstance(value, str)}
    return {value for value in values | constants if isinstance(value, str)}


EVENT_PREFIXES = ("ml.", vocabulary.TAG_PREFIX)


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def spelled_out_words(source: str, words: set[str]) -> list[str]:
    """Vocabulary spelled out as a literal: a compared word, or any dotted name or prefix of the
    event and tag vocabulary (`"ml.model.name"`, `f"ml.model.{model}"`), docstrings aside."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                candidates = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                wrong += [f"line {c.lineno}: compares {c.value!r}" for c in candidates if isinstance(c, ast.Constant) and c.value in words]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            if " " not in text and (text.startswith(EVENT_PREFIXES) or ("." in text and text in words)):
                wrong.append(f"line {node.lineno}: {text!r} spelled out")
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_vocabulary_string_outside_the_vocabulary(path: Path):
    if path == ROOT / "core" / "vocabulary.py":
        return
    wrong = spelled_out_words(path.read_text(), vocabulary_strings())
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong) + " (use the names of core/vocabulary.py)"


@pytest.mark.parametrize(
    "source",
    [
        'label = event.resource["ml.model.name"]\n',
        'resource = f"ml.model.{model}"\n',
        'tags = {"crisis.features": "a"}\n',
        'if event.event == "ml.rollback.completed":\n    pass\n',
    ],
)
def test_the_vocabulary_rule_catches_a_planted_literal(source: str):
    assert spelled_out_words(source, vocabulary_strings())


def test_the_vocabulary_rule_leaves_prose_alone():
    source = 'def f():\n    """Runs on `ml.model.name` (a docstring)."""\n    return "the model ml. is fine in a sentence"\n'
    assert spelled_out_words(source, vocabulary_strings()) == []


# Planted violations: a tree of a few modules, each breaking one rule a different way.
BASE = {
    "prefect_crisis.core": "",
    "prefect_crisis.core.errors": "class CrisisError(Exception): ...\n",
    "prefect_crisis.blocks": "",
    "prefect_crisis.blocks.policy": "from prefect.blocks.core import Block\n",
    "prefect_crisis.tasks": "",
    "prefect_crisis.tasks.serving": 'ADAPTERS = frozenset({"tasks"})\n_EXPORTS = {"route": "router", "serve": "tasks"}\n',
    "prefect_crisis.tasks.serving.router": "from prefect_crisis.core.errors import CrisisError\n",
    "prefect_crisis.tasks.serving.tasks": "from prefect import task\n",
    "prefect_crisis.flows": "",
    "prefect_crisis.flows.demo": "from prefect_crisis.tasks.serving.router import CrisisError\n",
}


def planted(module: str, source: str) -> dict:
    return parse({**BASE, module: source})


def test_the_clean_planted_tree_passes_every_rule():
    tree = parse(BASE)
    assert (upward_imports(tree), import_cycles(tree), impure_domain_modules(tree)) == ([], [], [])


@pytest.mark.parametrize(
    "source",
    [
        "from prefect_crisis.flows.demo import x\n",
        "import prefect_crisis.flows.demo\n",
        "def later():\n    from prefect_crisis.flows import demo\n",
        "from ...flows import demo\n",
        "from ... import flows\n",
        "from prefect_crisis import flows\n",
        'import importlib\nimportlib.import_module("prefect_crisis.flows.demo")\n',
        'MODULES = {"demo": "prefect_crisis.flows.demo"}\n',
        "import flows.demo\n",
    ],
    ids=["from", "import", "lazy", "relative", "relative-root", "from-root", "import_module", "string", "bare"],
)
def test_the_layer_rule_catches_a_planted_upward_import(source: str):
    assert upward_imports(planted("prefect_crisis.tasks.serving.router", source))


def test_type_checking_imports_do_not_count():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prefect import Flow\n"
    assert impure_domain_modules(planted("prefect_crisis.tasks.serving.router", source)) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("prefect_crisis.tasks.serving.router", "import mlflow\n"),
        ("prefect_crisis.tasks.serving.router", "def later():\n    from prefect import get_client\n"),
        ("prefect_crisis.tasks.serving.router", "from prefect_crisis.blocks.policy import Block\n"),
        ("prefect_crisis.tasks.serving.router", "from prefect_crisis.tasks.serving import serve\n"),
        ("prefect_crisis.tasks.serving.router", "from . import tasks\n"),
        ("prefect_crisis.tasks.serving", 'ADAPTERS = frozenset({"tasks"})\nimport prefect\n'),
    ],
    ids=["direct", "lazy", "through-blocks", "through-export", "relative", "package-init"],
)
def test_the_domain_rule_catches_a_planted_framework_import(module: str, source: str):
    assert impure_domain_modules(planted(module, source))


@pytest.mark.parametrize(
    "source",
    [
        "from prefect_crisis.tasks.serving.router import CrisisError\n",
        "def later():\n    import prefect_crisis.tasks.serving.router\n",
        "from . import router\n",
    ],
    ids=["top", "lazy", "relative"],
)
def test_the_cycle_rule_catches_a_planted_cycle(source: str):
    cyclic = {
        "prefect_crisis.tasks.serving.router": "from prefect_crisis.tasks.serving.tasks import x\n",
        "prefect_crisis.tasks.serving.tasks": source,
    }
    assert import_cycles(parse({**BASE, **cyclic})) == [["prefect_crisis.tasks.serving.router", "prefect_crisis.tasks.serving.tasks"]]


def private_prefect_uses(source: str) -> list[str]:
    """Imports of Prefect's internals (and Python's private exit hook) in `source`."""
    from prefect_crisis.core.prefect_compat import PRIVATE_MODULES, PRIVATE_NAMES

    wrong = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PRIVATE_MODULES or (
                node.module.split(".")[0] == "prefect" and any(part.startswith("_") for part in node.module.split("."))
            ):
                wrong.append(f"line {node.lineno}: from {node.module}")
            wrong += [f"line {node.lineno}: {alias.name}" for alias in node.names if alias.name in PRIVATE_NAMES]
        elif isinstance(node, ast.Import):
            wrong += [f"line {node.lineno}: import {alias.name}" for alias in node.names if alias.name in PRIVATE_MODULES]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
            wrong.append(f"line {node.lineno}: .{node.attr}")
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_prefect_internals_only_in_the_compatibility_module(path: Path):
    if path == ROOT / "core" / "prefect_compat.py":
        return
    wrong = private_prefect_uses(path.read_text())
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong) + " (go through prefect_crisis.core.prefect_compat)"


@pytest.mark.parametrize(
    "source",
    [
        "from prefect.events.worker import EventsWorker\n",
        "def later():\n    from prefect.flow_engine import run_flow\n",
        "import threading\nthreading._register_atexit(print)\n",
        "from prefect._internal.concurrency import x\n",
        "from prefect.context import refresh_global_settings_context\n",
    ],
)
def test_the_internals_rule_catches_a_planted_import(source: str):
    assert private_prefect_uses(source)

"""No hand-written wait loop: a `while` loop that sleeps (`time.sleep`, `asyncio.sleep`) belongs in core/waiting.py.

Every module of core/, blocks/, tasks/ and flows/ is parsed (not imported); a loop that waits or retries states its
budget once, through `Retrying` (`poll`, `call`, `attempts`). A loop that waits on an event or a queue
(`stop.wait(interval)`, `queue.get(timeout=...)`) is woken by what it waits for and is not a sleep loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("core", "blocks", "tasks", "flows")
POLICY = "core/waiting.py"  # the one place a loop sleeps: the policy itself

# Sleep loops allowed elsewhere, each with its reason: "path:function" -> why. Empty: there are none.
ALLOWED: dict[str, str] = {}

SLEEPS = {("time", "sleep"), ("asyncio", "sleep")}


def sleep_names(tree: ast.Module) -> set[str]:
    """Bare names bound to a sleep by `from time import sleep` / `from asyncio import sleep as pause`."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in {"time", "asyncio"}
        for alias in node.names
        if alias.name == "sleep"
    }


def is_sleep(call: ast.Call, bare: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return (func.value.id, func.attr) in SLEEPS
    return isinstance(func, ast.Name) and func.id in bare


def sleep_loops(source: str) -> list[tuple[int, str]]:
    """(line, enclosing function) of each `while` loop whose body calls a sleep."""
    tree = ast.parse(source)
    bare = sleep_names(tree)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.While) and any(isinstance(inner, ast.Call) and is_sleep(inner, bare) for inner in ast.walk(child)):
                found.append((child.lineno, name))
            visit(child, name)

    visit(tree, "<module>")
    return found


def modules() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))


def test_no_while_loop_sleeps_outside_the_wait_policy():
    offenders = []
    for path in modules():
        relative = path.relative_to(ROOT).as_posix()
        if relative == POLICY:
            continue
        for line, function in sleep_loops(path.read_text(encoding="utf-8")):
            if f"{relative}:{function}" not in ALLOWED:
                offenders.append(f"{relative}:{line} ({function})")
    assert not offenders, f"hand-written sleep loops; use core/waiting.py's Retrying (poll / call / attempts): {offenders}"


def test_every_allowed_exception_still_exists_and_says_why():
    for key, reason in ALLOWED.items():
        relative, function = key.split(":")
        assert reason.strip(), f"{key}: an allowed sleep loop needs its reason"
        assert any(name == function for _line, name in sleep_loops((ROOT / relative).read_text(encoding="utf-8"))), f"{key}: no longer a sleep loop"


@pytest.mark.parametrize(
    "source",
    [
        "import time\ndef f():\n    while True:\n        time.sleep(1)\n",
        "import asyncio\nasync def f():\n    while not done():\n        await asyncio.sleep(0.5)\n",
        "from time import sleep as pause\ndef f():\n    while x:\n        if y:\n            pause(2)\n",
    ],
)
def test_the_check_catches_a_planted_sleep_loop(source):
    assert sleep_loops(source) == [(3, "f")]


def test_the_check_passes_an_event_wait_and_a_lone_sleep():
    source = "import time\ndef f(stop):\n    while not stop.wait(5):\n        refresh()\n    time.sleep(1)\n"
    assert sleep_loops(source) == []

"""Mutation testing of the decision modules with mutmut 3: how many mutants the unit tests kill.

mutmut 3 names a mutant by the module its file path spells, and the tests import
`prefect_crisis.<folder>` (the folders install under one root, see pyproject's package-dir):
in the repository itself the two never match and every mutant would survive. So the run
happens in a scratch copy laid out as `src/prefect_crisis/<folder>`, with its own
`[tool.mutmut]` and pytest settings; the repository is read, never written (no `mutants/`
in the working tree, nothing for `git status` to show).

    python benchmarks/mutation.py                      # the decision modules, every core
    python benchmarks/mutation.py --max-children 1 --keep /tmp/mutation
    python benchmarks/mutation.py --modules tasks/serving/breaker.py --tests tests/unit/test_breaker.py

Prints killed / survived / kill rate per module and overall, and the surviving mutants
(`mutmut show <name>` in the kept copy shows one). Exit status 1 when the overall kill rate
is under `--fail-under` (default 0: report only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("core", "blocks", "tasks", "flows", "deployments")

# The decision code: judged rules, the rollback decision and the versions it picks from, recovery and its
# verification, the breaker, the health rules, the promotion gate, the outlier fences.
DECISION_MODULES = (
    "tasks/response/rules.py",
    "tasks/response/candidates.py",
    "tasks/response/rollback.py",
    "tasks/response/recovery.py",
    "tasks/serving/breaker.py",
    "tasks/monitoring/health_rules.py",
    "tasks/training/gate.py",
    "core/fences.py",
)
# Fast unit tests that reach those modules (no Prefect server; test_recovery uses a SQLite MLflow store). Left out:
# test_monitoring_rates (a false-alarm simulation: minutes under mutmut's tracing) and the sweeps of test_monitoring.
DECISION_TESTS = (
    "tests/unit/test_decision_guards.py",
    "tests/unit/test_rollback.py",
    "tests/unit/test_decision_invariants.py",
    "tests/unit/test_recovery.py",
    "tests/unit/test_breaker.py",
    "tests/unit/test_promotion_gate.py",
    "tests/unit/test_fences.py",
    "tests/unit/test_health_rules.py",
    "tests/unit/test_rules.py",
    "tests/unit/test_candidates.py",
    "tests/unit/test_rollback_decisions.py",
    "tests/unit/test_monitoring.py::test_a_breach_needs_both_windows",
    "tests/unit/test_monitoring.py::test_checks_compose_with_or_and_each_keeps_its_severity",
    "tests/unit/test_monitoring.py::test_the_quality_rule_breaches_exactly_when_the_rollback_decision_finds_the_rate_degraded",
)
KILLED = {1, 3}  # pytest failed, or errored: the mutant was noticed
TIMEOUT = {-24, 24, 152, 255, 36}  # a mutant that hangs (a loop bound flipped) is counted as killed, as mutmut does


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def layout(source: Path, work: Path, modules: list[str], tests: list[str]) -> None:
    """The scratch copy: src/prefect_crisis/<folder>, the selected tests, and a pyproject with the run's settings."""
    package = work / "src" / "prefect_crisis"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""prefect-crisis, laid out for mutmut (benchmarks/mutation.py)."""\n')
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(source / folder, package / folder, ignore=ignore)
    (work / "tests" / "unit").mkdir(parents=True)
    for support in ("tests/__init__.py", "tests/conftest.py", "tests/helpers.py", "tests/unit/__init__.py", *(t.split("::")[0] for t in tests)):
        if (source / support).exists():
            shutil.copy2(source / support, work / support)
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src/prefect_crisis"]\n'
        f"only_mutate = {toml_list('src/prefect_crisis/' + m for m in modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-x", "-q"]\n'
        "use_git_change_detection = false\n"
        "\n[tool.pytest.ini_options]\n"
        'addopts = "--import-mode=importlib"\n'
        "timeout = 120\n"
        'markers = ["e2e: starts real servers"]\n'
        'filterwarnings = ["ignore::DeprecationWarning"]\n'
    )


def tally(work: Path, modules: list[str]) -> tuple[dict[str, Counter], dict[str, list[str]]]:
    """Per module: the count of each outcome, and the names of the mutants that survived."""
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for module in modules:
        meta = work / "mutants" / "src" / "prefect_crisis" / (module + ".meta")
        if not meta.exists():
            continue
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            outcome = "killed" if code in KILLED or code in TIMEOUT else "survived" if code == 0 else "no tests" if code in (5, 33) else "other"
            counts[module][outcome] += 1
            if outcome in ("survived", "no tests"):
                survivors[module].append(name)
    return counts, survivors


def rate(counter: Counter) -> float:
    judged = counter["killed"] + counter["survived"] + counter["no tests"]
    return counter["killed"] / judged if judged else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO, help="the tree to test (default: this repository)")
    parser.add_argument("--modules", nargs="+", default=list(DECISION_MODULES), help="files to mutate, relative to the tree")
    parser.add_argument("--tests", nargs="+", default=list(DECISION_TESTS), help="test files that judge the mutants")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one, removed)")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this overall kill rate (0-1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="crisis-mutation-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    try:
        layout(args.source.resolve(), work, args.modules, args.tests)
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
        env["CRISIS_HOME"] = str(work / ".crisis")  # tests that write state write it in the copy
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)], cwd=work, env=env, capture_output=True, text=True
        )
        minutes = (time.monotonic() - started) / 60
        counts, survivors = tally(work, args.modules)
        if not any(c["killed"] + c["survived"] for c in counts.values()):
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
            print(f"mutmut produced no results (exit {run.returncode})", file=sys.stderr)
            return 2
        total: Counter = sum(counts.values(), Counter())
        print(f"mutmut over {len(args.modules)} decision modules, {len(args.tests)} test files, {minutes:.1f} min")
        print(f"{'module':40} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'kill rate':>9}")
        for module in args.modules:
            c = counts.get(module, Counter())
            print(f"{module:40} {sum(c.values()):7} {c['killed']:7} {c['survived']:8} {c['no tests']:8} {rate(c):9.1%}")
        print(f"{'overall':40} {sum(total.values()):7} {total['killed']:7} {total['survived']:8} {total['no tests']:8} {rate(total):9.1%}")
        for module, names in survivors.items():
            print(f"\nsurvived in {module}:")
            print("\n".join(f"  {name}" for name in sorted(names)))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "minutes": round(minutes, 1),
                        "modules": {m: dict(counts.get(m, Counter())) | {"kill_rate": rate(counts.get(m, Counter()))} for m in args.modules},
                        "overall": dict(total) | {"kill_rate": rate(total)},
                        "survived": survivors,
                    },
                    indent=2,
                )
            )
        return 1 if rate(total) < args.fail_under else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

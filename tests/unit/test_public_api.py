"""What the README and the docs import, and what a user needs, resolves from the package folders."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import prefect_crisis.blocks
import prefect_crisis.tasks

ROOT = Path(__file__).parents[2]
README = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
FROM_IMPORT = re.compile(r"from (prefect_crisis\.(?:tasks|blocks)) import \(?([\w\s,]+?)\)?\s*$", re.MULTILINE)
DOTTED = re.compile(r"`(prefect_crisis\.(?:tasks|blocks)(?:\.\w+)+)`")


def readme_imports() -> list[tuple[str, str]]:
    found = [(module, name.strip()) for module, names in FROM_IMPORT.findall(README) for name in names.split(",") if name.strip()]
    assert found, "the docs' import lines were not found"
    return found


@pytest.mark.parametrize("module, name", readme_imports())
def test_every_name_the_readme_imports_resolves(module, name):
    assert hasattr(importlib.import_module(module), name), f"README imports {name} from {module}"


@pytest.mark.parametrize("reference", DOTTED.findall(README))
def test_every_dotted_name_the_readme_mentions_resolves(reference):
    parts = reference.split(".")
    for split in range(len(parts), 1, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return
    pytest.fail(f"README mentions {reference}, which does not import")


# The user-facing API: the rollback decision and its values, training with the
# stop hook and its stop conditions, checkpoints, drift.
USER_API = [
    "decide_rollback",
    "DecisionKind",
    "RollbackDecision",
    "LiveWindow",
    "Candidate",
    "Severity",
    "Violation",
    "execute_recovery",
    "ViolationType",
    "train_with_stop_hook",
    "train_model",
    "StopCondition",
    "StopReason",
    "stop_when_flag_set",
    "stop_on_nonfinite_loss",
    "stop_on_divergence",
    "stop_on_stall",
    "stop_after_seconds",
    "stop_any",
    "set_stop_flag",
    "clear_stop_flag",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint_run",
    "Checkpoint",
    "dataframe_drift",
    "numeric_drift",
    "DriftSettings",
    "FeatureDrift",
    "validate_data",
    "diagnose",
    "PolicyError",
    "keep_fallback",
    "fit_fallback",
    "select_fallback_features",
]


@pytest.mark.parametrize("name", USER_API)
def test_the_user_facing_api_is_importable_from_prefect_crisis_tasks(name):
    assert name in prefect_crisis.tasks.__all__
    assert getattr(prefect_crisis.tasks, name) is not None


@pytest.mark.parametrize("name", prefect_crisis.tasks.__all__)
def test_every_exported_task_name_resolves(name):
    getattr(prefect_crisis.tasks, name)  # a stale entry of the lazy table raises here


@pytest.mark.parametrize("name", prefect_crisis.blocks.__all__)
def test_every_exported_block_name_resolves(name):
    getattr(prefect_crisis.blocks, name)

"""The flat layout's module names keep working for one release: every public name a module of
`tasks/` defined before the feature packages still imports through its old module (and from its
package), with a DeprecationWarning that names the new place."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import pytest

from prefect_crisis.tasks import MOVED_MODULES

# Public names of each flat module at the last commit before the move (b655fa6).
FLAT_LAYOUT = json.loads((Path(__file__).parent / "data" / "flat_layout_names.json").read_text())
OLD_PACKAGES = {"validation", "training", "serving", "monitoring", "drills"}  # old modules that are packages now


def test_every_old_module_is_either_moved_or_a_package_now():
    short = {name.rpartition(".")[2] for name in FLAT_LAYOUT}
    assert short == {name.rpartition(".")[2] for name in MOVED_MODULES} | OLD_PACKAGES


@pytest.mark.parametrize("old", sorted(FLAT_LAYOUT), ids=lambda name: name.rpartition(".")[2])
def test_old_names_still_import_with_a_warning(old: str):
    sys.modules.pop(old, None) if old in MOVED_MODULES else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
        missing = [name for name in FLAT_LAYOUT[old] if not hasattr(module, name)]
    assert not missing, f"{old} lost {missing}"
    if old in MOVED_MODULES:
        moved = [str(warning.message) for warning in caught if issubclass(warning.category, DeprecationWarning)]
        assert any(MOVED_MODULES[old] in message for message in moved), moved


def test_an_old_module_reads_the_same_objects_as_the_new_place():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("prefect_crisis.tasks.rollback")
    new = importlib.import_module(MOVED_MODULES["prefect_crisis.tasks.rollback"])
    assert (
        old.decide_rollback is getattr(new, "decide_rollback", None)
        or old.decide_rollback is importlib.import_module("prefect_crisis.tasks.response").decide_rollback
    )


def test_a_name_no_module_ever_had_is_an_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("prefect_crisis.tasks.drift")
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = old.no_such_name

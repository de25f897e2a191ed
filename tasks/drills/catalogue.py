"""The drill scenarios by name, in the order a full drill runs them, and the module each is defined in.

The table is plain data: naming, checking and ordering scenarios (`crisis drill NAME`) imports neither Prefect
nor MLflow; a scenario's value (tasks/drills/scenarios/) is imported when it is run.

Drill models are named `drill-<scenario>-<tag>`: every flow the ladder starts for such a model knows it is a
drill (its incident is marked so), and the ladder's pages skip them (`core.vocabulary.is_drill_model`), so a
drill never pages anyone.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.vocabulary import DRILL_PREFIX
from prefect_crisis.tasks.drills.end_state import END_STATE_TOLERANCE

if TYPE_CHECKING:
    from prefect_crisis.tasks.drills.scenario import Scenario

# scenario -> its module under prefect_crisis.tasks.drills.scenarios, in the order a full drill runs them
SCENARIO_MODULES = {
    "corrupted-batch": "batches",
    "poisoned-retrain": "rollbacks",
    "concept-drift": "escalations",
    "primary-raising": "serving",
    "latency-spike": "serving",
    "registry-unavailable": "outage",
    "training-killed": "training",
    "duplicate-event": "rollbacks",
    "real-bad-release": "rollbacks",
    "real-poisoned-retrain": "rollbacks",
    "real-rejected-batch": "batches",
    "monitor-silent": "escalations",
}
SCENARIO_NAMES = tuple(SCENARIO_MODULES)
__all__ = [
    "END_STATE_TOLERANCE",
    "FRESH_ROWS",
    "PROGRESS",
    "SCENARIO_MODULES",
    "SCENARIO_NAMES",
    "drill_model_name",
    "load_scenario",
    "load_scenarios",
    "scenario_names",
]
PROGRESS = logging.getLogger("prefect_crisis.drill")  # a line per step for a terminal (`crisis drill` shows it); the run log has them too
FRESH_ROWS = 2_000  # fresh labelled rows of the synthetic scenarios (the real ones use their data set's fresh part)


def scenario_names(names: list[str] | None) -> list[str]:
    """The scenarios asked for, in the catalogue's order; all of them when none is named.

    Raises:
        CrisisError: a name is not a scenario (the message lists them).

    Example:
        >>> scenario_names(["latency-spike", "corrupted-batch"])
        ['corrupted-batch', 'latency-spike']
    """
    if not names:
        return list(SCENARIO_NAMES)
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        raise CrisisError(f"no drill scenario {', '.join(map(repr, unknown))}; the scenarios are {', '.join(SCENARIO_NAMES)}")
    return [name for name in SCENARIO_NAMES if name in names]


def drill_model_name(scenario: str, tag: str | None = None) -> str:
    """`drill-<scenario>-<tag>`, a fresh tag unless given.

    Example:
        >>> drill_model_name("latency-spike", "0001")
        'drill-latency-spike-0001'
    """
    return f"{DRILL_PREFIX}{scenario}-{tag or uuid.uuid4().hex[:6]}"


def load_scenario(name: str) -> Scenario[Any]:
    """The scenario called `name`, from its module (imported now: it talks to the stack).

    Raises:
        CrisisError: no scenario has that name (the message lists them).
    """
    (name,) = scenario_names([name])
    module = importlib.import_module(f"prefect_crisis.tasks.drills.scenarios.{SCENARIO_MODULES[name]}")
    return next(scenario for scenario in module.SCENARIOS if scenario.name == name)


def load_scenarios(names: list[str] | None = None) -> dict[str, Scenario[Any]]:
    """The scenarios asked for (all when none is named) by name, in the catalogue's order."""
    return {name: load_scenario(name) for name in scenario_names(names)}

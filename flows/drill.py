"""Recovery drills: faults injected into the running stack, the automated response
awaited, the end state checked, and the times measured.

A scenario is a value (`tasks/drills/scenario.Scenario`, one per fault in tasks/drills/scenarios/): a name, a
description, a time limit, its end state, and setup, inject, expect and clean up over its own typed state.
This flow picks them by name, runs them, and reports.

Each iteration runs on a fresh drill model (`drill-<scenario>-<tag>`), so
iterations never meet each other's versions, cool-downs or incidents, and every
incident the ladder opens for it is marked as a drill (and pages nobody).

Nothing here repairs anything: the drill breaks a model, a batch or a served
primary the way the world would, then waits for the stack (`crisis up --worker`,
`crisis deploy`: the automations, the workers, the MLflow registry, the
inference log) to notice and act, and reads back from Prefect events and the
MLflow audit when it noticed (detect), when the harm stopped reaching clients
(mitigate) and when the model was whole again (recover). Every time counts from
the moment the evidence existed: the labels recorded, the batch sent, the fault
switched on.

A drill passes on its end state (`tasks/drills/end_state.EndState`), the same for every scenario: what
serves after the response scores at least the pre-crisis version's accuracy on
fresh labelled rows, minus `END_STATE_TOLERANCE`; the episode opened the
incidents it should (one, unless the scenario says why not); no row was lost.
The `real-*` scenarios run real models on the bundled real data sets
(tasks/drills/real_models.py), where a wrong repair costs far more than the tolerance.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.paths import artifact_key, crisis_home
from prefect_crisis.flows.validation import validate_batch
from prefect_crisis.tasks.drills.catalogue import PROGRESS, drill_model_name, load_scenarios, scenario_names
from prefect_crisis.tasks.drills.observe import check_end_state
from prefect_crisis.tasks.drills.report import describe, summarize, write_report
from prefect_crisis.tasks.drills.scenario import Drill, DrillResult, Scenario
from prefect_crisis.tasks.run_logs import quiet_expected_errors


def say(line: str) -> None:
    """A progress line: into the drill's run log (log_prints) and to `prefect_crisis.drill` for a terminal."""
    print(line)
    PROGRESS.info(line)


def run_iteration(scenario: Scenario[Any], iteration: int, seed: int, progress: Callable[[str], None] = say) -> DrillResult:
    """Set up, inject, expect and clean up once; an exception anywhere is a failure with its reason, never a crash."""
    drill = Drill(
        scenario.name, iteration, seed, drill_model_name(scenario.name), scenario.limit, scenario.new_state(), validate_batch=validate_batch
    )
    drill.facts.update(pre_accuracy=None, end_accuracy=None, incidents=None)
    progress(f"{scenario.name} #{iteration} (seed {seed}): {scenario.summary} [{drill.model}]")
    started = time.monotonic()
    try:
        scenario.setup(drill)
        scenario.inject(drill)
        scenario.expect(drill)
        check_end_state(drill, scenario.end)
    except Exception as error:
        drill.failures.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    finally:
        try:
            scenario.clean_up(drill)
        except Exception as error:
            drill.failures.append(f"cleanup: {type(error).__name__}: {error}")
    result = DrillResult.of(drill, round(time.monotonic() - started, 2))
    progress(describe(result))
    return result


@flow(name="crisis-drill", log_prints=True)
def crisis_drill(scenarios: list[str] | None = None, iterations: int = 1, seed: int = 0) -> dict[str, Any]:
    """Run recovery drills against the running stack and report success rate and times per scenario.

    Args:
        scenarios: scenario names (see `tasks/drills/catalogue.py`); empty: all of them.
        iterations: runs per scenario, each on a fresh drill model, seeds `seed`, `seed + 1`, ...
        seed: the first iteration's seed.

    Raises:
        CrisisError: an unknown scenario, or iterations below 1 (a usage error).
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    names = scenario_names(scenarios)
    if iterations < 1:
        raise CrisisError(f"iterations must be at least 1, not {iterations}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scenarios_by_name = load_scenarios(names)
    results = [run_iteration(scenarios_by_name[name], iteration, seed + iteration) for name in names for iteration in range(iterations)]
    summary = summarize(results)
    report, picture = write_report(results, crisis_home() / "drills", stamp)
    create_table_artifact(key=artifact_key("drill", "report"), table=summary, description=f"Recovery drills {stamp}: success rate and times (s)")
    lines = [f"# Recovery drills {stamp}", "", f"{sum(r.passed for r in results)} of {len(results)} runs passed. JSON: `{report.name}`", ""]
    if picture is not None:
        lines += ["![times](data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode() + ")", ""]
    lines += [f"- {describe(result)}" for result in results]
    create_markdown_artifact(key=artifact_key("drill", "times"), markdown="\n".join(lines), description="Recovery drills: every run")
    return {"summary": summary, "runs": [asdict(result) for result in results], "json": str(report), "png": str(picture) if picture else None}

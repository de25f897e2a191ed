"""`crisis drill`: recovery drills against the running stack (flows/drill.py).

The drills need what a real crisis needs: the server, the deployments and the
ladder's automations (`crisis deploy`), and workers polling the pools
(`crisis up --worker`). Each is checked first and named in one line when it is
missing, so a drill never waits out its time limit on a stack that cannot act.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import cyclopts
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prefect_crisis.core.errors import CrisisError, ExitCode, StackError

console = Console(highlight=False)
progress_console = Console(highlight=False, stderr=True)  # with --json, stdout carries only the report
WORKER_SEEN_WITHIN = timedelta(seconds=90)  # a worker whose last heartbeat is older is not polling


def check_workers(client, pools: set[str]) -> None:
    """Every pool the ladder's deployments run on has a worker that polled lately.

    Raises:
        StackError: a pool is missing or nobody polls it (one line naming `crisis up --worker`).
    """
    from prefect.exceptions import ObjectNotFound

    now = datetime.now(UTC)
    for pool in sorted(pools):
        try:
            workers = client.read_workers_for_work_pool(pool)
        except ObjectNotFound:
            raise StackError(f"work pool {pool!r} is not on the server: run `crisis deploy`, then `crisis up --worker`") from None
        if not any(worker.last_heartbeat_time and now - worker.last_heartbeat_time < WORKER_SEEN_WITHIN for worker in workers):
            raise StackError(f"no worker polls {pool!r}: start them with `crisis up --worker` (the drills wait for the automated response)")


def check_stack_can_respond() -> None:
    """The ladder's deployments and automations exist and workers poll.

    Raises:
        StackError: something the automated response needs is missing.
    """
    from prefect.client.orchestration import get_client

    from prefect_crisis.blocks.escalation_policy import LadderStep
    from prefect_crisis.deployments.automations import resolve_deployment_ids

    with get_client(sync_client=True) as client:
        ids = resolve_deployment_ids(client)
        missing = [step.automation_name for step in LadderStep if not client.read_automations_by_name(step.automation_name)]
        if missing:
            raise StackError(f"automation(s) {', '.join(missing)} not on the server: run `crisis deploy`")
        pools = {name: client.read_deployment(deployment_id).work_pool_name for name, deployment_id in ids.items()}
        unpooled = sorted(name for name, pool in pools.items() if pool is None)
        if unpooled:
            raise StackError(f"deployment(s) {', '.join(unpooled)} run on no work pool, so no worker runs the response: run `crisis deploy`")
        check_workers(client, {pool for pool in pools.values() if pool is not None})


class _Terminal(logging.Handler):
    def __init__(self, out: Console):
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        style = "red" if "FAILED" in line else ("green" if ": passed;" in line else "")
        self.out.print(f"[{style}]{escape(line)}[/{style}]" if style else escape(line), soft_wrap=True)


def drill(
    *scenarios: str,
    iterations: Annotated[int, cyclopts.Parameter("--iterations", help="Runs per scenario, each on a fresh drill model.")] = 1,
    seed: Annotated[int, cyclopts.Parameter("--seed", help="Seed of the first run; run i uses seed + i.")] = 0,
    json_output: Annotated[bool, cyclopts.Parameter("--json", negative=(), help="Print the report as JSON instead of a table.")] = False,
    timelines: Annotated[
        bool, cyclopts.Parameter("--timelines", negative=(), help="Also print each run's incident timeline with its times.")
    ] = False,
    home: Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")] = None,
) -> None:
    """Inject faults into the running stack and time its automated response: crisis drill [SCENARIO ...] (all when none).

    Scenarios: corrupted-batch, poisoned-retrain, concept-drift, primary-raising, latency-spike, registry-unavailable,
    training-killed, duplicate-event, real-bad-release, real-poisoned-retrain, real-rejected-batch, monitor-silent.
    A run passes on its end state: accuracy on fresh labelled rows no lower than before the fault (within 0.03),
    the incidents its episode should open, no row lost. Exit 0 when every run ended as expected, 1 when one did not
    (the report says why), 2 for an unknown scenario, 4 when the stack cannot respond (no server, no `crisis deploy`,
    no worker).
    """
    from prefect_crisis.deployments import stack
    from prefect_crisis.deployments.commands import LONG_COMMAND
    from prefect_crisis.deployments.commands import exit_for_failure as _exit_for_failure
    from prefect_crisis.deployments.commands import quiet_console as _quiet_console

    if iterations < 1:
        raise CrisisError(f"--iterations must be at least 1, not {iterations}")
    local = stack.configured_api_url() is None
    with stack.use_stack(home, **LONG_COMMAND) as api_url:
        from prefect_crisis.tasks.drills.catalogue import PROGRESS, scenario_names

        names = scenario_names(list(scenarios))  # an unknown name: one line, before anything runs
        check_stack_can_respond()
        from prefect_crisis.flows.drill import crisis_drill

        out = progress_console if json_output else console
        out.print(f"drilling {', '.join(names)} x{iterations} against {api_url} (the stack responds on its own; progress below)", soft_wrap=True)
        handler = _Terminal(out)
        PROGRESS.addHandler(handler)
        PROGRESS.setLevel(logging.INFO)
        # a drill's breaker trips and event flushes are expected, and its progress lines say what they mean
        quieted = {name: logging.getLogger(name).level for name in ("prefect_crisis.serving", "EventsWorker")}
        for name in quieted:
            logging.getLogger(name).setLevel(logging.ERROR)
        end_watch = stack.watch_local_server(home, _stack_went_down) if local else (lambda: None)
        try:
            with _quiet_console():
                state = crisis_drill(scenarios=names, iterations=iterations, seed=seed, return_state=True)
        finally:
            end_watch()
            PROGRESS.removeHandler(handler)
            for name, level in quieted.items():
                logging.getLogger(name).setLevel(level)
        if state.is_failed():
            _exit_for_failure(state)
        report = state.result()
        if json_output:
            print(json.dumps(report, indent=2, default=str))
        else:
            _print_summary(report["summary"])
            console.print(f"report: {report['json']}" + (f", times: {report['png']}" if report["png"] else ""), soft_wrap=True)
            console.print(
                f"in the Prefect UI: {api_url.removesuffix('/api')}/runs/flow-run/{state.state_details.flow_run_id} (artifacts drill-report, drill-times)",
                soft_wrap=True,
            )
            if timelines:  # read from the stack's server: inside use_stack, which points Prefect at it
                _print_timelines(report["runs"])
    if not all(row["success_rate"] == 1.0 for row in report["summary"]):
        sys.exit(ExitCode.FAILURE)


def _stack_went_down(why: str) -> None:
    """The local stack stopped under a running drill: one line and exit 4 at once. The drill's flow runs in this
    process's main thread, blocked on calls to a server that is gone (each retried, then its crash reported to
    that same server): nothing of the drill can be recorded any more, so nothing is waited for."""
    import os

    console.print(
        f"[red]error:[/red] the local Prefect server stopped during the drill ({why}): the drill cannot go on; `crisis up --worker` and run it again",
        soft_wrap=True,
    )
    console.file.flush()
    os._exit(ExitCode.STACK)


def shown_seconds(value: float | None) -> str:
    """Seconds in at most four characters' precision: `0.87`, `12.4`; `-` for none.

    Example:
        >>> shown_seconds(0.874), shown_seconds(12.44), shown_seconds(None)
        ('0.87', '12.4', '-')
    """
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def shown_accuracy(row: dict) -> str:
    """`before>after`: mean accuracy on fresh rows before the fault and once the stack responded; `-` where the scenario
    does not measure it.

    Example:
        >>> shown_accuracy({"pre_accuracy": 0.9582, "end_accuracy": 0.9577}), shown_accuracy({"pre_accuracy": None, "end_accuracy": None})
        ('0.958>0.958', '-')
    """
    if row.get("pre_accuracy") is None or row.get("end_accuracy") is None:
        return "-"
    return f"{row['pre_accuracy']:.3f}>{row['end_accuracy']:.3f}"


def shown_incidents(row: dict) -> str:
    """Incidents opened per episode: `1`, or `0-1` when runs differ.

    Example:
        >>> shown_incidents({"incidents_min": 1, "incidents_max": 1}), shown_incidents({"incidents_min": 0, "incidents_max": 1})
        ('1', '0-1')
    """
    fewest, most = row.get("incidents_min"), row.get("incidents_max")
    if fewest is None:
        return "-"
    return str(fewest) if fewest == most else f"{fewest}-{most}"


def _print_summary(rows: list[dict]) -> None:
    def pair(row: dict, measure: str) -> str:
        return f"{shown_seconds(row[f'{measure}_p50_s'])}/{shown_seconds(row[f'{measure}_p95_s'])}"

    # no outer border and one space between columns: with the end state the table still fits 80 columns
    table = Table(
        title="recovery drills",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        caption="seconds from the fault, p50/p95 (recover max: the JSON); accuracy on fresh rows before>after "
        "the fault (mean); incidents opened per episode",
    )
    table.add_column("scenario", no_wrap=True)
    for column in ("ok", "detect", "mitigate", "recover", "accuracy", "inc"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row["scenario"],
            f"{row['passed']}/{row['runs']}",
            pair(row, "detect"),
            pair(row, "mitigate"),
            pair(row, "recover"),
            shown_accuracy(row),
            shown_incidents(row),
        )
    console.print(table)
    for row in rows:
        if row["failures"]:
            console.print(f"[red]{escape(row['scenario'])}[/red]: {escape(row['failures'])}", soft_wrap=True)


def _print_timelines(runs: list[dict]) -> None:
    """Each run's incident as `crisis incident show` prints it (steps, actors, times to detect, decide, recover)."""
    from prefect_crisis.core.errors import IncidentError
    from prefect_crisis.tasks.response.report import wait_for_incident_end

    for run in runs:
        if not run["incident"]:
            continue
        console.rule(f"{run['scenario']} #{run['iteration']}")
        # a warning's diagnosis has no recovery outcome to wait for (the drill waited for its run to end)
        outcome_s = 0 if run["facts"].get("warns_at_most") else 15
        try:
            lines = wait_for_incident_end(run["incident"], timeout=outcome_s).lines()
        except IncidentError as error:
            lines = [f"incident {run['incident']}: {error}"]
        for line in lines:
            console.print(escape(line), soft_wrap=True)

"""The `crisis` command line, in the style of Prefect's own (cyclopts).

    crisis up        start the local Prefect server (state in .crisis/) and the MLflow UI; --worker also its workers (crisis-pool, crisis-responders)
    crisis status    what runs: Prefect server, MLflow store
    crisis env       the exports that connect a shell: eval "$(crisis env)"
    crisis deploy    create the work pool crisis-pool and deploy the flows with the stack's state folder
    crisis demo      run the demo flow on the stack and show what it left
    crisis validate  validate one parquet/CSV batch against a saved contract
    crisis train     train a model on one batch (validate, train, register, gate)
    crisis stop      raise a model's stop flag: its training halts at the next mini-batch
    crisis resume    lower the stop flag
    crisis serve     serve a model's champion with its fallback behind it (MLflow's scoring server)
    crisis drill     inject faults into the running stack and time its automated response (recovery drills)
    crisis down      stop the local Prefect server, its workers and the MLflow UI

Exit codes (`ExitCode`): 0 done; 1 a bug (or the demo's story did not
happen); 2 a usage or input error; 3 a batch rejected or a training stopped;
4 the stack or server cannot be reached (or cannot respond: `crisis drill`
without deployments or workers); 1 also for a drill that did not recover. Expected errors are one line;
`--debug` (anywhere on the command line) adds their tracebacks.
"""

from __future__ import annotations

import json as _json
import os
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Annotated

import cyclopts
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prefect_crisis.core.errors import CrisisError, DataInputError, DemoError, ExitCode, InputErrorReason, StackError
from prefect_crisis.core.paths import crisis_home, default_tracking_uri, validate_model_name
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.deployments import stack
from prefect_crisis.deployments.commands import LONG_COMMAND, SHORT_COMMAND
from prefect_crisis.deployments.commands import exit_for_failure as _exit_for_failure
from prefect_crisis.deployments.commands import quiet_console as _quiet_console
from prefect_crisis.deployments.connect_cli import deploy, env
from prefect_crisis.deployments.contract_cli import contract_app
from prefect_crisis.deployments.drill_cli import drill
from prefect_crisis.deployments.process import NO_SERVER
from prefect_crisis.deployments.serve_cli import serve

app = cyclopts.App(name="crisis", help="Crisis response for continuously trained ML systems, on Prefect and MLflow.")
console = Console(highlight=False)

app.command(contract_app)
app.command(env)
app.command(deploy)
app.command(serve)
app.command(drill)
incident_app = cyclopts.App(name="incident", help="Incidents: list them, and show one's timeline from Prefect events and the MLflow audit.")
app.command(incident_app)
JsonOption = Annotated[bool, cyclopts.Parameter("--json", negative=(), help="Print JSON instead of lines.")]

HomeOption = Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")]


@app.command
def up(
    *,
    port: Annotated[int, cyclopts.Parameter("--port", help="Port of the local server.")] = 4200,
    home: HomeOption = None,
    timeout: Annotated[float, cyclopts.Parameter("--timeout", help="Seconds to wait for the server's health check.")] = 90.0,
    worker: Annotated[
        bool,
        cyclopts.Parameter(
            "--worker", negative=(), help="Also run the workers: a process worker on crisis-pool and the warm worker on crisis-responders."
        ),
    ] = False,
    postgres: Annotated[
        bool,
        cyclopts.Parameter(
            "--postgres",
            negative=(),
            help=(
                "Run the server on a private PostgreSQL cluster in the state folder (needs initdb and pg_ctl): "
                "automations act in ~0.1 s instead of ~2 s on SQLite."
            ),
        ),
    ] = False,
    database: Annotated[
        str | None,
        cyclopts.Parameter(
            "--database", help=("The server's database as an SQLAlchemy URL (postgresql+asyncpg://...) [default: SQLite in the state folder].")
        ),
    ] = None,
    mlflow_ui: Annotated[
        bool,
        cyclopts.Parameter(
            "--mlflow-ui",
            negative="--no-mlflow-ui",
            help=("Also run the MLflow UI (`mlflow server --workers 1`) on 127.0.0.1 over the stack's MLflow store."),
        ),
    ] = True,
    mlflow_port: Annotated[
        int | None, cyclopts.Parameter("--mlflow-port", help="Port of the MLflow UI [default: 5000, or a free one when 5000 is taken].")
    ] = None,
) -> None:
    """Start the local Prefect server on 127.0.0.1, unless PREFECT_API_URL names one; --worker also runs what executes deployments."""
    configured = stack.configured_api_url()
    if configured:
        console.print(f"PREFECT_API_URL is set: using {mask_uri(configured)}, nothing started")
        if worker:
            _start_worker(stack.require_server(home), home)
        return
    if postgres and database:
        raise CrisisError("--postgres starts a private database, --database names one: pass one of them")
    if database and not database.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise CrisisError(
            f"--database {mask_uri(database)}: the Prefect server needs an async driver URL, postgresql+asyncpg://... or sqlite+aiosqlite:///..."
        )
    from prefect_crisis.deployments.postgres import cluster_exists, read_cluster, start_cluster, stop_cluster

    stack_home = (home or crisis_home()).resolve()
    already_running = stack.running_server(home)
    if already_running is not None:
        _check_same_database(already_running, stack_home, postgres, database)
    elif not postgres and not database and cluster_exists(stack_home):
        console.print(
            "[yellow]this state folder has a PostgreSQL cluster from `crisis up --postgres`: starting on SQLite, "
            "whose deployments and runs are others; `crisis down` and `crisis up --postgres` to use it[/yellow]"
        )
    from prefect_crisis.deployments.mlflow_ui import launch_mlflow_ui, store_uri

    ui_launch = launch_mlflow_ui(home, mlflow_port) if mlflow_ui else None  # it imports for seconds: meanwhile the Prefect server starts
    started_cluster = False
    if postgres and already_running is None:
        if not stack.port_free("127.0.0.1", port):
            raise StackError(f"port {port} on 127.0.0.1 is in use by another process: pass --port to use another one")
        started_cluster = read_cluster(stack_home) is None
        database = start_cluster(stack_home, progress=console.print).url()
    try:
        state = stack.start_server(home, port=port, timeout=timeout, progress=console.print, database_url=database)
    except CrisisError:
        if started_cluster:
            stop_cluster(stack_home)  # this command started it: a failed start leaves nothing running
        if ui_launch is not None:
            ui_launch.abandon()
        raise
    console.print(f"Prefect server database: {state.database}")
    console.print(f"[green]Prefect server ready[/green]: UI {state.ui_url}  API {state.api_url}")
    console.print(f"MLflow tracking URI: {mask_uri(store_uri(stack_home))}")
    _report_mlflow_ui(ui_launch)
    home_flag = f" --home {state.home}" if home is not None else ""
    console.print(f'connect a shell or a Python process: eval "$(crisis env{home_flag})"', soft_wrap=True)
    from prefect_crisis.deployments.leftovers import mark_dead_train_runs_crashed, mark_leftovers_crashed

    # Before the workers start: a run a fresh worker picks up is live, never a leftover to crash.
    if already_running is None:
        leftovers = mark_leftovers_crashed(state.api_url, store_uri(stack_home))
    else:
        leftovers = mark_dead_train_runs_crashed(state.api_url, store_uri(stack_home))
    if leftovers.flow_runs or leftovers.training_runs:
        console.print(leftovers.summary())
    if worker:
        _start_worker(state.api_url, home)


def _report_mlflow_ui(launch) -> None:
    """Wait for the MLflow UI and print its URL; a UI that does not start is a warning, not a failed stack
    (the flows use the store directly; only people need the UI)."""
    from prefect_crisis.deployments.mlflow_ui import is_remote

    if launch is None:
        tracking = default_tracking_uri()
        if is_remote(tracking):
            console.print(f"MLflow UI: {mask_uri(tracking)} (the tracking server named by MLFLOW_TRACKING_URI)")
        return
    try:
        ui = launch.wait()
    except StackError as error:
        console.print(f"[yellow]MLflow UI not started: {error}[/yellow]", soft_wrap=True)
        return
    console.print(f"[green]MLflow UI ready[/green]: {ui.url} (pid {ui.pid}{', already running' if launch.already_running else ''})")


def _check_same_database(running: stack.ServerState, home: Path, postgres: bool, database: str | None) -> None:
    """Refuse to report a running server as ready when it is not on the database asked for, or its cluster is down.

    Raises:
        StackError: the running server uses another database, or the stack's PostgreSQL is not running.
    """
    from prefect_crisis.deployments.postgres import read_cluster

    cluster = read_cluster(home)
    on_cluster = cluster is not None and running.database.startswith("postgresql+asyncpg://") and f":{cluster.port}/" in running.database
    if postgres and not on_cluster:
        raise StackError(f"the running server uses {running.database}, not the stack's PostgreSQL: `crisis down`, then `crisis up --postgres`")
    if database and mask_uri(database) != running.database:
        raise StackError(f"the running server uses {running.database}, not {mask_uri(database)}: `crisis down` first")
    if on_cluster and cluster is not None and not cluster.running():
        raise StackError(
            f"the stack's PostgreSQL (port {cluster.port}) is not running, so the server cannot read or write: "
            "`crisis down`, then `crisis up --postgres`"
        )


def _start_worker(api_url: str, home: Path | None) -> None:
    from prefect_crisis.deployments.worker import start_workers

    for state in start_workers(api_url, home):
        what = "warm worker (crisis flows, in-process)" if state.kind == "warm" else "process worker"
        console.print(f"{what} on {state.pool} (pid {state.pid}, log {state.log})")


@app.command
def down(
    *,
    home: HomeOption = None,
    purge: Annotated[
        bool,
        cyclopts.Parameter(
            "--purge",
            negative=(),
            help=(
                "Also delete the stack's PostgreSQL cluster (its data folder, password and log; under /var/tmp when "
                "its account could not reach the state folder)."
            ),
        ),
    ] = False,
) -> None:
    """Stop the local Prefect server started by `crisis up` (and its worker); --purge also deletes its PostgreSQL data."""
    from prefect_crisis.deployments.worker import stop_workers

    for stopped_worker in stop_workers(home):
        console.print(f"stopped {stopped_worker.kind} worker (pid {stopped_worker.pid})")
    from prefect_crisis.deployments.mlflow_ui import stop_mlflow_ui

    stopped_ui = stop_mlflow_ui(home)
    if stopped_ui is not None:
        console.print(f"stopped the MLflow UI (pid {stopped_ui.pid})")
    outcome = stack.stop_server(home)
    if outcome is None:
        console.print("no local Prefect server recorded: nothing to stop")
    elif outcome.stopped:
        console.print(f"stopped Prefect server (pid {outcome.state.pid})")
    else:
        console.print(f"stale server record ({outcome.stale_reason}): no process signalled, record cleared")
    from prefect_crisis.deployments.postgres import purge_cluster, read_cluster, stop_cluster

    recorded_cluster = read_cluster((home or crisis_home()).resolve())
    cluster = stop_cluster(home or crisis_home())
    if cluster is not None:
        console.print(
            f"stopped the stack's PostgreSQL (port {cluster.port}; " + ("data deleted below)" if purge else f"data kept in {cluster.data})")
        )
    if purge:
        # stop_cluster dropped the record: the folder it named is passed on
        deleted = purge_cluster(home or crisis_home(), recorded_cluster.folder if recorded_cluster else None)
        console.print(f"deleted the stack's PostgreSQL data: {', '.join(map(str, deleted))}" if deleted else "no PostgreSQL data to delete")


@app.command
def status(model: str | None = None, *, json: JsonOption = False, home: HomeOption = None) -> None:
    """Say what runs (server, its database, workers, MLflow store); with MODEL, its crisis picture too: exit 3 when it is in crisis."""
    report = stack.stack_status(home)
    if report["prefect"]["healthy"]:
        _mark_dead_train_runs(home, quiet=json)
    if model is not None:
        from prefect_crisis.deployments.status_cli import print_model_status, read_model_dashboard, read_policy_sources

        validate_model_name(model)
        with stack.use_stack(home, **SHORT_COMMAND):
            board = read_model_dashboard(model)
            policies = read_policy_sources(model)
        if not json:
            _print_stack(report, home)
        print_model_status(board, console, json, report, policies)
        return
    if json:
        print(_json.dumps(report, default=str))
    else:
        _print_stack(report, home)
    if report["prefect"]["source"] != NO_SERVER and not report["prefect"]["healthy"]:
        sys.exit(ExitCode.STACK)  # a server is recorded or configured and cannot be used: said above, exit 4


def _mark_dead_train_runs(home: Path | None, quiet: bool) -> None:
    """Mark Crashed the runs of a killed `crisis train` (a warning, not a failed status, when the server will not say)."""
    from prefect_crisis.deployments.leftovers import mark_dead_train_runs_crashed
    from prefect_crisis.deployments.mlflow_ui import store_uri

    api_url = stack.resolve_api_url(home)
    if api_url is None:
        return
    try:
        with stack.use_stack(home, **SHORT_COMMAND):
            marked = mark_dead_train_runs_crashed(api_url, store_uri(home))
    except (StackError, httpx.HTTPError) as error:
        console.print(f"[yellow]runs of a killed `crisis train` not checked: {escape(str(error))}[/yellow]", soft_wrap=True)
        return
    if (marked.flow_runs or marked.training_runs) and not quiet:
        console.print(marked.summary())


def _print_stack(report: stack.StackStatus, home: Path | None) -> None:
    table = Table(show_header=False, box=None)
    prefect = report["prefect"]
    table.add_row("home", str(report["home"]))
    condition = "healthy" if prefect["healthy"] else prefect.get("problem") or "not running"
    table.add_row("prefect", f"{prefect['source']}: {prefect.get('api_url', '-')} ({condition})")
    if "database" in prefect:
        from prefect_crisis.deployments.postgres import read_cluster

        cluster = read_cluster(Path(str(report["home"])))
        running = "" if cluster is None else f" ({'running' if cluster.running() else 'NOT RUNNING: crisis down, then crisis up --postgres'})"
        table.add_row("prefect database", f"{prefect['database']}{running}")
    if "ui_url" in prefect:
        table.add_row("prefect UI", str(prefect["ui_url"]))
    table.add_row("mlflow", str(report["mlflow_tracking_uri"]))
    ui = report.get("mlflow_ui") or {}
    if ui.get("url"):
        condition = "healthy" if ui.get("healthy") else ui.get("problem") or "not answering"
        table.add_row("mlflow UI", f"{ui.get('url')} ({condition})")
    from prefect_crisis.deployments.worker import read_workers, worker_alive

    for worker in read_workers(home):
        label = "warm worker" if worker.kind == "warm" else "worker"
        table.add_row(label, f"{worker.pool} (pid {worker.pid}, {'running' if worker_alive(worker) else 'gone: crisis up --worker restarts it'})")
    console.print(table)


@app.command
def demo(
    *,
    model: Annotated[
        str, cyclopts.Parameter("--model", help="Prefix of the demo's model name; each run trains its own <prefix>-<time>-<id>.")
    ] = "synthetic",
    rows: Annotated[int, cyclopts.Parameter("--rows", help="Rows per batch (1,000 to 1,000,000).")] = 5_000,
    home: HomeOption = None,
) -> None:
    """Run the demo on the stack (validate a stream, train, stop, resume, roll back a poisoned version), then read back what it left."""
    validate_model_name(model)
    with stack.use_stack(home, **LONG_COMMAND) as api_url:  # before the slow imports: a dead server is told at once
        from prefect_crisis.blocks import ModelRegistry
        from prefect_crisis.deployments.inspect import read_artifacts_of_flow_run
        from prefect_crisis.flows.demo import crisis_demo
        from prefect_crisis.tasks.drills.synthetic import check_demo_rows, demo_model_name

        check_demo_rows(rows)  # before anything is written
        model = demo_model_name(model)
        console.print(f"running the demo for model {model!r} against {mask_uri(api_url)} (run logs stay in the runs)")
        with _quiet_console():
            state = crisis_demo(model_name=model, rows=rows, return_state=True)
        if state.is_failed():
            _exit_for_failure(state)
        summary = state.result()
        console.rule("prefect-crisis demo")
        for number, row in enumerate(summary, start=1):
            console.print(
                f"{number:2}. {escape(row['step'])} {escape('[' + str(row['condition']) + ']')}: [bold]{escape(str(row['outcome']))}[/bold] - {escape(str(row['detail']))}",
                soft_wrap=True,
            )
        console.rule()
        registry = ModelRegistry(model_name=model)
        champion = registry.champion()
        console.print(f"MLflow registry {registry.display_tracking_uri}: champion of {model!r} is v{champion.version if champion else '-'}")
        registry.settle_audit()  # shown settled: reading the audit never writes
        for move in registry.audit_trail(registry.champion_alias)[-3:]:
            console.print(f"  audit {move.at:%H:%M:%S} {move.action}: champion v{move.from_version or '-'} -> v{move.to_version} ({move.reason})")
        demo_run = state.state_details.flow_run_id
        if demo_run is None:
            raise DemoError("the demo's final state names no flow run: its artifacts cannot be read back")
        artifacts = read_artifacts_of_flow_run(demo_run)
        console.print(f"{len(artifacts)} artifacts visible through the Prefect API for this demo and its subflows:")
        kinds = Counter((artifact.key or "(unkeyed)", artifact.type) for artifact in artifacts)
        for (key, kind), count in sorted(kinds.items()):
            console.print(f"  {count} x {kind:8} {key}")
        ui_url = api_url.removesuffix("/api")
        console.print(f"open {ui_url}/runs/flow-run/{state.state_details.flow_run_id} to read the timeline")
        from prefect_crisis.tasks.response.report import wait_for_incident_end

        incident = summary[-1]["condition"]
        console.rule(f"crisis incident show {incident}")
        for line in wait_for_incident_end(incident).lines():
            console.print(line, soft_wrap=True, markup=False)


@incident_app.command(name="list")
def incident_list(model: str | None = None, *, json: JsonOption = False, home: HomeOption = None) -> None:
    """The incidents opened in the last 30 days (of MODEL, when given), oldest first."""
    if model is not None:
        validate_model_name(model)
    with stack.use_stack(home, **SHORT_COMMAND):
        from prefect_crisis.tasks.response.report import opened_incidents

        opened = [event.payload | {"flow_run": event.payload.get("flow_run_id")} for event in opened_incidents(model)]
    if json:
        print(_json.dumps(opened, default=str))
        return
    if not opened:
        console.print("no incident opened in the last 30 days" + (f" for {model!r}" if model else ""))
    for incident in opened:
        drill = " (drill)" if incident.get("drill") else ""
        console.print(
            f"{incident['id']}  {incident['opened_at']}  {incident['model']}  {incident['severity']} {incident['violation']}{drill}", soft_wrap=True
        )


@incident_app.command(name="show")
def incident_show(incident_id: str, *, json: JsonOption = False, home: HomeOption = None) -> None:
    """The timeline of incident INCIDENT_ID: one line per step, and the times to detect, decide and recover."""
    with stack.use_stack(home, **SHORT_COMMAND):
        from prefect_crisis.tasks.response.report import incident_report

        report = incident_report(incident_id)
    if json:
        print(_json.dumps(report.to_dict(), default=str))
        return
    for line in report.lines():
        console.print(line, soft_wrap=True, markup=False)


def _existing_batch(batch: Path) -> str:
    """The batch's absolute path, or a one-line error before any run starts."""
    if not batch.is_file():
        raise DataInputError(InputErrorReason.MISSING_SOURCE, f"batch {str(batch)!r} does not exist: check the path")
    return str(batch.resolve())


@app.command
def validate(
    batch: Path,
    *,
    model: Annotated[str, cyclopts.Parameter("--model", help="Model name the batch feeds.")],
    contract: Annotated[str, cyclopts.Parameter("--contract", help="Name of the saved DataContract block.")],
    home: HomeOption = None,
) -> None:
    """Validate one parquet or CSV batch against a saved DataContract block."""
    from prefect_crisis.flows.validation import validate_batch
    from prefect_crisis.tasks.loading import load_contract
    from prefect_crisis.tasks.validation.report import Verdict

    validate_model_name(model)
    batch_path = _existing_batch(batch)
    with stack.use_stack(home, **LONG_COMMAND):
        load_contract(contract)  # a missing block is one clear line here, not a failed run
        report = validate_batch(model_name=model, contract_block=contract, batch_path=batch_path)
    console.print(f"{report.verdict.value}: {report.kept} kept, {report.quarantined} quarantined of {report.rows}")
    for reason in report.rejection_reasons:
        console.print(f"  rejected because: {reason}", soft_wrap=True)
    for finding in report.findings:
        console.print(f"  finding: {escape(finding.message)}", soft_wrap=True)
    if report.verdict is Verdict.REJECT:
        console.print("  serving is untouched: a rejected batch only keeps its rows out of training", soft_wrap=True)
        sys.exit(ExitCode.REJECTED)


@app.command
def stop(
    model: str,
    *,
    reason: Annotated[str, cyclopts.Parameter("--reason", help="Why; recorded in the flag, the event and the run.")] = "stopped by an operator",
    force: Annotated[bool, cyclopts.Parameter("--force", help="Raise the flag even for a model the MLflow store does not know yet.")] = False,
    home: HomeOption = None,
) -> None:
    """Raise MODEL's stop flag (Prefect Variable crisis-stop-MODEL); `--force` for a model not trained yet."""
    validate_model_name(model)
    try:
        with stack.use_stack(home, **SHORT_COMMAND):  # checked first: an unreachable server is the news that matters
            if not force:
                check_known_model(model)
            from prefect_crisis.tasks.training.stop_flag import set_stop_flag, stop_flag_name

            set_stop_flag(model, reason)
    except StackError as error:
        raise StackError(f"{error}; the stop flag was NOT raised: {other_ways_to_stop(model)}") from None
    except httpx.HTTPError as error:
        raise StackError(
            f"the Prefect server did not take the stop flag ({type(error).__name__}); the stop flag was NOT raised: {other_ways_to_stop(model)}"
        ) from None
    console.print(f"stop flag {stop_flag_name(model)!r} raised: training of {model} halts at its next mini-batch")


@app.command
def resume(model: str, *, home: HomeOption = None) -> None:
    """Lower MODEL's stop flag so training may run again."""
    validate_model_name(model)
    with stack.use_stack(home, **SHORT_COMMAND):
        from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, stop_flag_name

        was_set = clear_stop_flag(model)
    console.print(f"stop flag {stop_flag_name(model)!r} {'lowered' if was_set else 'was not raised'}")


@app.command
def train(
    *,
    model: Annotated[str, cyclopts.Parameter("--model", help="Registered model name.")] = "synthetic",
    contract: Annotated[str, cyclopts.Parameter("--contract", help="DataContract block name.")] = "synthetic-stream",
    batch: Annotated[Path | None, cyclopts.Parameter("--batch", help="Parquet/CSV batch; default: a synthetic one.")] = None,
    policy: Annotated[str | None, cyclopts.Parameter("--policy", help="TrainingPolicy block name.")] = None,
    home: HomeOption = None,
) -> None:
    """Run the continuous-training flow once: exit 0 trained, 3 batch rejected or training stopped."""
    validate_model_name(model)
    batch_path = _existing_batch(batch) if batch else None
    with stack.use_stack(home, **LONG_COMMAND):  # before the slow imports: a dead server is told at once
        from prefect.exceptions import TerminationSignal

        from prefect_crisis.deployments.live_runs import crash_dead_train_runs, record_train_process, signals_end_the_run
        from prefect_crisis.flows.training import continuous_training
        from prefect_crisis.tasks.loading import load_contract, load_policy

        load_contract(contract)  # missing blocks are one clear line here, not a failed run
        load_policy(policy)
        # a killed earlier `crisis train` left its run Running: Crashed now, so this run resumes its checkpoint
        for dead in crash_dead_train_runs():
            console.print(f"flow run {dead} of a `crisis train` that was killed marked Crashed")
        try:
            with signals_end_the_run():
                state = continuous_training.with_options(on_running=[record_train_process])(
                    model_name=model,
                    contract_block=contract,
                    policy_block=policy,
                    batch_path=batch_path,
                    return_state=True,
                )
        except TerminationSignal as received:
            console.print(
                f"terminated by signal {received.signal}: the flow run is marked Crashed; `crisis train --model {model}` resumes its last checkpoint"
            )
            sys.exit(ExitCode.INTERRUPTED)
    if state.name in {"Skipped", "Stopped"}:
        console.print(f"{state.name}: {state.message}", soft_wrap=True)
        sys.exit(ExitCode.REJECTED)
    if state.is_failed():
        _exit_for_failure(state)
    console.print(f"{state.name}: {state.message}", soft_wrap=True)


def other_ways_to_stop(model: str) -> str:
    """What halts MODEL's training when the stop flag cannot be raised (one line)."""
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        is_crisis = any(part.endswith(("crisis", "prefect_crisis.deployments.cli")) for part in cmdline)
        named = next((b for a, b in pairwise(cmdline) if a == "--model"), "synthetic")
        if is_crisis and "train" in cmdline and named == model:
            pids.append(str(process.info["pid"]))
    where = f"`kill -INT {' '.join(pids)}` (crisis train of {model} on this machine)" if pids else "stop the training process (Ctrl-C or kill)"
    return f"cancel the training flow run (Prefect UI, or `prefect flow-run cancel ID` once the server answers), or {where}"


def check_known_model(model: str) -> None:
    """A one-line error naming the known models when MODEL is not one of them."""
    known = known_models()
    if model not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise DataInputError(
            InputErrorReason.INVALID_NAME,
            f"no model {model!r} in the MLflow store (known: {listed}): check the name, or pass --force to raise its flag ahead of time",
        )


def known_models() -> set[str]:
    """Models the MLflow store knows: registered models and models with a training experiment."""
    from mlflow import MlflowClient

    from prefect_crisis.core.paths import default_tracking_uri

    uri = default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return set()  # no store yet: nothing trained, and no empty store created by asking
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    names = {model.name for model in client.search_registered_models(max_results=1000)}
    prefix = "crisis-training-"
    names |= {e.name.removeprefix(prefix) for e in client.search_experiments(filter_string=f"name LIKE '{prefix}%'", max_results=1000)}
    return names


def exit_code(error: CrisisError) -> ExitCode:
    """The documented exit code of an expected error."""
    if isinstance(error, StackError):
        return ExitCode.STACK
    if isinstance(error, DemoError):
        return ExitCode.FAILURE
    return ExitCode.USAGE


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning project errors into one clear line.

    `--debug` anywhere on the command line also prints the traceback of an
    expected error, and keeps it in the run logs.
    """
    # The CLI points Prefect at the stack itself (use_stack), per command: the
    # import-time connection of prefect_crisis.blocks is for plain scripts.
    os.environ.setdefault("CRISIS_NO_AUTOCONNECT", "1")
    tokens = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in tokens
    if debug:
        tokens = [token for token in tokens if token != "--debug"]
        os.environ["CRISIS_DEBUG"] = "1"
    try:
        app(tokens)
    except CrisisError as error:
        if debug:
            console.print_exception()
        _send_pending_events()
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        sys.exit(exit_code(error))
    except KeyboardInterrupt:
        if debug:
            console.print_exception()
        console.print(
            "interrupted: nothing was left half-done (an alias move is audited and settled on the next read); run the command again to finish"
        )
        sys.exit(ExitCode.INTERRUPTED)


def _send_pending_events(timeout: float = 5.0) -> None:
    """Let queued events (block loads, run events) go before exiting, so the
    exit does not add Prefect's "still processing items" warning to the one line."""
    from prefect_crisis.core.prefect_compat import drain_events

    drain_events(timeout)


if __name__ == "__main__":
    main()

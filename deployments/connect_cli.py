"""`crisis env` and `crisis deploy`: connect a shell, a Python process or a
worker to the running stack.

`crisis env` prints the exports (`eval "$(crisis env)"`). `crisis deploy`
creates the work pools `crisis-pool` (process) and `crisis-responders` (the
warm worker's) when they are missing and runs
`prefect deploy --all` on the packaged prefect.yaml with the stack's absolute
state folder exported, so each deployment carries it (job variable env
`CRISIS_HOME`) and a worker started in any folder uses the same stack; then it
applies the escalation ladder (deployments/automations.py) from an
EscalationPolicy block, creating or updating each automation by name.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import cyclopts

from prefect_crisis.core.errors import CrisisError, PolicyError, StackError
from prefect_crisis.core.paths import crisis_home
from prefect_crisis.deployments import stack
from prefect_crisis.deployments.worker import POOL, WARM_POOL

if TYPE_CHECKING:
    from prefect.workers.base import BaseWorker

PREFECT_YAML = Path(__file__).parent / "prefect.yaml"

HomeOption = Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")]


def stack_exports(home: Path | None = None) -> dict[str, str]:
    """The variables that connect a process to the running stack.

    Values are printed as they are: the local stack has no credentials, and a
    team server's URL comes from the caller's own environment.

    Raises:
        StackError: no server answers (see `stack.require_server`).
    """
    home = (home or crisis_home()).resolve()
    api_url = stack.require_server(home)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    return {"PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": tracking_uri, "CRISIS_HOME": str(home)}


def env(*, home: HomeOption = None) -> None:
    """Print the exports that connect a shell to the running stack: eval "$(crisis env)"."""
    for name, value in stack_exports(home).items():
        print(f"export {name}={shlex.quote(value)}")


def ensure_work_pool(api_url: str, name: str, worker: type[BaseWorker[Any, Any, Any]]) -> bool:
    """Create the work pool `name` of `worker`'s type (a Prefect worker class) on the server unless it exists; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            template = worker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type=worker.type, base_job_template=template))
            return True


def apply_escalation_ladder(api_url: str, policy_block: str | None = None) -> list[tuple[str, str]]:
    """Apply the escalation ladder of the EscalationPolicy block `policy_block` (empty: the defaults) to the server.

    Raises:
        StackError: a deployment the ladder runs is missing (run `crisis deploy`).
        PolicyError: the policy block or its notification block cannot be loaded.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_crisis.blocks.escalation_policy import EscalationPolicy
    from prefect_crisis.deployments.automations import apply_ladder
    from prefect_crisis.tasks.loading import saved_block

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        try:
            policy = saved_block(EscalationPolicy, policy_block) if policy_block else EscalationPolicy()
        except ValueError:
            raise PolicyError(f"no EscalationPolicy block named {policy_block!r} on the server: save one, or leave --escalation-policy out") from None
        with get_client(sync_client=True) as client:
            return apply_ladder(policy, client)


def deploy(
    *,
    home: HomeOption = None,
    timeout: Annotated[float, cyclopts.Parameter("--timeout", help="Seconds `prefect deploy` may take.")] = 180.0,
    escalation_policy: Annotated[
        str | None,
        cyclopts.Parameter(
            "--escalation-policy", help="EscalationPolicy block the ladder's automations are built from [default: the block's defaults]."
        ),
    ] = None,
) -> None:
    """Create the work pools crisis-pool (process) and crisis-responders (crisis-warm) if missing, deploy the packaged flows with the stack's state folder, and apply the escalation ladder."""
    exports = stack_exports(home)
    from prefect.workers.process import ProcessWorker

    from prefect_crisis.deployments.warm_worker import WarmWorker

    for pool, worker in ((POOL, ProcessWorker), (WARM_POOL, WarmWorker)):
        created = ensure_work_pool(exports["PREFECT_API_URL"], pool, worker)
        print(f"work pool {pool!r} {f'created ({worker.type})' if created else 'exists'}")
    environment = {**os.environ, **exports, "PREFECT_CLI_PROMPT": "false"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML), "--all"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"`prefect deploy` did not finish within {timeout:.0f}s: is the server overloaded? (--timeout to wait longer)") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise CrisisError(f"`prefect deploy` failed: {lines[-1][:300] if lines else 'no output'}")
    print(f"deployed the flows of {PREFECT_YAML} to {POOL!r} and {WARM_POOL!r}, each with CRISIS_HOME={exports['CRISIS_HOME']}")
    for name, outcome in apply_escalation_ladder(exports["PREFECT_API_URL"], escalation_policy):
        print(f"automation {name!r} {outcome}")
    print(
        "policies: each model's RollbackPolicy, MonitoringPolicy and FallbackPolicy bind when its responses run: the blocks its own "
        "EscalationPolicy (saved under its name) names, else the blocks saved under its name, else the escalation policy's, "
        "else the defaults; `crisis status MODEL` shows which"
    )
    print(workers_hint(home, exports["PREFECT_API_URL"]))


def workers_hint(home: Path | None, api_url: str) -> str:
    """What `crisis deploy` says of the workers: which run already (recorded by this stack and alive), or how to start them."""
    from prefect_crisis.deployments.worker import read_workers, worker_alive

    running = [state for state in read_workers(home) if worker_alive(state) and state.api_url == api_url]
    if {state.pool for state in running} >= {POOL, WARM_POOL}:
        return "workers running: " + ", ".join(f"{state.kind} on {state.pool} (pid {state.pid})" for state in running)
    return (
        f"start the workers: crisis up --worker (or, any folder, with PREFECT_API_URL={api_url}: "
        f"prefect worker start --pool {POOL}; python -m prefect_crisis.deployments.warm_worker --pool {WARM_POOL})"
    )

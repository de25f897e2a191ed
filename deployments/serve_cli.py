"""`crisis serve MODEL`: MLflow's own scoring server on loopback, serving the
model's `CrisisModel` wrapper (`models:/<model>-serving/<version>`).

The wrapper version is registered on first use and again only when the
configuration changes (policy, inference log, store). The server runs in the
foreground, like `mlflow models serve`; Ctrl-C stops it. Fallback events go
to the stack's Prefect server when one answers, else to the server's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import cyclopts
import httpx
from rich.console import Console

from prefect_crisis.core.errors import DataInputError, InputErrorReason, StackError
from prefect_crisis.core.paths import crisis_home, default_tracking_uri, validate_model_name
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.deployments import stack

console = Console(highlight=False)
HomeOption = Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")]


def wait_until_ready(process: subprocess.Popen, url: str, timeout: float) -> None:
    """Poll the scoring server's /ping until it answers; one-line errors when it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"the scoring server exited with code {process.returncode} before answering: its output is above")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ping", timeout=1.0).status_code == 200:
                return
        time.sleep(0.25)
    raise StackError(f"the scoring server did not answer {url}/ping within {timeout:g} s: pass a larger --timeout")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # `kill` stops the server as Ctrl-C does: the scoring server goes with it


def serve(
    model: str,
    *,
    port: Annotated[int, cyclopts.Parameter("--port", help="Port on 127.0.0.1.")] = 5005,
    policy: Annotated[str | None, cyclopts.Parameter("--policy", help="FallbackPolicy block name; defaults apply when empty.")] = None,
    no_log: Annotated[bool, cyclopts.Parameter("--no-log", negative=(), help="Do not write the inference log.")] = False,
    timeout: Annotated[float, cyclopts.Parameter("--timeout", help="Seconds to wait for the server to answer.")] = 120.0,
    home: HomeOption = None,
) -> None:
    """Serve MODEL's champion with its fallback behind it on 127.0.0.1 (MLflow's scoring server), until Ctrl-C."""
    validate_model_name(model)
    if home is not None:
        os.environ["CRISIS_HOME"] = str(home.resolve())
    if not stack.port_free("127.0.0.1", port):
        raise StackError(f"port {port} on 127.0.0.1 is in use: pass --port with a free one")
    from prefect_crisis.blocks.fallback_policy import FallbackPolicy
    from prefect_crisis.blocks.registry import ModelRegistry

    try:
        api_url = stack.require_server(home)
    except StackError as error:
        if policy:
            raise StackError(f"{error}; the FallbackPolicy block {policy!r} lives on the Prefect server") from None
        api_url = None
        console.print(f"fallback events go to the scoring server's log, not to Prefect ({error})", soft_wrap=True)
    if policy:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api_url}):
            try:
                fallback_policy = FallbackPolicy.load(policy)
            except ValueError:
                raise DataInputError(InputErrorReason.INVALID_NAME, f"no FallbackPolicy block {policy!r}: save one first (FallbackPolicy(...).save({policy!r}))") from None
    else:
        fallback_policy = FallbackPolicy()
    registry = ModelRegistry(model_name=model)
    if not registry.versions():
        raise DataInputError(InputErrorReason.INVALID_NAME, f"no model {model!r} in {registry.display_tracking_uri}: check the name, or train it first")
    from prefect_crisis.tasks.serving_model import serving_model_name, serving_version

    version, registered = serving_version(registry, fallback_policy, log=not no_log)
    champion, fallback = registry.champion(), registry.version_by_alias(registry.fallback_alias)
    uri = f"models:/{serving_model_name(model)}/{version}"
    console.print(f"{'registered' if registered else 'reusing'} {uri}: @champion v{champion.version}, @fallback {'v' + fallback.version if fallback else 'none'}")
    environment = dict(os.environ)
    environment.update(
        MLFLOW_TRACKING_URI=default_tracking_uri(),
        CRISIS_HOME=str(crisis_home().resolve()),
        CRISIS_NO_AUTOCONNECT="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",  # MLflow starts `uvicorn` by name
    )
    if api_url:
        environment["PREFECT_API_URL"] = api_url
    else:
        environment.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    # Its own process group: stopped as a whole here, never orphaned by a signal meant for this command.
    process = subprocess.Popen(command, env=environment, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_until_ready(process, url, timeout)
        console.print(f"[green]serving {model}[/green] at {url}/invocations  (store {mask_uri(default_tracking_uri())}; Ctrl-C stops)", soft_wrap=True)
        code = process.wait()
    except KeyboardInterrupt:
        stack.terminate_group(process.pid, 10.0)
        console.print(f"stopped serving {model}")
        return
    except BaseException:
        stack.terminate_group(process.pid, 10.0)
        raise
    raise StackError(f"the scoring server stopped by itself with code {code}: its output is above")

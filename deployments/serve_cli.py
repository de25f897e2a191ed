"""`crisis serve MODEL`: MLflow's own scoring server on loopback, serving the
model's `CrisisModel` wrapper (`models:/<model>-serving/<version>`).

The wrapper version is registered on first use and again only when the
configuration changes (policy, inference log, store). The server runs in the
foreground, like `mlflow models serve`; Ctrl-C stops it. Fallback events go
to the stack's Prefect server when one answers, else to the server's log.

MLflow's scoring app runs under uvicorn behind `StrictJson`, which makes every
answer of /invocations strict JSON: NaN and infinities become null (MLflow
writes them bare, which JSON parsers refuse), and an error is one JSON line,
`{"error_code": ..., "message": ...}`, without the request's data or a stack
trace (MLflow puts both in the message or a `stack_trace` field).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import cyclopts
import httpx
from rich.console import Console

from prefect_crisis.core.errors import DataInputError, InputErrorReason, StackError
from prefect_crisis.core.paths import crisis_home, default_tracking_uri, validate_model_name
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.deployments import stack

console = Console(highlight=False)
logger = logging.getLogger("prefect_crisis.serving")
MODEL_PATH_ENV = "CRISIS_SERVING_MODEL_PATH"  # the wrapper's local copy, which `scoring_app` serves
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


def one_line(message: Any, limit: int = 1_000) -> str:
    """An error message as one line: MLflow's "Failed to predict data '<the whole input>'. Error: <ours>" keeps
    ours only, and an echoed input (MLflow adds "Input: <the body>") or a second line is dropped.

    Example:
        >>> one_line("Failed to predict data '   f00\\n0  1.0'. \\nError: the input lacks column(s) f01: send it")
        'the input lacks column(s) f01: send it'
        >>> one_line("Invalid input. Error: 'Expecting value'\\nInput: \\nb'{broken'")
        "Invalid input. Error: 'Expecting value'"
    """
    text = str(message or "the scoring server refused the request")
    if text.startswith("Failed to predict data") and "\nError: " in text:
        text = text.rsplit("\nError: ", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:limit]


def strict_body(status: int, body: bytes) -> bytes:
    """The body of an /invocations answer as strict JSON: non-finite numbers as null (allow_nan=False is then
    guaranteed to hold); an error as one line with its code, without data echoes or stack frames.

    Example:
        >>> strict_body(200, b'{"predictions": [{"confidence": NaN, "error": "NaN in x"}]}')
        b'{"predictions": [{"confidence": null, "error": "NaN in x"}]}'
        >>> strict_body(400, b'{"error_code": "BAD_REQUEST", "message": "boom\\\\nmore", "stack_trace": "Traceback ..."}')
        b'{"error_code": "BAD_REQUEST", "message": "boom"}'
    """
    if status < 400:
        if b"NaN" not in body and b"Infinity" not in body:
            return body  # the usual answer: already strict, no second pass over it
        return json.dumps(json.loads(body, parse_constant=lambda _name: None), allow_nan=False).encode()
    try:
        error = json.loads(body, parse_constant=lambda _name: None)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {"message": body.decode("utf-8", "replace")}
    if error.get("stack_trace"):
        # an unexpected error inside MLflow or the model: its exception in one line on the server's log, no frames
        last = next((line for line in reversed(str(error["stack_trace"]).splitlines()) if line.strip()), "")
        logger.error("scoring request failed: %s (%s)", one_line(error.get("message")), last.strip()[:300])
    code = error.get("error_code") or ("BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    message = error.get("message") or error.get("detail")  # FastAPI's own errors (a GET, say) say "detail"
    return json.dumps({"error_code": str(code), "message": one_line(message)}, allow_nan=False).encode()


class StrictJson:
    """ASGI middleware: every answer of /invocations goes through `strict_body` (other paths pass as they are)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        start: dict = {}
        chunks: list[bytes] = []

        async def buffered(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = strict_body(start["status"], b"".join(chunks))
            headers = [(name, value) for name, value in start.get("headers", []) if name.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)


def scoring_app():
    """The ASGI app `crisis serve` runs (`uvicorn --factory`): MLflow's scoring app for the wrapper copied to
    $CRISIS_SERVING_MODEL_PATH, behind `StrictJson`."""
    from mlflow.pyfunc import scoring_server

    return StrictJson(scoring_server.init(scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])))


def download_serving_model(registry, name: str, version: str, folder: str) -> str:
    """A local copy of a registered version, fetched with the registry's own client (no process-global store)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = registry.client
    try:
        location = client.get_model_version_download_uri(name, version)
        return mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=folder, tracking_uri=client.tracking_uri)
    except MlflowException as error:
        raise StackError(f"cannot fetch models:/{name}/{version} from {registry.display_tracking_uri}: {one_line(error.message)}") from None


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
    from prefect_crisis.tasks.serving.pyfunc import serving_model_name, serving_version

    version, registered = serving_version(registry, fallback_policy, log=not no_log)
    champion, fallback = registry.champion(), registry.version_by_alias(registry.fallback_alias)
    uri = f"models:/{serving_model_name(model)}/{version}"
    console.print(f"{'registered' if registered else 'reusing'} {uri}: @champion v{champion.version}, @fallback {'v' + fallback.version if fallback else 'none'}")
    environment = dict(os.environ)
    environment.update(MLFLOW_TRACKING_URI=default_tracking_uri(), CRISIS_HOME=str(crisis_home().resolve()), CRISIS_NO_AUTOCONNECT="1")
    if api_url:
        environment["PREFECT_API_URL"] = api_url
    else:
        environment.pop("PREFECT_API_URL", None)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="crisis-serve-") as folder:
        environment[MODEL_PATH_ENV] = download_serving_model(registry, serving_model_name(model), version, folder)
        # MLflow's scoring app, as `mlflow models serve --env-manager local` runs it, behind StrictJson.
        command = [sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:scoring_app", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        # Its own process group: stopped as a whole here, never orphaned by a signal meant for this command.
        process = subprocess.Popen(command, env=environment, start_new_session=True)
        signal.signal(signal.SIGTERM, _interrupt)
        # Ctrl-C (SIGINT) stops it too, even when started in the background of a script, where the shell starts it with
        # SIGINT ignored: a server that only `kill -9` can stop would lose the log records it still holds.
        signal.signal(signal.SIGINT, signal.default_int_handler)
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

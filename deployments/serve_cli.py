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
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import cyclopts
from rich.console import Console

from prefect_crisis.core.errors import DataInputError, InputErrorReason, StackError
from prefect_crisis.core.paths import crisis_home, default_tracking_uri, validate_model_name
from prefect_crisis.core.uris import mask_uri
from prefect_crisis.core.waiting import Retrying, stop_after_delay, stop_never, wait_fixed
from prefect_crisis.deployments import stack
from prefect_crisis.deployments.process import ManagedProcess, http_ok, port_free

console = Console(highlight=False)
logger = logging.getLogger("prefect_crisis.serving")
MODEL_PATH_ENV = "CRISIS_SERVING_MODEL_PATH"  # the wrapper's local copy, which `scoring_app` serves
HomeOption = Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")]


def wait_until_ready(process: subprocess.Popen, url: str, timeout: float, waiting: Retrying | None = None) -> None:
    """Poll the scoring server's /ping until it answers from its own socket; one-line errors when it dies or never answers."""
    port = urlsplit(url).port or 0
    server = ManagedProcess("scoring server", process.pid, popen=process)
    waiting = waiting or Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.25))
    if server.wait_ready(lambda: server.listens_on(port) and http_ok(f"{url}/ping", timeout=1.0), waiting):
        return
    if server.exit_code() is not None:
        if not port_free("127.0.0.1", port):  # another server took the port first (two `crisis serve` at once)
            raise StackError(f"port {port} on 127.0.0.1 is in use: pass --port with a free one")
        raise StackError(f"the scoring server exited with code {server.exit_code()} before answering: its output is above")
    raise StackError(f"the scoring server did not answer {url}/ping within {timeout:g} s: pass a larger --timeout")


@contextlib.contextmanager
def reserved_port(port: int, host: str = "127.0.0.1") -> Iterator[Callable[[], None]]:
    """Hold `host:port` (bound, not listening) until released (the yielded function) or the block ends: a second
    `crisis serve` on that port is told at once, not after it has prepared the model; released just before the
    scoring server binds it.

    Raises:
        StackError: something listens on the port, or holds it (one line).
    """
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise StackError(f"port {port} on {host} is in use: pass --port with a free one") from None
    try:
        yield holder.close
    finally:
        holder.close()


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


CHAMPION_CHECK_SECONDS = 5.0  # how often a running `crisis serve` reads @champion (MLflow's own refresh follows moves)


def watch_champion(process: subprocess.Popen, registry, served: str, say: Callable[[str], None], waiting: Retrying | None = None) -> int:
    """Wait for the scoring server to end (its exit code); meanwhile read `@champion` every few seconds and say once
    when it is gone (its version deleted): the server keeps answering with the copy it loaded, which nobody chose now.

    Example:
        >>> from types import SimpleNamespace
        >>> from prefect_crisis.core.waiting import FakeClock
        >>> clock, answers, said = FakeClock(), iter([SimpleNamespace(version="3"), None, None]), []
        >>> process = SimpleNamespace(poll=lambda: 0 if clock.now >= 15 else None, returncode=0)
        >>> registry = SimpleNamespace(champion=lambda: next(answers), model_name="churn", champion_alias="champion")
        >>> watch_champion(process, registry, "3", said.append, Retrying(stop=stop_never(), wait=wait_fixed(5), clock=clock, sleep=clock.sleep))
        0
        >>> said
        ["@champion of 'churn' is gone (v3 deleted?): this server keeps answering with v3, which no alias names; promote a version, then restart `crisis serve`"]
    """
    from prefect_crisis.core.errors import RegistryError

    def pause(seconds: float) -> None:  # returns as soon as the server exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=seconds)

    waiting = waiting or Retrying(stop=stop_never(), wait=wait_fixed(CHAMPION_CHECK_SECONDS), sleep=pause)
    warned = False
    for _attempt in waiting.attempts():
        if process.poll() is not None:
            break
        try:
            champion = registry.champion()
        except RegistryError:  # the store is away: unknown is not absent
            continue
        if champion is not None:
            served, warned = champion.version, False  # the server follows the alias on its own
        elif not warned:
            say(
                f"@{registry.champion_alias} of {registry.model_name!r} is gone (v{served} deleted?): this server keeps answering with "
                f"v{served}, which no alias names; promote a version, then restart `crisis serve`"
            )
            warned = True
    return process.returncode


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
    with reserved_port(port) as release:
        _serve(model, port, policy, no_log, timeout, home, release)


def _serve(model: str, port: int, policy: str | None, no_log: bool, timeout: float, home: Path | None, release: Callable[[], None]) -> None:
    from prefect_crisis.blocks.fallback_policy import FallbackPolicy
    from prefect_crisis.blocks.registry import ModelRegistry
    from prefect_crisis.core.errors import RegistryError
    from prefect_crisis.tasks.loading import saved_block

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
                fallback_policy = saved_block(FallbackPolicy, policy)
            except ValueError:
                raise DataInputError(
                    InputErrorReason.INVALID_NAME, f"no FallbackPolicy block {policy!r}: save one first (FallbackPolicy(...).save({policy!r}))"
                ) from None
    else:
        fallback_policy = FallbackPolicy()
    registry = ModelRegistry(model_name=model)
    if not registry.versions():
        raise DataInputError(
            InputErrorReason.INVALID_NAME, f"no model {model!r} in {registry.display_tracking_uri}: check the name, or train it first"
        )
    from prefect_crisis.tasks.serving.pyfunc import serving_model_name, serving_version

    version, registered = serving_version(registry, fallback_policy, log=not no_log)
    champion, fallback = registry.champion(), registry.version_by_alias(registry.fallback_alias)
    if champion is None:  # serving_version found one; a demotion since leaves nothing to serve
        raise RegistryError(f"{model!r} has no @{registry.champion_alias}: train and promote a version before serving it")
    uri = f"models:/{serving_model_name(model)}/{version}"
    console.print(
        f"{'registered' if registered else 'reusing'} {uri}: @champion v{champion.version}, @fallback {'v' + fallback.version if fallback else 'none'}"
    )
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
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{__name__}:scoring_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        # Its own process group: stopped as a whole here, never orphaned by a signal meant for this command.
        release()
        process = subprocess.Popen(command, env=environment, start_new_session=True)
        signal.signal(signal.SIGTERM, _interrupt)
        # Ctrl-C (SIGINT) stops it too, even when started in the background of a script, where the shell starts it with
        # SIGINT ignored: a server that only `kill -9` can stop would lose the log records it still holds.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            wait_until_ready(process, url, timeout)
            console.print(
                f"[green]serving {model}[/green] at {url}/invocations  (store {mask_uri(default_tracking_uri())}; Ctrl-C stops)", soft_wrap=True
            )
            code = watch_champion(process, registry, champion.version, say=lambda line: console.print(f"[yellow]{line}[/yellow]", soft_wrap=True))
        except KeyboardInterrupt:
            stack.terminate_group(process.pid, 10.0)
            console.print(f"stopped serving {model}")
            return
        except BaseException:
            stack.terminate_group(process.pid, 10.0)
            raise
    raise StackError(f"the scoring server stopped by itself with code {code}: its output is above")

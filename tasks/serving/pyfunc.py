"""`CrisisModel`: the serving router as an MLflow pyfunc, registered as its
own model (`<model>-serving`) so MLflow's scoring server serves it:

    mlflow models serve -m models:/churn-serving/1 --env-manager local

The wrapper holds no weights: its configuration names the model, the registry
(URI without its password), the fallback policy and the inference log, and at
load time it resolves `@champion` and `@fallback` through the registry's own
client, then follows them. A password comes from the serving process's
environment (`CRISIS_TRACKING_PASSWORD`, `CRISIS_INFERENCE_LOG_PASSWORD`),
never from the registered model, which anyone with registry access can read.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from pydantic import SecretStr

from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.registry import ModelRegistry, VersionInfo, first_line
from prefect_crisis.core.errors import CrisisError, RegistryError, ServingInputError
from prefect_crisis.core.paths import default_tracking_uri, ensure_experiment
from prefect_crisis.core.timeline import Timeline, TimelineEvent
from prefect_crisis.core.uris import split_password
from prefect_crisis.core.vocabulary import MODEL_NAME_LABEL, TagKey, VersionRole
from prefect_crisis.tasks.serving.router import FallbackRouter

logger = logging.getLogger("prefect_crisis.serving")

SERVING_SUFFIX = "-serving"
PASSWORD_ENV = "CRISIS_TRACKING_PASSWORD"
LOG_PASSWORD_ENV = "CRISIS_INFERENCE_LOG_PASSWORD"
POLICY_FIELDS = set(FallbackPolicy.model_fields) - {"block_type_slug"}


def serving_model_name(model: str) -> str:
    """The registered model the wrapper of `model` is a version of."""
    return f"{model}{SERVING_SUFFIX}"


def serving_config(registry: ModelRegistry, policy: FallbackPolicy, *, log: bool = True, log_url: str | None = None) -> dict[str, Any]:
    """What the wrapper needs to find its models at load time; no secret in it."""
    uri, _password = split_password(registry.tracking_uri or default_tracking_uri())
    log_uri = split_password(log_url)[0] if log_url else None
    return {
        "model_name": registry.model_name,
        "tracking_uri": uri,
        "champion_alias": registry.champion_alias,
        "fallback_alias": registry.fallback_alias,
        "policy": policy.model_dump(include=POLICY_FIELDS),
        "inference_log": log,
        "inference_log_url": log_uri,
    }


def config_digest(config: dict[str, Any]) -> str:
    """A short digest of a serving configuration: the same one is registered once."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _log_sink(event: TimelineEvent) -> None:
    logger.warning("%s %s %s", event.event.value, event.resource.get(MODEL_NAME_LABEL), event.payload)


def _secret(variable: str) -> SecretStr | None:
    """The environment variable's value as a secret; None when it is unset or empty."""
    value = os.environ.get(variable)
    return SecretStr(value) if value else None


def router_from_config(config: dict[str, Any]) -> FallbackRouter:
    """The router a served wrapper runs, built from its stored configuration and the process's environment."""
    from prefect.settings import PREFECT_API_URL

    registry = ModelRegistry(
        model_name=config["model_name"],
        tracking_uri=config["tracking_uri"],
        tracking_password=_secret(PASSWORD_ENV),
        champion_alias=config.get("champion_alias", "champion"),
        fallback_alias=config.get("fallback_alias", "fallback"),
    )
    # Without a Prefect API the events would start a throwaway server inside the scoring process: log them instead.
    timeline = Timeline() if PREFECT_API_URL.value() else Timeline(sink=_log_sink)
    log = None
    if config.get("inference_log", True):
        from prefect_crisis.blocks.inference_log import InferenceLog
        from prefect_crisis.tasks.serving.inference_log import open_inference_log

        log = open_inference_log(InferenceLog(url=config.get("inference_log_url"), password=_secret(LOG_PASSWORD_ENV)))
    return FallbackRouter(registry, FallbackPolicy(**config.get("policy", {})), log=log, timeline=timeline, close_log=True)


def flush_on(signum: int, router: FallbackRouter) -> None:
    """On `signum`, write the router's queued log records, then call the handler that was there."""
    previous = signal.getsignal(signum)

    def handler(received, frame) -> None:
        if router.log is not None:
            router.log.flush(timeout=5.0)
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(received, signal.SIG_DFL)
            signal.raise_signal(received)

    with contextlib.suppress(ValueError):  # not the main thread (a pyfunc loaded in a worker thread): atexit is all there is
        signal.signal(signum, handler)


class CrisisModel(PythonModel):
    """The serving router as a pyfunc: `predict` returns, per row, the prediction,
    which model answered, its version, the confidence, an error (or None), why
    the fallback answered (or None), the request id and the row id."""

    def load_context(self, context) -> None:
        self.router = router_from_config(context.model_config).start()
        atexit.register(self.router.close)  # a normal exit: queued records written (or spooled), events sent
        # uvicorn ends a SIGTERM/Ctrl-C by raising the signal again with the default handler, so the
        # process dies without running atexit: write what is queued when the signal arrives, then let
        # the server's own handler shut it down.
        for signum in (signal.SIGTERM, signal.SIGINT):
            flush_on(signum, self.router)

    def predict(self, context, model_input, params=None):
        try:
            return self.router.predict(model_input)
        except ServingInputError as error:
            # The scoring server answers an MlflowException with this code as HTTP 400, with the reason.
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        except CrisisError as error:  # the router cannot answer at all (not started): one line, no stack trace
            raise MlflowException(str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def register_serving_model(
    registry: ModelRegistry, policy: FallbackPolicy | None = None, *, log: bool = True, log_url: str | None = None
) -> VersionInfo:
    """Register the wrapper of `registry.model_name` as a new version of `<model>-serving`.

    Example:
        ```python
        served = register_serving_model(ModelRegistry(model_name="churn"), FallbackPolicy(confidence_threshold=0.7))
        # mlflow models serve -m models:/churn-serving/<served.version> --env-manager local
        ```

    Raises:
        RegistryError: the model has no champion to serve, or MLflow refused.
    """
    policy = policy or FallbackPolicy()
    if registry.champion() is None:
        raise RegistryError(f"{registry.model_name!r} has no @{registry.champion_alias}: train and promote a version before serving it")
    client = registry.client
    name = serving_model_name(registry.model_name)
    config = serving_config(registry, policy, log=log, log_url=log_url)
    experiment = ensure_experiment(client, f"crisis-serving-{registry.model_name}", {TagKey.MODEL: registry.model_name})
    run = client.create_run(
        experiment, tags={TagKey.MODEL: registry.model_name, TagKey.ROLE: VersionRole.SERVING.value}, run_name=f"serving-{registry.model_name}"
    )
    logged = client.create_logged_model(experiment, name="serving", source_run_id=run.info.run_id)
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "serving"
            mlflow.pyfunc.save_model(
                str(local),
                python_model=str(Path(__file__).with_name("pyfunc_code.py")),
                model_config=config,
                pip_requirements=["prefect-crisis", f"mlflow=={mlflow.__version__}"],
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, tags={TagKey.MANAGED: "true", TagKey.WRAPS: registry.model_name})
        created = client.create_model_version(
            name,
            source=client.get_logged_model(logged.model_id).artifact_location,
            run_id=run.info.run_id,
            model_id=logged.model_id,
            tags={TagKey.ROLE: VersionRole.SERVING.value, TagKey.WRAPS: registry.model_name, TagKey.SERVING_CONFIG: config_digest(config)},
        )
    except MlflowException as error:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        client.set_terminated(run.info.run_id, "FAILED")
        raise RegistryError(f"could not register the serving model of {registry.model_name!r}: {first_line(error.message)}") from error
    client.set_terminated(run.info.run_id, "FINISHED")
    return VersionInfo(str(created.version), run.info.run_id, registry.now(), {}, {str(k): v for k, v in created.tags.items()}, ())


def serving_version(
    registry: ModelRegistry, policy: FallbackPolicy | None = None, *, log: bool = True, log_url: str | None = None
) -> tuple[str, bool]:
    """The `<model>-serving` version with this configuration: the newest one when it matches, else a new one.

    Returns:
        (version, registered now)
    """
    policy = policy or FallbackPolicy()
    digest = config_digest(serving_config(registry, policy, log=log, log_url=log_url))
    found: list[Any]  # Mlflow's PagedList of ModelVersion, or none
    try:
        found = registry.client.search_model_versions(
            f"name='{serving_model_name(registry.model_name)}'", order_by=["version_number DESC"], max_results=1
        )
    except MlflowException:
        found = []
    if found and found[0].tags.get(TagKey.SERVING_CONFIG) == digest:
        if registry.champion() is None:
            raise RegistryError(f"{registry.model_name!r} has no @{registry.champion_alias}: train and promote a version before serving it")
        return str(found[0].version), False
    return register_serving_model(registry, policy, log=log, log_url=log_url).version, True

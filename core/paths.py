"""Where the embedded default keeps its state: `.crisis/` under the working
directory, or `$CRISIS_HOME`. Team servers named by `PREFECT_API_URL` and
`MLFLOW_TRACKING_URI` take precedence wherever they apply."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prefect_crisis.core.errors import DataInputError, InputErrorReason


def crisis_home() -> Path:
    """The folder of the local stack: server database, MLflow store, batch parts.

    Raises:
        StackError: `CRISIS_HOME` holds an unrendered `{{ $CRISIS_HOME }}` (a
            deployment made from a shell where it was not exported).
    """
    configured = os.environ.get("CRISIS_HOME")
    if configured and "{{" in configured:
        from prefect_crisis.core.errors import StackError

        raise StackError(
            f"CRISIS_HOME is {configured!r}: the deployment was made without CRISIS_HOME exported; "
            'redeploy with `crisis deploy` (or after `eval "$(crisis env)"`)'
        )
    return Path(configured or Path.cwd() / ".crisis").resolve()


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the SQLite registry under `crisis_home()`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{crisis_home() / 'mlflow.db'}"


MLFLOW_UI_STATE = "mlflow-ui.json"  # the record of the MLflow UI server `crisis up` started (deployments.mlflow_ui)


def mlflow_ui_url() -> str | None:
    """Where a person opens the MLflow UI of this stack, for links in artifacts: `CRISIS_MLFLOW_UI_URL`,
    else a tracking server named by `MLFLOW_TRACKING_URI` (without its credentials or query), else the
    server `crisis up` recorded in the state folder; None when there is none.

    Example:
        >>> import os; os.environ["CRISIS_MLFLOW_UI_URL"] = "http://127.0.0.1:5000/"
        >>> mlflow_ui_url()
        'http://127.0.0.1:5000'
        >>> del os.environ["CRISIS_MLFLOW_UI_URL"]
    """
    import json
    from urllib.parse import urlsplit

    configured = os.environ.get("CRISIS_MLFLOW_UI_URL")
    if configured:
        return configured.rstrip("/")
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")):
        parts = urlsplit(tracking)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
    try:
        return json.loads((crisis_home() / MLFLOW_UI_STATE).read_text())["url"].rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mlflow_run_link(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI's page of a run.

    Example:
        >>> mlflow_run_link("http://127.0.0.1:5000", "3", "abc")
        'http://127.0.0.1:5000/#/experiments/3/runs/abc'
    """
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}" if ui_url else None


def default_storage() -> str:
    """Where validated batches and their quarantine are written (`CRISIS_STORAGE` overrides)."""
    return os.environ.get("CRISIS_STORAGE") or str(crisis_home() / "data")


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside the database for a
    SQLite store (MLflow would otherwise use ./mlruns of whatever folder the
    process runs in); None lets a tracking server decide."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "mlartifacts" / experiment).resolve().as_uri()


def ensure_experiment(client, name: str, tags: dict[str, str] | None = None) -> str:
    """Id of the MLflow experiment `name`, created (with a sane artifact location) if missing."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name), tags=tags)
    except MlflowException:  # created concurrently by another process: read it back
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# Names that every store keeps as they are: a path segment, an MLflow registered
# model, a Prefect Variable (`crisis-stop-<name>`) and an artifact key. The stop
# flag's name is the model name itself, so two models never share a flag.
_MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9_])?")


def validate_model_name(name: str) -> str:
    """Return `name` if it is a usable model name, else raise a one-line `DataInputError`.

    A model name is 1-100 lowercase letters, digits, `-` and `_`, starting with a
    letter or digit and not ending with `-`: it goes into storage paths, MLflow
    experiment names and the stop flag's Variable name unchanged.

    Example:
        >>> validate_model_name("churn-v2")
        'churn-v2'
        >>> validate_model_name("../outside")
        Traceback (most recent call last):
        ...
        prefect_crisis.core.errors.DataInputError: invalid model name '../outside': use 1-100 lowercase letters, digits, '-' and '_', starting with a letter or digit (no '/', '..' or spaces)
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise DataInputError(
            InputErrorReason.INVALID_NAME,
            f"invalid model name {name!r}: use 1-100 lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit (no '/', '..' or spaces)",
        )
    return name


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")

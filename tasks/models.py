"""Log and load scikit-learn models through one MLflow client, never through
MLflow's process-global tracking URI.

`mlflow.sklearn.log_model` / `load_model("models:/...")` resolve the store
from the process (`mlflow.set_tracking_uri`, `MLFLOW_TRACKING_URI`, else a
`./mlflow.db` MLflow creates in the working folder). A response running in a
fresh process, or two registries in one process, would then read or write the
wrong store. Here the model is saved to a temporary folder and uploaded with
the registry's own client, and loaded by downloading the version's artifacts
with that client's URIs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.models.model import ModelInfo

from prefect_crisis.core.errors import RegistryError

# Types outside skops' defaults that the estimators `make_estimator` builds hold (an MLP's optimizer);
# checkpoints trust the same list. skops itself is imported only where a model is saved or loaded:
# importing it scans all of scikit-learn (seconds), which a flow-run process would pay before its first line.
TRUSTED_TYPES = frozenset(
    {
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)


def log_sklearn_model(client: MlflowClient, estimator, X_example: np.ndarray, run_id: str, pip_requirements: list[str] | None = None) -> ModelInfo:
    """Log `estimator` as the MLflow model `model` of the run, in the client's store.

    Returns the `ModelInfo` (its `model_uri` and `model_id` register a version).
    """
    import mlflow.sklearn

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id)
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        description = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id)
        signature = infer_signature(X_example[:50], estimator.predict(X_example[:50]))
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "model"
            mlflow.sklearn.save_model(
                estimator,
                path=str(local),
                mlflow_model=description,
                signature=signature,
                pip_requirements=pip_requirements,
                # skops refuses an MLP's optimizer unless it is named trusted: the same list checkpoints trust.
                skops_trusted_types=sorted(TRUSTED_TYPES),
            )
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return description.get_model_info(client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY))


def load_sklearn_model(client: MlflowClient, model_name: str, version: str):
    """The registered version's estimator, downloaded with the client's URIs."""
    import mlflow.artifacts
    import mlflow.sklearn

    try:
        location = client.get_model_version_download_uri(model_name, str(version))
        with tempfile.TemporaryDirectory() as folder:
            # The download URI is the stored location (file://, s3://, mlflow-artifacts:), not a
            # models:/ URI, so nothing is resolved through the process-global registry.
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=folder, tracking_uri=client.tracking_uri)
            return mlflow.sklearn.load_model(local)
    except MlflowException as error:
        raise RegistryError(f"cannot load v{version} of {model_name!r} from the registry's store: {error.message}") from error

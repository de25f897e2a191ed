"""A fitted `RoutingCalibration` in MLflow: stored as `routing.json` in the run that trained the primary
version (`log_routing`, at training), read back by serving (`load_routing`). The MLflow client is passed in."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from prefect_crisis.core.errors import ServingError
from prefect_crisis.tasks.serving.confidence_routing import ROUTING_ARTIFACT, RoutingCalibration


def log_routing(client: Any, run_id: str, calibration: RoutingCalibration) -> None:
    """Store `calibration` as `routing.json` in the run that trained the primary version (the MLflow client is passed in).

    Example:
        ```python
        log_routing(registry.client, candidate_run_id, fit_routing(model, fallback, X_hold, X_hold[:, columns], y_hold))
        ```
    """
    client.log_dict(run_id, calibration.to_dict(), ROUTING_ARTIFACT)


def load_routing(client: Any, run_id: str | None) -> RoutingCalibration | None:
    """The run's `routing.json`, or None when it has none.

    Raises:
        ServingError: the run's artifacts cannot be read, or the file is not a routing calibration.
    """
    if not run_id:
        return None
    try:
        if ROUTING_ARTIFACT not in {Path(item.path).name for item in client.list_artifacts(run_id) if not item.is_dir}:
            return None
        with tempfile.TemporaryDirectory() as folder:
            text = Path(client.download_artifacts(run_id, ROUTING_ARTIFACT, folder)).read_text()
    except (MlflowException, OSError) as error:
        message = str(getattr(error, "message", error)).splitlines()[0] if str(error) else type(error).__name__
        raise ServingError(f"cannot read {ROUTING_ARTIFACT} of run {run_id}: {message}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ServingError(f"{ROUTING_ARTIFACT} of run {run_id} is not JSON ({error}): log it again with log_routing") from None
    return RoutingCalibration.from_dict(data)

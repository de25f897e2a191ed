"""Where the embedded default keeps its state: `.crisis/` under the working
directory, or `$CRISIS_HOME`. Team servers named by `PREFECT_API_URL` and
`MLFLOW_TRACKING_URI` take precedence wherever they apply."""

from __future__ import annotations

import os
from pathlib import Path


def crisis_home() -> Path:
    """The folder of the local stack: server database, MLflow store, batch parts."""
    return Path(os.environ.get("CRISIS_HOME") or Path.cwd() / ".crisis").resolve()


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the SQLite registry under `crisis_home()`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{crisis_home() / 'mlflow.db'}"


def default_storage() -> str:
    """Where validated batches and their quarantine are written (`CRISIS_STORAGE` overrides)."""
    return os.environ.get("CRISIS_STORAGE") or str(crisis_home() / "data")

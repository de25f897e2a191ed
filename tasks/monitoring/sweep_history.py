"""The metric history of a model's sweeps: one parquet file per model under the state folder, the last
`history_sweeps` sweeps kept, written atomically; the dashboard and the baselines read it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from prefect_crisis.blocks.registry import first_line
from prefect_crisis.core.errors import MonitoringError
from prefect_crisis.core.paths import crisis_home, validate_model_name
from prefect_crisis.tasks.monitoring.model_health import ModelHealth


def history_path(model: str, folder: Path | None = None) -> Path:
    return Path(folder or crisis_home() / "monitoring") / f"{validate_model_name(model)}.parquet"


def metric_history(model: str, folder: Path | None = None) -> pd.DataFrame:
    """The model's recorded sweeps, oldest first: `at`, `version`, `severity`, `breaches`, the long
    window's metrics (`<metric>`, `<metric>_samples`), `serving`, `serving_since` (ISO) and
    `rows_left_out` (see ModelHealth); empty before the first sweep."""
    path = history_path(model, folder)
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise MonitoringError(f"cannot read the metric history {path}: {first_line(str(error))} (delete it to start a new one)") from None


def append_history(health: ModelHealth, keep: int, folder: Path | None = None) -> Path:
    """Add the sweep to the model's history, keep the last `keep` sweeps; written atomically."""
    path = history_path(health.model, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = pd.DataFrame(
        [
            {
                "at": pd.Timestamp(health.at),
                "version": health.version,
                "severity": health.severity.value if health.severity else None,
                "breaches": ",".join(breach.rule for breach in health.breaches),
                **health.long.to_dict(),
                "serving": health.serving.value if health.serving else None,
                "serving_since": health.serving_since.isoformat() if health.serving_since else None,
                "rows_left_out": health.rows_left_out,
                **{f"limit:{key}": value for key, value in health.limits.items()},
            }
        ]
    )
    past = metric_history(health.model, folder)
    frame = (pd.concat([past, row], ignore_index=True) if len(past) else row).tail(keep).reset_index(drop=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".parquet")
    os.close(handle)
    try:
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path

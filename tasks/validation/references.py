"""The one place that reads drift references: a parquet or CSV file, refused
when too small to judge drift, cached by URI and modification time so a
stream of batches does not read the same reference again."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from prefect_crisis.core.contract_inference import MIN_REFERENCE_ROWS  # an empty reference made every batch "PSI 0"
from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.tasks.validation.batches import load_frame

_CACHE_SIZE = 4
_cache: dict[tuple[str, tuple[int, int] | None], pd.DataFrame] = {}
_lock = threading.Lock()


def _modified(uri: str) -> tuple[int, int] | None:
    """The file's modification time and size; None for a remote URL (read every time)."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def load_reference(uri: str) -> pd.DataFrame:
    """Read the reference batch drift is measured against; refuse an empty or tiny one.

    A local file is read once per modification; the frame returned is shared,
    so callers must not change it in place.

    Raises:
        DataInputError: the file is missing or unreadable, or has fewer than
            `MIN_REFERENCE_ROWS` rows.
    """
    modified = _modified(uri)
    key = (uri, modified)
    with _lock:
        cached = _cache.get(key) if modified is not None else None
    if cached is not None:
        return cached
    reference = load_frame(uri)
    if len(reference) < MIN_REFERENCE_ROWS:
        raise DataInputError(
            InputErrorReason.TOO_FEW_ROWS,
            f"reference {uri!r} has {len(reference)} rows, drift needs at least {MIN_REFERENCE_ROWS}: "
            "point the contract's reference_uri at a larger clean batch",
        )
    if modified is not None:
        with _lock:
            for stale in [k for k in _cache if k[0] == uri]:
                del _cache[stale]
            while len(_cache) >= _CACHE_SIZE:
                del _cache[next(iter(_cache))]
            _cache[key] = reference
    return reference

"""Rows by identity: the hash of every row, the batch's fingerprint, and exact
duplicate rows (found by hash, confirmed value by value)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from prefect_crisis.core.errors import DataInputError, InputErrorReason


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError as error:
        raise DataInputError(
            InputErrorReason.UNHASHABLE_VALUES,
            f"the batch holds unhashable values (lists, dicts?): {error}; flatten them before validating",
        ) from error


def batch_fingerprint(frame: pd.DataFrame, hashes: np.ndarray) -> str:
    """The batch's identity: its column names and every row's values, so a renamed header is another batch."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


def duplicate_row_mask(frame: pd.DataFrame, hashes: np.ndarray) -> np.ndarray:
    """Exact duplicate rows after their first occurrence.

    Row hashes find candidates in one pass; candidates are then compared value
    by value, so a hash collision can never quarantine a distinct row.
    """
    candidates = pd.Series(hashes).duplicated(keep=False).to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        positions = np.flatnonzero(candidates)
        mask[positions] = frame.iloc[positions].duplicated(keep="first").to_numpy()
    return mask

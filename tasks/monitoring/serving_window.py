"""The version a sweep judges and the rows of its window: the champion with its baseline figures and since when it
serves (the audit's latest applied move onto the alias), and the inference log's rows of that stint. Plain
functions over the audit's moves and a frame; `sweep` reads the registry for them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prefect_crisis.core.vocabulary import Responder, Serving

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import AliasMove


@dataclass(frozen=True)
class ServingVersion:
    """The version a sweep judges: the champion, its baseline figures, since when it serves (the audit's
    move onto the alias; None when the audit does not say), and whether it is the model's fallback."""

    version: str | None
    registered: dict[str, float]
    since: datetime | None = None
    serving: Serving | None = None
    notes: tuple[str, ...] = ()


def champion_began(moves: Iterable[AliasMove], alias: str, version: str) -> datetime | None:
    """When `version` took `alias` for the stint it serves now: the alias's latest applied move, when that
    move went to `version` (None otherwise: the alias was moved outside the audit).

    Example:
        >>> from prefect_crisis.blocks.registry import AliasMove
        >>> def move(to, minute, outcome="applied"):
        ...     at = datetime(2026, 1, 1, 10, minute, tzinfo=UTC)
        ...     return AliasMove("move", "champion", None, to, "", None, None, at, outcome, "run")
        >>> champion_began([move("2", 0), move("1", 5), move("2", 9), move("3", 12, "failed: refused")], "champion", "2").minute
        9
        >>> champion_began([move("2", 0), move("1", 5)], "champion", "2") is None
        True
    """
    applied = [move for move in moves if move.alias == alias and move.applied]
    latest = max(applied, key=lambda move: move.at, default=None)
    return latest.at if latest is not None and latest.to_version == str(version) else None


def serving_rows(frame: pd.DataFrame, version: str | None, since: datetime | None) -> tuple[pd.DataFrame, datetime | None]:
    """The rows of `version`'s serving window and when it starts: the rows logged since `version` began
    serving (`since`; without it, after the newest row the primary answered at another version), without
    the rows the primary answered at another version (a server still on the old one). Fallback-answered,
    failed and refused rows of that time stay: the metrics count them apart.

    Example:
        >>> frame = pd.DataFrame({
        ...     "timestamp": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-01T10:05Z", "2026-01-01T10:06Z", "2026-01-01T10:07Z"]),
        ...     "answered_by": ["primary", "primary", "fallback", "primary"], "version": ["2", "1", "9", "2"]})
        >>> rows, start = serving_rows(frame, "2", None)  # not in the audit: after the last row v1 answered
        >>> rows["version"].tolist(), start.isoformat()
        (['9', '2'], '2026-01-01T10:05:00+00:00')
        >>> serving_rows(frame, "2", datetime(2026, 1, 1, 9, 0, tzinfo=UTC))[0]["version"].tolist()
        ['2', '9', '2']
    """
    if version is None or frame.empty:
        return frame, since
    other = ((frame["answered_by"].astype(object) == Responder.PRIMARY) & (frame["version"].astype(str) != str(version))).to_numpy()
    stamps = frame["timestamp"]
    if since is not None:
        start = pd.Timestamp(since)
        start = start.tz_localize(UTC) if start.tzinfo is None else start
        keep = (stamps >= start).to_numpy()
        began: datetime | None = start.to_pydatetime()
    elif other.any():
        start = stamps[other].max()
        keep = (stamps > start).to_numpy()
        began = start.to_pydatetime()
    else:
        keep, began = np.ones(len(frame), dtype=bool), None
    return frame[keep & ~other], began

"""What serving serves and how much the fallback carries: a loaded version with the columns it reads and its
routing, the routed share of recent rows, and the decision to announce that the fallback took over or let go.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.errors import ServingError
from prefect_crisis.core.vocabulary import BreakerState, CrisisEvent, TagKey
from prefect_crisis.tasks.serving.confidence_routing import RoutingCalibration

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import VersionInfo


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded registered version, the columns it reads (its `crisis.features` tag) and its fitted routing
    (`routing.json` of its run), or why it has none."""

    version: str
    features: tuple[str, ...]
    estimator: Any
    routing: RoutingCalibration | None = None
    routing_note: str = ""

    @classmethod
    def of(cls, info: VersionInfo, estimator: Any, routing: RoutingCalibration | None = None, routing_note: str = "") -> ServedVersion:
        features = tuple(name for name in info.tags.get(TagKey.FEATURES, "").split(",") if name)
        if not features:
            raise ServingError(f"v{info.version} has no {TagKey.FEATURES} tag: it cannot be served (register it through prefect-crisis)")
        return cls(info.version, features, estimator, routing, routing_note)


class RoutedShare:
    """The share of recent rows the fallback answered, over the last `window_rows` rows (by request)."""

    def __init__(self, window_rows: int):
        self.window_rows = window_rows
        self._requests: deque[tuple[int, int]] = deque()
        self.rows = 0
        self.routed = 0

    def add(self, rows: int, routed: int) -> None:
        self._requests.append((rows, routed))
        self.rows += rows
        self.routed += routed
        while len(self._requests) > 1 and self.rows - self._requests[0][0] >= self.window_rows:
            old_rows, old_routed = self._requests.popleft()
            self.rows -= old_rows
            self.routed -= old_routed

    @property
    def share(self) -> float:
        return self.routed / self.rows if self.rows else 0.0


def engagement_change(
    engaged: bool,
    breaker: BreakerState,
    share: RoutedShare,
    *,
    min_rows: int,
    engage_share: float,
    release_share: float,
) -> CrisisEvent | None:
    """`ml.fallback.engaged` when the fallback starts carrying the traffic (the breaker opened, or the routed share of
    at least `min_rows` recent rows rose above `engage_share`), `released` when it stops (the breaker closed and the
    share fell under `release_share`), None when nothing changed.

    Example:
        >>> share = RoutedShare(100); share.add(50, 30)
        >>> engagement_change(False, BreakerState.CLOSED, share, min_rows=50, engage_share=0.5, release_share=0.1)
        <CrisisEvent.FALLBACK_ENGAGED: 'ml.fallback.engaged'>
        >>> engagement_change(True, BreakerState.HALF_OPEN, share, min_rows=50, engage_share=0.5, release_share=0.9) is None
        True
    """
    judged = share.rows >= min_rows
    if not engaged:
        engage = breaker is BreakerState.OPEN or (judged and share.share > engage_share)
        return CrisisEvent.FALLBACK_ENGAGED if engage else None
    release = breaker is BreakerState.CLOSED and judged and share.share < release_share
    return CrisisEvent.FALLBACK_RELEASED if release else None

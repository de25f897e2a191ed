"""A drill's end state, and its judgement, as plain values: what serves after the response scores at least the
pre-crisis version's accuracy on fresh labelled rows (minus END_STATE_TOLERANCE), the episode opened the incidents it
should, and no row was lost. The stack is read elsewhere (tasks/drills/observe.py); these functions judge what it
read and record it on the drill.

Example:
    >>> from prefect_crisis.tasks.drills.scenario import Drill
    >>> drill = Drill("poisoned-retrain", 0, 7, "drill-poisoned-retrain-1", 240.0, state=None)
    >>> end = EndState(FreshRows.SYNTHETIC)
    >>> judge_incidents(drill, end, ["critical", "critical"])
    >>> judge_accuracy(drill, end, MeasuredAccuracy("1", 0.91, "1", 0.91, 2_000))
    >>> drill.failures
    ['2 incidents opened for the episode, expected 1']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.vocabulary import Severity

if TYPE_CHECKING:
    from prefect_crisis.tasks.drills.scenario import Drill

# A drill passes on its end state. The accuracy of what serves after the response, on fresh labelled rows the response
# never saw, may fall at most this far below the pre-crisis version's on the same rows. The comparison is paired: a
# response that returns to the pre-crisis version scores exactly what it did, and another version (the fallback as a
# stopgap under drift) differs by the rows' noise, one standard deviation under 0.016 on FRESH_ROWS synthetic rows; a
# wrong end state on the real sets costs far more (digits' weak fallback 0.4, a poisoned release 0.4 to 0.9).
END_STATE_TOLERANCE = 0.03


class FreshRows(Enum):
    """The fresh labelled rows an end state's accuracy is measured on (rows the response never saw)."""

    SYNTHETIC = "synthetic"  # the synthetic stream's rows
    DRIFTED = "drifted"  # the synthetic stream's rows under the new concept
    REAL = "real"  # the fresh part of the drill's real data set


@dataclass(frozen=True)
class EndState:
    """What a drill's success is judged on once the stack has responded, the same for every scenario:

    - accuracy: what `@champion` serves scores, on `fresh` labelled rows the response never saw, at least the
      pre-crisis version's accuracy on the same rows minus END_STATE_TOLERANCE (`pre_accuracy`, `end_accuracy`);
      `fresh` None: the fault says nothing about accuracy, and `unmeasured` says why;
    - incidents: the `ml.incident.opened` of the drill model after the injection number `incidents` (fewest, most):
      one per episode unless `why` says otherwise; `warnings_only`: each is a warning;
    - nothing lost: the scenario's `rows_lost` fact, where it sends rows, is 0.
    """

    fresh: FreshRows | None = None
    unmeasured: str = ""
    incidents: tuple[int, int] = (1, 1)
    warnings_only: bool = False
    why: str = ""


@dataclass(frozen=True)
class MeasuredAccuracy:
    """Accuracy on the same fresh labelled rows of the pre-crisis version and of what serves once the stack responded."""

    pre_version: str
    pre_accuracy: float
    end_version: str
    end_accuracy: float
    rows: int


def expected_incidents(end: EndState) -> str:
    """How many incidents the episode should open, in words: `1`, `0 to 1`.

    Example:
        >>> expected_incidents(EndState()), expected_incidents(EndState(incidents=(0, 1), why="a warning at most"))
        ('1', '0 to 1')
    """
    fewest, most = end.incidents
    return str(fewest) if fewest == most else f"{fewest} to {most}"


def judge_incidents(drill: Drill[Any], end: EndState, severities: list[str]) -> None:
    """Record the incidents the episode opened (`severities`: one per `ml.incident.opened`) and check their number
    and, for a fault that warns at most, that each is a warning."""
    fewest, most = end.incidents
    opened = len(severities)
    drill.facts["incidents"] = opened
    expected = expected_incidents(end)
    drill.require(fewest <= opened <= most, f"{opened} incidents opened for the episode, expected {expected}" + (f" ({end.why})" if end.why else ""))
    if end.warnings_only:
        above = sorted(set(severities) - {Severity.WARNING.value})
        drill.require(not above, f"a {', '.join(above)} incident opened: this fault warns at most")
        drill.facts["warns_at_most"] = True
    if end.why:
        drill.facts["incidents_expected"] = f"{expected}: {end.why}"


def judge_accuracy(drill: Drill[Any], end: EndState, measured: MeasuredAccuracy | None, tolerance: float = END_STATE_TOLERANCE) -> None:
    """Record the end state's accuracy and check it against the pre-crisis version's (`measured` None when `end` says
    the fault measures none)."""
    if end.fresh is None or measured is None:
        drill.facts["accuracy"] = f"not measured: {end.unmeasured}"
        return
    before, after = measured.pre_accuracy, measured.end_accuracy
    drill.facts.update(
        pre_accuracy=round(before, 4),
        end_accuracy=round(after, 4),
        pre_version=measured.pre_version,
        end_version=measured.end_version,
        fresh_rows=measured.rows,
    )
    drill.require(
        after >= before - tolerance,
        f"the end state serves v{measured.end_version} at {after:.3f} accuracy on {measured.rows} fresh rows, below the pre-crisis "
        f"v{measured.pre_version}'s {before:.3f} by more than {tolerance}",
    )


def judge_rows_lost(drill: Drill[Any]) -> None:
    """No row the scenario sent was lost (where it sends rows: its `rows_lost` fact)."""
    if "rows_lost" in drill.facts:
        drill.require(drill.facts["rows_lost"] == 0, f"{drill.facts['rows_lost']} rows lost: not kept, quarantined or answered")

"""What validation says about a batch: the verdict, the failed checks, the findings,
and the report and result that carry them (frozen values, safe to log and put in events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pandas as pd

from prefect_crisis.core.vocabulary import RowReason
from prefect_crisis.tasks.validation.drift import FeatureDrift

REASONS_COLUMN = "quarantine_reasons"
# Index labels a failure or finding shows of the rows it concerns.
EXAMPLES_PER_FAILURE = 5


class Verdict(str, Enum):
    """What happens to the batch as a whole."""

    ACCEPT = "accept"
    ACCEPT_WITH_QUARANTINE = "accept_with_quarantine"
    REJECT = "reject"


@dataclass(frozen=True)
class CheckFailure:
    """One check failing on one column: how many rows, and a few of their index labels."""

    reason: RowReason
    column: str | None
    rows: int
    examples: tuple = ()


class FindingReason(str, Enum):
    """Why a batch as a whole deserves a look (no row is quarantined for it)."""

    CONSTANT_CHANGED = "constant_changed"
    MISSING_LABEL_COLUMN = "missing_label_column"
    NULL_LABEL = "null_label"
    SINGLE_CLASS = "single_class"
    RARE_CLASS = "rare_class"
    UNKNOWN_CLASS = "unknown_class"


@dataclass(frozen=True)
class Finding:
    """One fact about a batch, with its reason, the rows it concerns and a one-line message."""

    reason: FindingReason
    column: str | None
    message: str
    rows: int = 0
    examples: tuple = ()

    def to_dict(self) -> dict:
        return {
            "reason": self.reason.value,
            "column": self.column,
            "message": self.message,
            "rows": self.rows,
            "examples": [str(example) for example in self.examples],
        }


@dataclass(frozen=True)
class ValidationReport:
    """The verdict on one batch and everything behind it; safe to log and put in events."""

    verdict: Verdict
    rows: int
    kept: int
    quarantined: int
    failures: tuple[CheckFailure, ...] = ()
    coercions: dict[str, str] = field(default_factory=dict)
    drift: dict[str, FeatureDrift] = field(default_factory=dict)
    rejection_reasons: tuple[str, ...] = ()
    fingerprint: str = ""
    findings: tuple[Finding, ...] = ()

    @property
    def quarantine_ratio(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, figures in self.drift.items() if figures.drifted]

    @property
    def check_counts(self) -> dict[str, int]:
        """Failing rows per reason, summed over columns."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.reason.value] = counts.get(failure.reason.value, 0) + failure.rows
        return counts

    def to_dict(self) -> dict:
        """A JSON-ready summary (event payloads, MLflow tags)."""
        return {
            "verdict": self.verdict.value,
            "rows": self.rows,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "quarantine_ratio": round(self.quarantine_ratio, 6),
            "reasons": self.check_counts,
            "failures": [
                {"reason": f.reason.value, "column": f.column, "rows": f.rows, "examples": [str(e) for e in f.examples]} for f in self.failures
            ],
            "coercions": dict(self.coercions),
            "drifted_features": self.drifted_features,
            "drift": {name: figures.to_dict() for name, figures in self.drift.items()},
            "rejection_reasons": list(self.rejection_reasons),
            "fingerprint": self.fingerprint,
            "findings": [finding.to_dict() for finding in self.findings],
        }


@dataclass(frozen=True, eq=False)
class ValidationResult:
    """The report with the two parts of the batch it describes."""

    report: ValidationReport
    kept: pd.DataFrame
    quarantined: pd.DataFrame

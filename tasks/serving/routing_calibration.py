"""The routing calibration of one primary version as a value: its confidence map, threshold and reason, with the
holdout figures it was fitted on; stored as `routing.json` (the format below) in the version's MLflow run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prefect_crisis.core.errors import ServingError
from prefect_crisis.tasks.serving.confidence import UNCALIBRATED, ConfidenceMap

ROUTING_ARTIFACT = "routing.json"
FORMAT = 1


@dataclass(frozen=True)
class RoutingCalibration:
    """How one primary version's rows are routed, fitted on a holdout (`fit_routing`); stored as `routing.json`.

    Attributes:
        confidence_map: raw score -> calibrated confidence, or None when the primary offers no score.
        threshold: rows whose calibrated confidence is under it go to the fallback; None: routing off.
        reason: why routing is on or off, in one line.
        rows: holdout rows it was fitted on.
        primary_accuracy, fallback_accuracy, served_accuracy: on the holdout (served: cross-validated, with routing).
        ece_raw, ece: expected calibration error of the raw top probability and of the map (out of fold).
        fallback_version: the fallback the threshold was chosen against; serving another one turns routing off.

    Example:
        >>> calibration = RoutingCalibration(ConfidenceMap("probability", "none"), None, "no gain", 300, 0.95, 0.6, 0.95)
        >>> import json
        >>> RoutingCalibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration, calibration.method
        (True, 'none')
    """

    confidence_map: ConfidenceMap | None
    threshold: float | None
    reason: str
    rows: int
    primary_accuracy: float
    fallback_accuracy: float | None
    served_accuracy: float
    ece_raw: float | None = None
    ece: float | None = None
    fallback_version: str | None = None

    @property
    def method(self) -> str:
        return self.confidence_map.method if self.confidence_map else UNCALIBRATED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (no NaN: unknown figures are None)."""

        def number(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else round(float(value), 6)

        return {
            "format": FORMAT,
            "confidence_map": self.confidence_map.to_dict() if self.confidence_map else None,
            "threshold": number(self.threshold),
            "reason": self.reason,
            "holdout": {
                "rows": int(self.rows),
                "primary_accuracy": number(self.primary_accuracy),
                "fallback_accuracy": number(self.fallback_accuracy),
                "served_accuracy": number(self.served_accuracy),
                "ece_raw": number(self.ece_raw),
                "ece": number(self.ece),
            },
            "fallback_version": self.fallback_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingCalibration:
        """The value back from `to_dict`'s output.

        Raises:
            ServingError: not a routing calibration this version of prefect-crisis reads.
        """
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            holdout = data["holdout"]
            mapping = data.get("confidence_map")

            def optional(value: Any) -> float | None:
                return None if value is None else float(value)

            return cls(
                ConfidenceMap.from_dict(mapping) if mapping else None,
                optional(data.get("threshold")),
                str(data.get("reason", "")),
                int(holdout["rows"]),
                float(holdout["primary_accuracy"]),
                optional(holdout.get("fallback_accuracy")),
                float(holdout["served_accuracy"]),
                optional(holdout.get("ece_raw")),
                optional(holdout.get("ece")),
                None if data.get("fallback_version") is None else str(data["fallback_version"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ServingError(f"unreadable {ROUTING_ARTIFACT} ({error}): fit it again with fit_routing and log_routing") from None

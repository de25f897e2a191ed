"""Serving's plan for one primary's rows: which output it reads, the map, the threshold (None: no confidence
routing) and why, from its fitted calibration, the fallback served and the policy's explicit threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_crisis.tasks.serving.confidence import PROBABILITY, ConfidenceMap, available_scores
from prefect_crisis.tasks.serving.routing_calibration import ROUTING_ARTIFACT, RoutingCalibration


@dataclass(frozen=True)
class RoutingPlan:
    """How serving routes one primary's rows on confidence: which output it reads, the map, the threshold (None: no
    confidence routing) and why, in one line (logged once per primary/fallback pair)."""

    score: str | None
    confidence_map: ConfidenceMap | None
    threshold: float | None
    note: str


def plan_routing(
    estimator: Any,
    calibration: RoutingCalibration | None,
    *,
    version: str,
    explicit_threshold: float | None = None,
    fallback_version: str | None = None,
    missing: str = f"no {ROUTING_ARTIFACT} in its run",
) -> RoutingPlan:
    """Decide how to route a primary's rows: its fitted calibration, else no confidence routing (never lower accuracy),
    unless the policy sets a threshold explicitly.

    Example:
        >>> from sklearn.linear_model import SGDClassifier
        >>> hinge = SGDClassifier(loss="hinge").fit([[0.0], [1.0]], [0, 1])
        >>> plan_routing(hinge, None, version="3").note
        'v3 has no predict_proba and no routing calibration: served without confidence routing'
        >>> plan_routing(SGDClassifier(loss="log_loss").fit([[0.0], [1.0]], [0, 1]), None, version="4").threshold is None
        True
    """
    scores = available_scores(estimator)
    confidence_map = calibration.confidence_map if calibration is not None else None
    if calibration is not None and confidence_map is not None and confidence_map.score in scores:  # usable
        if explicit_threshold is not None:
            return RoutingPlan(
                confidence_map.score,
                confidence_map,
                explicit_threshold,
                f"v{version}: the policy's confidence_threshold {explicit_threshold:g} on the calibrated confidence "
                f"(the fitted one: {calibration.threshold if calibration.threshold is not None else 'off'})",
            )
        if calibration.threshold is None:
            return RoutingPlan(confidence_map.score, confidence_map, None, f"v{version}: confidence routing {calibration.reason}")
        if calibration.fallback_version is not None and fallback_version != calibration.fallback_version:
            return RoutingPlan(
                confidence_map.score,
                confidence_map,
                None,
                f"v{version}: confidence routing off: its threshold was fitted against fallback v{calibration.fallback_version}, "
                f"the fallback served is {'v' + fallback_version if fallback_version else 'none'}",
            )
        return RoutingPlan(confidence_map.score, confidence_map, calibration.threshold, f"v{version}: confidence routing {calibration.reason}")
    why = (
        missing
        if calibration is None
        else f"its {ROUTING_ARTIFACT} reads {calibration.confidence_map.score if calibration.confidence_map else 'no'} score"
    )
    if PROBABILITY not in scores:
        return RoutingPlan(None, None, None, f"v{version} has no predict_proba and no routing calibration: served without confidence routing")
    if explicit_threshold is not None:
        return RoutingPlan(
            PROBABILITY,
            None,
            explicit_threshold,
            f"v{version}: no usable routing calibration ({why}); the policy's confidence_threshold {explicit_threshold:g} on raw confidence",
        )
    return RoutingPlan(
        PROBABILITY,
        None,
        None,
        f"v{version}: confidence routing off: no usable routing calibration ({why}); fit_routing + log_routing at training "
        "turn it on (or set FallbackPolicy.confidence_threshold)",
    )

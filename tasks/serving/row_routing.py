"""One request's rows routed between the primary and the fallback, and the answer table (plain numpy and pandas).

A row whose primary columns are invalid goes to the fallback when the fallback's own columns are valid; a row
under the plan's confidence threshold, or whose primary output is not finite, goes to the fallback; a primary
that raises or times out (or that the open breaker keeps from being called) sends all its rows there. A routed
row carries why (its `reason`, a RouteReason first); a row nobody can answer fails with the reason, never
silently; a routed row the primary answered and the fallback cannot read keeps the primary's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prefect_crisis.core.vocabulary import RouteReason
from prefect_crisis.tasks.serving.answers import confidence_of, fallback_outputs
from prefect_crisis.tasks.serving.confidence_routing import raw_confidence
from prefect_crisis.tasks.serving.row_features import (
    FALLBACK,
    NONE,
    PRIMARY,
    RESPONDER_DTYPE,
    Features,
    invalid_reasons,
    placed,
    version_dtype,
)

if TYPE_CHECKING:
    from prefect_crisis.tasks.serving.breaker import CircuitBreaker
    from prefect_crisis.tasks.serving.confidence_routing import RoutingPlan
    from prefect_crisis.tasks.serving.served import ServedVersion

# (primary, its needed columns as floats, the plan's score) -> (its answers, the output its confidence is read from)
PrimaryCall = Callable[["ServedVersion", np.ndarray, "str | None"], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass(frozen=True, eq=False)
class RoutedRows:
    """One request after routing: per row who answered (PRIMARY, FALLBACK, NONE codes), the answer, its confidence,
    why the fallback answered it (None elsewhere); `errors`: failed row -> why; `primary_failure`: why the primary gave
    no answer at all (None when it answered); `readable_rows`: rows some model could read (the routed share counts them)."""

    codes: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray
    reasons: np.ndarray
    errors: dict[int, str]
    primary_failure: str | None
    readable_rows: int

    @property
    def fallback_rows(self) -> int:
        return int(np.count_nonzero(self.codes == FALLBACK))


def route_reason_of(reason: str | None) -> RouteReason | None:
    """The RouteReason a row's `reason` starts with (None: the row was not routed).

    Example:
        >>> route_reason_of("primary input invalid: 'x' is missing"), route_reason_of("primary v3 failed: ValueError: bad")
        (<RouteReason.PRIMARY_INPUT_INVALID: 'primary input invalid'>, <RouteReason.PRIMARY_FAILED: 'primary failed'>)
    """
    if not reason:
        return None
    for kind in RouteReason:
        if reason.startswith(kind.value):
            return kind
    return RouteReason.PRIMARY_FAILED if reason.startswith("primary v") and " failed: " in reason else None


def route_rows(
    features: Features,
    needed: tuple[str, ...],
    primary: ServedVersion,
    fallback: ServedVersion | None,
    plan: RoutingPlan,
    breaker: CircuitBreaker,
    call_primary: PrimaryCall,
    *,
    confidence_measure: str = "max_probability",
    fallback_alias: str = "fallback",
) -> RoutedRows:
    """Answer every row of `features` by whichever model can (see the module); the breaker hears how the primary did."""
    values, rows = features.values, len(features.frame)
    width = len(primary.features)
    fallback_columns = [needed.index(name) for name in fallback.features] if fallback else []
    codes = np.zeros(rows, dtype=np.int8)  # who answered each row: PRIMARY, FALLBACK or NONE
    confidence = np.full(rows, np.nan)
    why = np.full(rows, None, dtype=object)  # why a row is not the primary's: set where it is routed
    to_fallback = np.zeros(rows, dtype=bool)
    has_answer = np.zeros(rows, dtype=bool)  # the primary gave a usable answer
    live: slice | np.ndarray  # the rows the primary reads: all of them (a slice) or their indices
    primary_valid: np.ndarray | None
    fallback_valid: np.ndarray | None
    if features.valid is None:
        live, primary_valid, fallback_valid = slice(None), None, None
    else:
        primary_valid = np.asarray(features.valid[:, :width].all(axis=1))  # asarray: the array itself, typed as one
        fallback_valid = np.asarray(features.valid[:, fallback_columns].all(axis=1)) if fallback else np.zeros(rows, dtype=bool)
        invalid = np.flatnonzero(~primary_valid)
        if len(invalid):
            to_fallback[invalid] = True
            why[invalid] = f"{RouteReason.PRIMARY_INPUT_INVALID}: " + invalid_reasons(features, invalid, list(range(width)), needed)
        live = np.flatnonzero(primary_valid)
    live_rows = len(range(rows)[live]) if isinstance(live, slice) else len(live)

    predictions = np.zeros(rows, dtype=getattr(primary.estimator, "classes_", np.zeros(0)).dtype)
    primary_failure: str | None = None
    if live_rows:
        if breaker.allow():
            try:
                answers, output = call_primary(primary, values[live, :width], plan.score)
            except Exception as error:
                first = str(error).splitlines()[0] if str(error) else ""
                primary_failure = f"primary v{primary.version} failed: {type(error).__name__}: {first}"
                breaker.record_failure(primary_failure)
            else:
                breaker.record_success()
                predictions = answers if isinstance(live, slice) or live_rows == rows else placed(answers, live, rows)
                has_answer[live] = True
                if output is not None:
                    _judge_confidence(plan, output, live, confidence, to_fallback, has_answer, why, confidence_measure)
        else:
            primary_failure = f"{RouteReason.BREAKER_OPEN}: primary v{primary.version} not called"
        if primary_failure is not None:
            to_fallback[live] = True
            why[live] = primary_failure

    errors: dict[int, str] = {}  # row -> why it failed; empty on the usual path
    if to_fallback.any():
        predictions = _answer_by_fallback(
            fallback,
            values,
            fallback_columns,
            features,
            needed,
            to_fallback,
            fallback_valid,
            has_answer,
            codes,
            predictions,
            confidence,
            why,
            errors,
            confidence_measure,
            fallback_alias,
        )
        why[codes != FALLBACK] = None  # the reason column explains the fallback's rows; a failed row's is its error
    readable = rows if primary_valid is None or fallback_valid is None else int(np.count_nonzero(primary_valid | fallback_valid))
    return RoutedRows(codes, predictions, confidence, why, errors, primary_failure, readable)


def _judge_confidence(plan: RoutingPlan, output, live, confidence, to_fallback, has_answer, why, measure: str) -> None:
    """Confidence of the primary's rows (calibrated when the plan has a map); routes the ones under the threshold
    and the ones whose output is not finite (blown-up weights: their answer is not one)."""
    if plan.confidence_map is not None:
        row_confidence = plan.confidence_map(raw_confidence(output, plan.confidence_map.score))  # the plan's score is its map's
    else:
        row_confidence = confidence_of(np.asarray(output, dtype=np.float64), measure)
    confidence[live] = row_confidence
    if plan.threshold is not None:
        low = row_confidence < plan.threshold  # False for NaN
        if low.any():
            rows = np.arange(len(confidence))[live][low]
            to_fallback[rows] = True
            why[rows] = f"{RouteReason.LOW_CONFIDENCE} {plan.threshold:.4g}" + (" (calibrated)" if plan.confidence_map is not None else "")
    broken = np.isnan(row_confidence)
    if broken.any():
        rows = np.arange(len(confidence))[live][broken]
        to_fallback[rows], has_answer[rows] = True, False
        why[rows] = f"{RouteReason.NON_FINITE_SCORES} {plan.score} scores"


def _answer_by_fallback(
    fallback,
    values,
    fallback_columns,
    features,
    needed,
    to_fallback,
    fallback_valid,
    has_answer,
    codes,
    predictions,
    confidence,
    why,
    errors,
    measure: str,
    fallback_alias: str,
) -> np.ndarray:
    """Answer the routed rows the fallback can read; a routed row nobody can answer is marked failed with its reason,
    one the primary answered keeps that answer. Returns the predictions array (its dtype may widen)."""
    if fallback is None:
        routed = np.zeros(len(codes), dtype=bool)
    else:
        routed = to_fallback if fallback_valid is None else to_fallback & fallback_valid
    unreadable = to_fallback & ~routed  # the fallback cannot read them (or there is none)
    if unreadable.any():
        rows = np.flatnonzero(unreadable & ~has_answer)
        if len(rows):
            if fallback is None:
                cause = np.full(len(rows), f"no fallback version under @{fallback_alias}", dtype=object)
            else:
                cause = "fallback input invalid: " + invalid_reasons(features, rows, fallback_columns, needed)
            _fail(rows, why[rows] + "; " + cause, codes, confidence, errors)
    rows = np.flatnonzero(routed)
    if not len(rows):
        return predictions
    try:
        answers, probabilities = fallback_outputs(fallback.estimator, values[np.ix_(rows, fallback_columns)])
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        failed = rows[~has_answer[rows]]
        _fail(failed, why[failed] + f"; fallback v{fallback.version} failed: {type(error).__name__}: {first}", codes, confidence, errors)
        return predictions
    if answers.dtype != predictions.dtype:
        predictions = predictions.astype(
            np.result_type(predictions.dtype, answers.dtype) if answers.dtype.kind in "biuf" and predictions.dtype.kind in "biuf" else object
        )
    codes[rows] = FALLBACK
    predictions[rows] = answers
    confidence[rows] = confidence_of(probabilities, measure) if probabilities is not None else np.nan
    return predictions


def _fail(rows: np.ndarray, messages: np.ndarray, codes, confidence, errors) -> None:
    codes[rows], confidence[rows] = NONE, np.nan
    errors.update(zip(rows.tolist(), messages.tolist(), strict=True))


def answer_table(
    frame: pd.DataFrame,
    request_id: str,
    primary: ServedVersion,
    fallback: ServedVersion | None,
    routed: RoutedRows,
    id_column: str | None = None,
) -> pd.DataFrame:
    """The answer: per row `prediction`, `answered_by`, `version`, `confidence`, `error`, `reason`, `request_id`,
    `row_id` (the `id_column`'s value, else the position). Categorical columns: building 10,000 strings would cost
    more than the prediction."""
    codes, predictions, errors = routed.codes, routed.predictions, routed.errors
    rows = len(codes)
    version_names = [primary.version] + ([fallback.version] if fallback and fallback.version != primary.version else [])
    fallback_code = version_names.index(fallback.version) if fallback else -1
    version_codes = np.where(codes == PRIMARY, 0, np.where(codes == FALLBACK, fallback_code, -1)).astype(np.int8)
    error_column = np.full(rows, None, dtype=object)
    if errors:
        failed = np.fromiter(errors, dtype=np.int64, count=len(errors))
        error_column[failed] = list(errors.values())
        predictions = predictions.astype(object)
        predictions[failed] = None
    row_ids: Any = frame[id_column].to_numpy() if id_column and id_column in frame.columns else np.arange(rows)
    return pd.DataFrame(
        {
            "prediction": predictions,
            "answered_by": pd.Categorical.from_codes(codes, dtype=RESPONDER_DTYPE),
            "version": pd.Categorical.from_codes(version_codes, dtype=version_dtype(tuple(version_names))),
            "confidence": routed.confidence,
            "error": pd.Series(error_column, dtype=object, copy=False),
            "reason": pd.Series(routed.reasons, dtype=object, copy=False),
            "request_id": pd.Series(np.array([request_id], dtype=object).repeat(rows), dtype=object, copy=False),
            "row_id": row_ids,
        },
        copy=False,
    )

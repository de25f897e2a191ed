"""The fallback model: a simple, robust version kept under the registry's
`fallback` alias, so a FALLBACK recovery always has somewhere to go.

A completed training also fits, on the training split of the same validated
batch, the model the TrainingPolicy names: `logistic` (standardised logistic
regression on the fewest columns that do the job) or `prior` (the training
label shares, whatever the input).

A few columns serve a binary label well; ten classes are not told apart by
three pixels (0.43 against the primary's 0.92 on digits). So the logistic
fallback starts from `fallback_min_features` columns and adds the next ones by
rank score (3, 5, 8, 12, 18, ...) until its accuracy reaches
`fallback_min_ratio` of the primary's holdout accuracy, in 3-fold
cross-validation on the training split first and then on the holdout (a count
the training split already rules out is never tried on the holdout), or
`fallback_max_features` is reached. Its holdout accuracy, the primary's and
their ratio are metrics of its run (so of its version), and the version's tag
`crisis.fallback.meets_bar` says whether the bar was met on the holdout, with
the figures in `crisis.fallback.bar` when not. It is registered as a version of the same registered model, tagged
`crisis.role=fallback` with the columns it reads in `crisis.features` (so the
crisis response scores and verifies it like any version), logged with its
holdout metrics in an MLflow run of its own, and pointed at by the fallback
alias with a plain audited MOVE: `ml.fallback.engaged` means serving switched
to it, which registering it does not.

Only when the model has no fallback yet, or the policy says `replace_fallback`:
a fallback a user registered and pointed the alias at is kept. It is never
promoted, never a challenger and never a rollback target (the registry and
`prefect_crisis.tasks.response.rollback` refuse it).

The parts: the columns in `fallback_columns`, the fitting in `fallback_fit` (both plain functions), the
routing between a candidate and its fallback in `fallback_routing`; registering the fallback here. Every name
still imports from this module.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.paths import ensure_experiment
from prefect_crisis.core.vocabulary import AliasAction, TagKey, VersionRole
from prefect_crisis.tasks.serving.fallback_columns import feature_counts, rank_scores, ranked_columns, select_fallback_features
from prefect_crisis.tasks.serving.fallback_fit import (  # noqa: F401 (private; still importable here)
    FallbackModel,
    FallbackResult,
    _cross_validated_accuracy,
    _fit_on,
    fallback_refusal,
    fit_fallback,
    grow_fallback_features,
    make_fallback_estimator,
)
from prefect_crisis.tasks.serving.fallback_routing import calibrate_candidate_routing, calibrate_routing
from prefect_crisis.tasks.training.data import TrainingData
from prefect_crisis.tasks.training.gate import CandidateResult
from prefect_crisis.tasks.training.promotion import log_candidate

__all__ = [
    "BAR_TAG",
    "MEETS_BAR_TAG",
    "FallbackModel",
    "FallbackResult",
    "calibrate_candidate_routing",
    "calibrate_routing",
    "fallback_refusal",
    "feature_counts",
    "fit_fallback",
    "grow_fallback_features",
    "keep_fallback",
    "keep_fallback_model",
    "make_fallback_estimator",
    "rank_scores",
    "ranked_columns",
    "select_fallback_features",
]

# tests/unit/test_docstrings.py runs this module's examples; those of the modules split out of it run with them.
__test__ = {
    "split_out": """
>>> import doctest
>>> from prefect_crisis.tasks.serving import fallback_columns, fallback_fit
>>> [doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS).failed for module in (fallback_columns, fallback_fit)]
[0, 0]
"""
}


# Tags of a fallback version (to join TagKey): whether it reaches fallback_min_ratio of the primary, and the figures when not.
MEETS_BAR_TAG = TagKey.FALLBACK_MEETS_BAR
BAR_TAG = TagKey.FALLBACK_BAR


def keep_fallback(
    registry: ModelRegistry,
    data: TrainingData,
    policy: TrainingPolicy,
    flow_run_id: str = "",
    primary_metrics: dict[str, float] | None = None,
    label_finding: str | None = None,
) -> FallbackResult:
    """Register the policy's fallback and point the fallback alias at it, unless one is there and may stay,
    the batch's labels are in doubt, or the batch cannot give one worth keeping (`fallback_refusal`).

    Args:
        registry: the model's registry; the fallback is a version of the same registered model.
        data: the validated batch the candidate was trained on (training split and holdout).
        flow_run_id: the training's flow run, as a tag of the version and its run.
        primary_metrics: the candidate's holdout metrics: its accuracy sets the fallback's bar.
        label_finding: the promotion gate's label-quality finding on this batch: no fallback is learnt from it.
    """
    current = registry.version_by_alias(registry.fallback_alias)
    if current is not None and not policy.replace_fallback:
        return FallbackResult(current.version, False, "kept: replace_fallback is off")
    refusal = fallback_refusal(data, policy)
    if refusal is None and label_finding:
        refusal = "the batch's labels are in doubt (label-quality finding)"
    if refusal is not None:
        return FallbackResult(current.version if current else None, False, f"not replaced: {refusal}" if current else refusal)
    fallback = fit_fallback(data, policy, (primary_metrics or {}).get("accuracy"))
    client = registry.client
    tags: dict[str, str] = {TagKey.ROLE: VersionRole.FALLBACK.value, TagKey.FINGERPRINT: data.fingerprint, TagKey.FLOW_RUN_ID: flow_run_id}
    if fallback.meets_bar is not None:
        tags[MEETS_BAR_TAG] = str(fallback.meets_bar).lower()
    if fallback.shortfall():
        tags[BAR_TAG] = fallback.shortfall()
    # A run of its own: the version's metrics are its run's, and the training experiment stays the resume history.
    experiment = ensure_experiment(client, f"crisis-fallback-{registry.model_name}", {TagKey.MODEL: registry.model_name})
    run_id = client.create_run(experiment, tags={TagKey.MODEL: registry.model_name, **tags}, run_name=f"fallback-{registry.model_name}").info.run_id
    client.log_param(run_id, "fallback_model", fallback.kind)
    client.log_param(run_id, "fallback_features", ",".join(fallback.features)[:500])
    ratio = fallback.ratio  # not None: the primary's accuracy is known (and not 0)
    known = {"primary_accuracy": fallback.primary_accuracy, "accuracy_ratio": ratio} if ratio and fallback.primary_accuracy else {}
    figures: dict[str, float] = {**fallback.metrics, **known}
    for name, value in figures.items():
        client.log_metric(run_id, name, value)
    columns = [data.features.index(name) for name in fallback.features]
    info = log_candidate(fallback.estimator, data.X_holdout[:, columns], run_id, client)
    client.set_terminated(run_id, "FINISHED")
    version = registry.register_version(info.model_uri, run_id, info.model_id, {**tags, TagKey.FEATURES: ",".join(fallback.features)})
    replaces = f"; replaces v{current.version} (replace_fallback)" if current is not None else ""
    # A plain MOVE: FALLBACK would emit ml.fallback.engaged, which means serving switched to it.
    registry.move_alias(
        registry.fallback_alias, version.version, f"fallback model: {fallback.describe()}{replaces}", action=AliasAction.MOVE, current=current
    )
    missed = f"; misses the bar: {fallback.shortfall()}" if fallback.shortfall() else ""
    return FallbackResult(version.version, True, f"{fallback.describe()}{missed}")


@task(name="keep-fallback-model", cache_policy=NO_CACHE)
def keep_fallback_model(
    registry: ModelRegistry, data: TrainingData, policy: TrainingPolicy, candidate: CandidateResult | None = None
) -> FallbackResult:
    """Register the fallback model when the model has none (or the policy replaces it); see `keep_fallback`.

    Args:
        candidate: the promotion gate's result: the primary's accuracy sets the bar, a label-quality finding forbids one.
    """
    primary, finding = (candidate.metrics, candidate.label_finding) if candidate is not None else (None, None)
    result = keep_fallback(registry, data, policy, flow_run.get_id() or "", primary, finding)
    get_run_logger().info("fallback v%s %s", result.version, f"registered ({result.detail})" if result.registered else result.detail)
    return result

"""The promotion gate's minimum holdout size, the holdout that grows for a small batch, guards against a
fallback champion and the label-quality finding, as plain decisions."""

from __future__ import annotations

import pytest

from prefect_crisis.blocks import TrainingPolicy
from prefect_crisis.tasks.training.gate import decide_promotion


@pytest.mark.parametrize("champion", [{"accuracy": 0.0}, None], ids=["against a champion", "first model"])
def test_a_holdout_below_the_minimum_promotes_nothing_and_says_why(champion):
    decision = decide_promotion({"accuracy": 1.0}, champion, TrainingPolicy(), holdout_rows=2)
    assert not decision.promote
    assert decision.reason == (
        "holdout of 2 rows is below min_holdout_rows 50: train on a batch of 100 rows or more, or lower min_holdout_rows in the TrainingPolicy"
    )


def test_the_minimum_is_the_policys_and_is_inclusive():
    policy = TrainingPolicy(min_holdout_rows=50)
    assert not decide_promotion({"accuracy": 0.9}, {"accuracy": 0.8}, policy, holdout_rows=49).promote
    assert decide_promotion({"accuracy": 0.9}, {"accuracy": 0.8}, policy, holdout_rows=50).promote


@pytest.mark.parametrize(("rows", "held"), [(10, 5), (99, 49), (100, 50), (178, 89), (569, 200), (1_000, 200), (1_797, 360), (5_000, 1_000)])
def test_the_holdout_grows_for_a_small_batch_within_half_of_it(rows, held):
    from prefect_crisis.tasks.training.data import holdout_rows

    assert holdout_rows(rows, TrainingPolicy()) == held


def test_guards_are_not_applied_against_a_fallback_champion_but_are_against_any_other():
    """The default SGD candidate's log loss (0.6) beside the calibrated logistic fallback's (0.3) blocked every
    retrain once the fallback was champion: a different family's log loss is no bar."""
    candidate, fallback = {"accuracy": 0.873, "log_loss": 0.60}, {"accuracy": 0.862, "log_loss": 0.31}
    policy = TrainingPolicy()
    assert not decide_promotion(candidate, fallback, policy, holdout_rows=1_000).promote
    decision = decide_promotion(candidate, fallback, policy, holdout_rows=1_000, champion_is_fallback=True)
    assert decision.promote and "guards are not applied against the fallback model" in decision.reason
    worse = decide_promotion({"accuracy": 0.85, "log_loss": 0.2}, fallback, policy, holdout_rows=1_000, champion_is_fallback=True)
    assert not worse.promote and "does not beat" in worse.reason  # it must still beat it


def test_a_label_quality_finding_blocks_promotion_whatever_the_scores():
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    figures = TrustedFigures("3", 0.146, 400, 0.905, 0.90, 200, 0.97, 0.10)
    finding = label_quality_finding(figures, TrainingPolicy().label_collapse_margin)
    decision = decide_promotion({"accuracy": 0.97}, {"accuracy": 0.146}, TrainingPolicy(), holdout_rows=400, label_finding=finding)
    assert not decision.promote and decision.reason == finding
    assert "0.146 on this batch's holdout" in finding and "0.905 registered" in finding and "0.900 on the golden set" in finding
    assert label_quality_finding(figures, None) is None  # the check turned off


@pytest.mark.parametrize(
    ("on_batch", "rows", "found"),
    [(0.60, 400, True), (0.73, 400, False), (0.60, 20, False)],  # beyond doubt only: 12/20 could be bad luck of 0.905
)
def test_a_collapse_counts_only_beyond_doubt(on_batch, rows, found):
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    figures = TrustedFigures("1", on_batch, rows, 0.905, 0.90, 200, 0.95)
    assert (label_quality_finding(figures, 0.15) is not None) is found


def test_a_tie_does_not_promote_under_the_default_policy():
    """With no margin (the default) a candidate must beat the champion: equal is not better."""
    policy = TrainingPolicy()
    assert policy.promotion_margin == 0
    tie = decide_promotion({"accuracy": 0.9, "log_loss": 0.3}, {"accuracy": 0.9, "log_loss": 0.3}, policy, holdout_rows=1_000)
    assert not tie.promote and tie.reason == "accuracy 0.9000 does not beat the champion 0.9000"
    assert decide_promotion({"accuracy": 0.9001, "log_loss": 0.3}, {"accuracy": 0.9, "log_loss": 0.3}, policy, holdout_rows=1_000).promote


@pytest.mark.parametrize(
    ("primary", "minimum", "score", "promote"),
    [
        ("accuracy", 0.8, 0.79, False),
        ("accuracy", 0.8, 0.8, True),  # reaching the minimum is enough
        ("accuracy", 0.8, 0.81, True),
        ("log_loss", 0.3, 0.31, False),  # lower is better: above the bar misses it
        ("log_loss", 0.3, 0.3, True),
        ("log_loss", 0.3, 0.29, True),
    ],
)
def test_a_first_model_must_reach_min_primary_metric_in_the_metrics_direction(primary, minimum, score, promote):
    policy = TrainingPolicy(primary_metric=primary, min_primary_metric=minimum, guard_metrics={})
    decision = decide_promotion({primary: score}, None, policy, holdout_rows=1_000)
    assert decision.promote is promote
    if not promote:
        assert decision.reason == f"first model's {primary} {score:.4f} misses the minimum {minimum}"


def test_min_primary_metric_does_not_apply_against_a_champion():
    policy = TrainingPolicy(min_primary_metric=0.8)
    assert decide_promotion({"accuracy": 0.7}, {"accuracy": 0.6}, policy, holdout_rows=1_000).promote


def test_the_gate_and_the_policy_agree_on_which_metrics_are_lower_is_better():
    from prefect_crisis.blocks.training_policy import LOWER_IS_BETTER
    from prefect_crisis.tasks.training import gate

    assert gate.LOWER_IS_BETTER == LOWER_IS_BETTER

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


# -- each branch of the gate as a whole decision ----------------------------------------------


def test_each_refusal_is_a_decision_not_to_promote_with_its_reason():
    from prefect_crisis.tasks.training.gate import PromotionDecision

    policy = TrainingPolicy()
    assert decide_promotion({"accuracy": 1.0}, None, policy, holdout_rows=49) == PromotionDecision(
        False,
        "holdout of 49 rows is below min_holdout_rows 50: train on a batch of 100 rows or more, or lower min_holdout_rows in the TrainingPolicy",
    )
    assert decide_promotion({"accuracy": 0.99}, {"accuracy": 0.5}, policy, holdout_rows=1_000, label_finding="labels look wrong") == (
        PromotionDecision(False, "labels look wrong")
    )
    assert decide_promotion({"f1": 0.9}, {"accuracy": 0.5}, policy, holdout_rows=1_000) == PromotionDecision(False, "candidate has no accuracy")
    assert decide_promotion({"accuracy": 0.9, "log_loss": 0.40}, {"accuracy": 0.8, "log_loss": 0.30}, policy, holdout_rows=1_000) == (
        PromotionDecision(False, "guard log_loss worsens from 0.3000 to 0.4000 (allowed 0.05)")
    )
    margin = TrainingPolicy(promotion_margin=0.05)
    assert decide_promotion({"accuracy": 0.82}, {"accuracy": 0.8}, margin, holdout_rows=1_000) == (
        PromotionDecision(False, "accuracy 0.8200 does not beat the champion 0.8000 by 0.05")
    )


def test_each_promotion_is_a_decision_to_promote_with_its_reason():
    from prefect_crisis.tasks.training.gate import PromotionDecision

    policy = TrainingPolicy()
    assert decide_promotion({"accuracy": 0.7}, None, policy, holdout_rows=1_000) == PromotionDecision(True, "no champion yet; accuracy 0.7000")
    assert decide_promotion({"accuracy": 0.7}, {"f1": 0.9}, policy, holdout_rows=1_000) == PromotionDecision(True, "no champion yet; accuracy 0.7000")
    assert decide_promotion({"accuracy": 0.9, "log_loss": 0.3}, {"accuracy": 0.8, "log_loss": 0.3}, policy, holdout_rows=1_000) == (
        PromotionDecision(True, "accuracy 0.9000 beats the champion 0.8000")
    )


def test_a_guard_allows_a_worsening_of_exactly_its_allowance():
    """Kills `> allowed` moved to `>=`: 0.25 -> 0.5 is exactly 0.25 worse in binary, which an allowance of 0.25 accepts."""
    policy = TrainingPolicy(guard_metrics={"log_loss": 0.25})
    assert decide_promotion({"accuracy": 0.9, "log_loss": 0.5}, {"accuracy": 0.8, "log_loss": 0.25}, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"accuracy": 0.9, "log_loss": 0.51}, {"accuracy": 0.8, "log_loss": 0.25}, policy, holdout_rows=1_000).promote is False
    # a guard that only one side reports is not applied
    assert decide_promotion({"accuracy": 0.9}, {"accuracy": 0.8, "log_loss": 0.25}, policy, holdout_rows=1_000).promote is True


def test_a_lower_is_better_primary_metric_must_fall_to_beat_the_champion():
    policy = TrainingPolicy(primary_metric="log_loss", guard_metrics={})
    assert decide_promotion({"log_loss": 0.30}, {"log_loss": 0.35}, policy, holdout_rows=1_000).promote is True
    assert decide_promotion({"log_loss": 0.40}, {"log_loss": 0.35}, policy, holdout_rows=1_000).promote is False


# -- the label-quality finding -----------------------------------------------------------------


def test_the_finding_reports_the_figures_at_the_confidence_it_was_judged():
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    finding = label_quality_finding(TrustedFigures("7", 0.5, 400, 0.9, 0.88, 200, 0.97), 0.15, confidence=0.99)
    assert finding == (
        "label-quality finding: champion v7 scores 0.500 on this batch's holdout (400 rows, at most 0.564 at 99 %) against 0.900 "
        "registered and 0.880 on the golden set (200 rows): the batch's labels look wrong; the candidate scores 0.970 on the batch"
    )
    scored = label_quality_finding(TrustedFigures("7", 0.5, 400, 0.9, 0.88, 200, 0.97, 0.081), 0.15)
    assert scored.endswith("; the candidate scores 0.970 on the batch, 0.081 on the golden set")


def test_a_champion_holding_exactly_the_bar_on_the_golden_set_is_a_finding():
    """Kills `champion_on_golden < bar` moved to `<=`: 0.75 - 0.25 is exactly 0.5."""
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    assert label_quality_finding(TrustedFigures("1", 0.1, 400, 0.75, 0.5, 200, 0.9), 0.25) is not None
    assert label_quality_finding(TrustedFigures("1", 0.1, 400, 0.75, 0.49, 200, 0.9), 0.25) is None


def test_a_batch_whose_wilson_bound_reaches_the_bar_is_no_finding():
    """Kills `batch_high >= bar` moved to `>`: with no margin the bar is the registered figure itself."""
    from prefect_crisis.tasks.response.rules import wilson_interval
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    high = wilson_interval(40, 400, 0.95)[1]
    assert label_quality_finding(TrustedFigures("1", 0.1, 400, high, high, 200, 0.9), 0.0) is None
    assert label_quality_finding(TrustedFigures("1", 0.1, 400, high + 1e-9, high + 1e-9, 200, 0.9), 0.0) is not None


def test_a_single_row_batch_can_show_a_collapse_but_an_empty_one_cannot():
    from prefect_crisis.tasks.training.gate import TrustedFigures, label_quality_finding

    assert label_quality_finding(TrustedFigures("1", 0.0, 1, 0.9, 0.9, 200, 0.5), 0.05) is not None  # 0 of 1: at most 0.793
    assert label_quality_finding(TrustedFigures("1", 0.0, 0, 0.9, 0.9, 200, 0.5), 0.05) is None
    assert label_quality_finding(None, 0.05) is None


# -- metrics on a holdout ----------------------------------------------------------------------


def test_holdout_metrics_score_accuracy_macro_f1_and_log_loss():
    import numpy as np
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    from prefect_crisis.tasks.training.gate import evaluate

    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    flipped = np.array([0, 0, 1, 1, 1, 0])  # the model predicts 0,0,0,1,1,1: 4 of 6 right
    model = LogisticRegression().fit(X, y)
    metrics = evaluate(model, X, flipped, np.array([0, 1]))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx(2 / 3)  # each class: precision 2/3, recall 2/3
    probabilities = model.predict_proba(X)[:, 1]
    expected_loss = -np.mean(np.where(flipped == 1, np.log(probabilities), np.log(1 - probabilities)))
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    assert "log_loss" not in evaluate(model, X, np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1]))  # a label the model has no class for
    one_class = evaluate(model, X[:3], np.array([0, 0, 0]), np.array([0, 1]))  # a holdout of one class: scored over both
    assert one_class["log_loss"] == pytest.approx(-np.mean(np.log(1 - probabilities[:3])))
    assert sorted(evaluate(RidgeClassifier().fit(X, y), X, y, np.array([0, 1]))) == ["accuracy", "f1"]


def test_holdout_metrics_leave_out_a_log_loss_of_non_finite_probabilities():
    import numpy as np

    from prefect_crisis.tasks.training.gate import evaluate

    class Diverged:
        def predict(self, X):
            return np.zeros(len(X), dtype=int)

        def predict_proba(self, X):
            return np.full((len(X), 2), np.nan)

    assert sorted(evaluate(Diverged(), np.zeros((4, 1)), np.array([0, 0, 1, 1]), np.array([0, 1]))) == ["accuracy", "f1"]


def test_accuracy_on_a_frame_reads_the_named_columns_and_needs_them_all():
    import numpy as np
    import pandas as pd

    from prefect_crisis.tasks.training.gate import accuracy_on

    class Threshold:
        def predict(self, X):
            assert X.dtype == np.float64 and X.shape[1] == 2
            return (X[:, 1] > 0.5).astype(int)

    frame = pd.DataFrame({"a": [0, 0, 0, 0], "b": [0, 1, 1, 0], "label": [0, 1, 0, 0]})  # integer columns, read as floats
    assert accuracy_on(Threshold(), frame, ["a", "b"], "label") == pytest.approx(0.75)
    assert accuracy_on(Threshold(), frame, ["a", "c"], "label") is None
    assert accuracy_on(Threshold(), frame, ["a", "b"], "target") is None
    assert accuracy_on(Threshold(), frame.iloc[:0], ["a", "b"], "label") is None


def test_a_versions_columns_are_indexes_into_the_features_in_its_order():
    from prefect_crisis.tasks.training.gate import columns_of

    assert columns_of("f03,f00", ["f00", "f01", "f02", "f03"]) == [3, 0]
    assert columns_of("f01", ["f00", "f01"]) == [1]
    assert columns_of("f00,tenure", ["f00", "f01"]) is None

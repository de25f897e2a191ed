"""The promotion gate's minimum holdout size, as plain decisions."""

from __future__ import annotations

import pytest

from prefect_crisis.blocks import TrainingPolicy
from prefect_crisis.tasks.promotion import decide_promotion


@pytest.mark.parametrize("champion", [{"accuracy": 0.0}, None], ids=["against a champion", "first model"])
def test_a_holdout_below_the_minimum_promotes_nothing_and_says_why(champion):
    decision = decide_promotion({"accuracy": 1.0}, champion, TrainingPolicy(), holdout_rows=2)
    assert not decision.promote
    assert decision.reason.startswith("holdout of 2 rows is below min_holdout_rows 200")


def test_the_minimum_is_the_policys_and_is_inclusive():
    policy = TrainingPolicy(min_holdout_rows=50)
    assert not decide_promotion({"accuracy": 0.9}, {"accuracy": 0.8}, policy, holdout_rows=49).promote
    assert decide_promotion({"accuracy": 0.9}, {"accuracy": 0.8}, policy, holdout_rows=50).promote

"""How much of a batch is held out to judge a candidate, and which rows.

A small batch holds out more than `holdout_fraction` of its rows, so the promotion gate has
enough of them to judge on (`holdout_rows`); a holdout still below `min_holdout_rows` promotes
nothing, and the refusal names the smallest batch that would do (`smallest_judged_batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from prefect_crisis.blocks.training_policy import TrainingPolicy


def holdout_rows(rows: int, policy: TrainingPolicy) -> int:
    """How many of a batch's `rows` are held out: `holdout_fraction` of them, grown toward `target_holdout_rows`
    while at least `1 - max_holdout_fraction` of the rows are left to train on.

    Example:
        >>> from prefect_crisis.blocks.training_policy import TrainingPolicy
        >>> policy = TrainingPolicy()
        >>> [holdout_rows(rows, policy) for rows in (10, 100, 178, 569, 1_797, 5_000)]
        [5, 50, 89, 200, 360, 1000]
    """
    share = rows - int(rows * (1 - policy.holdout_fraction))
    return max(share, min(policy.target_holdout_rows, int(rows * policy.max_holdout_fraction)))


def smallest_judged_batch(policy: TrainingPolicy) -> int:
    """The fewest rows a batch needs for its holdout to reach `min_holdout_rows`.

    Example:
        >>> from prefect_crisis.blocks.training_policy import TrainingPolicy
        >>> smallest_judged_batch(TrainingPolicy()), smallest_judged_batch(TrainingPolicy(min_holdout_rows=200))
        (100, 400)
    """
    rows = policy.min_holdout_rows
    while holdout_rows(rows, policy) < policy.min_holdout_rows:
        rows += 1
    return rows


def stratified_holdout(y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """A mask of `rows` held-out rows, seeded, each class in about its share of them.

    Rows are shuffled by `seed`; within its class, each row gets the position (k + 0.5) / n of its turn, and the
    `rows` earliest positions are held out, so every class of two rows or more lands on both sides.

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> held = stratified_holdout(y, 20, seed=0)
        >>> int(held.sum()), int(held[y == 1].sum())
        (20, 2)
    """
    order = np.random.default_rng(seed).permutation(len(y))
    position = np.empty(len(y))
    shuffled = y[order]
    for label in np.unique(shuffled):
        turns = np.flatnonzero(shuffled == label)
        position[turns] = (np.arange(len(turns)) + 0.5) / len(turns)
    held = np.zeros(len(y), dtype=bool)
    held[order[np.argsort(position, kind="stable")[:rows]]] = True
    return held

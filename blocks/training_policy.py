"""The TrainingPolicy block: how a model is trained, guarded and promoted."""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, model_validator

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "error_rate", "mae", "rmse"})


class TrainingPolicy(Block):
    """Training, stop guards and the promotion gate for one model.

    Example:
        ```python
        from prefect_crisis.blocks import TrainingPolicy

        TrainingPolicy(epochs=10, primary_metric="f1", promotion_margin=0.005,
                       fallback_model="logistic", fallback_max_features=8).save("churn", overwrite=True)
        ```

    Besides the candidate, a completed training keeps a fallback version (the
    `fallback_*` fields and `replace_fallback`): see `prefect_crisis.tasks.serving.fallback_model`.

    The holdout grows with a small batch: `holdout_fraction` of the rows, grown toward
    `target_holdout_rows` but never past `max_holdout_fraction` of them. A holdout
    still below `min_holdout_rows` (a batch under 100 rows, by default) promotes nothing and
    gives no fallback, and the run's message names that setting. So with the defaults a batch
    of 178 rows holds out 89, one of 569 rows 200, one of 5,000 rows 1,000.
    """

    _block_type_name = "Crisis Training Policy"
    _block_type_slug = "crisis-training-policy"
    _description = "How a model is trained in stoppable mini-batches, which guards stop it, and when a candidate is promoted."

    estimator: Literal["sgd", "mlp", "nb", "auto"] = Field(
        default="sgd",
        description=(
            "SGDClassifier (log loss, a slowly falling step size), MLPClassifier or GaussianNB, behind the scaler of scale_features; "
            "'auto' chooses among the three by 3-fold accuracy on the training part (the simplest within one standard error of "
            "the best), recorded on the run and the registered version (crisis.family, crisis.family_choice)."
        ),
    )
    estimator_params: dict[str, Any] = Field(default_factory=dict, description="Extra estimator parameters, e.g. {'alpha': 1e-3}.")
    scale_features: bool = Field(
        default=True,
        description=(
            "Standardise the features (a scaler fitted on the training part) before the estimator. Either way, "
            "columns whose contract allows missing values are first filled with their training medians."
        ),
    )
    label_column: str = Field(default="label", description="Column holding the target.")
    feature_columns: list[str] | None = Field(default=None, description="Feature columns; empty uses every numeric column but the label.")
    epochs: int = Field(default=5, ge=1, description="Passes over the batch.")
    batch_size: int = Field(default=256, ge=1, description="Rows per mini-batch; the stop hook runs between mini-batches.")
    holdout_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of rows held out for evaluation (stratified by label); a small batch holds out more."
    )
    target_holdout_rows: int = Field(
        default=200, ge=1, description="A batch whose holdout_fraction gives fewer holdout rows holds out this many, within max_holdout_fraction."
    )
    max_holdout_fraction: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="The largest share of a small batch held out to reach target_holdout_rows."
    )
    seed: int = Field(default=0, description="Seed of the split and the shuffles.")
    time_budget_seconds: float | None = Field(default=900.0, gt=0, description="Stop training after this long.")
    divergence_factor: float | None = Field(default=10.0, gt=1.0, description="Stop when the loss passes this multiple of its best.")
    stall_patience_batches: int | None = Field(default=None, ge=1, description="Stop after this many mini-batches without a new best loss.")
    checkpoint_every_seconds: float | None = Field(
        default=1.0,
        ge=0,
        description=(
            "Also write the checkpoint while training, this often, so a process killed outright (SIGKILL, out of "
            "memory) loses at most this much work; 0: after every mini-batch (the mini-batch in flight is all a kill "
            "loses, at the cost of a write per mini-batch); empty: only when training stops."
        ),
    )
    flag_poll_seconds: float = Field(default=0.2, ge=0, description="How often the stop flag Variable is read (0: every mini-batch).")
    primary_metric: str = Field(default="accuracy", description="Holdout metric the promotion gate compares.")
    promotion_margin: float = Field(default=0.0, ge=0.0, description="How much a candidate must beat the champion on the primary metric.")
    guard_metrics: dict[str, float] = Field(
        default_factory=lambda: {"log_loss": 0.05},
        description="Metric -> largest allowed worsening against the champion (absolute).",
    )
    min_primary_metric: float | None = Field(default=None, description="A first model is promoted only if it reaches this.")
    min_holdout_rows: int = Field(
        default=50,
        ge=1,
        description=(
            "The floor: no promotion and no fallback when the holdout (grown toward target_holdout_rows) has fewer "
            "rows. An accuracy of 0.9 measured on 50 rows is known to about +-0.09 (95 % Wilson interval)."
        ),
    )
    label_collapse_margin: float | None = Field(
        default=0.15,
        gt=0.0,
        description=(
            "A champion whose accuracy on the new batch's holdout is, beyond doubt (95 % bound), this far below its "
            "registered figure while it holds up on the golden set makes a label-quality finding that blocks "
            "promotion; empty turns the check off (e.g. to accept a real change of concept)."
        ),
    )
    fallback_model: Literal["logistic", "prior"] = Field(
        default="logistic",
        description=(
            "The simple model kept under the registry's fallback alias: 'logistic' (standardised logistic regression "
            "on the fewest features that reach fallback_min_ratio) or 'prior' (predicts the training label shares, "
            "whatever the input)."
        ),
    )
    fallback_features: list[str] | None = Field(
        default=None,
        description=(
            "Columns the logistic fallback uses; empty picks them by a rank score against the label, from "
            "fallback_min_features up to fallback_max_features."
        ),
    )
    fallback_min_features: int = Field(
        default=3, ge=1, description="How many columns the logistic fallback starts from when fallback_features is empty."
    )
    fallback_max_features: int = Field(
        default=24,
        ge=1,
        description="The most columns the logistic fallback grows to (by rank score) while it misses fallback_min_ratio.",
    )
    fallback_min_ratio: float = Field(
        default=0.85,
        ge=0.0,
        le=1.0,
        description=(
            "The bar: the fallback's accuracy should be at least this share of the primary's. Columns are added "
            "until cross-validation on the training part says it is met; the holdout figures and whether the bar "
            "is met are recorded on the fallback's version."
        ),
    )
    replace_fallback: bool = Field(
        default=False,
        description=(
            "Let the next completed training replace the fallback version; by default a fallback, once registered "
            "(or pointed at by a user), is never replaced by an ordinary retrain."
        ),
    )

    @model_validator(mode="after")
    def _parameters_name_one_estimator(self) -> TrainingPolicy:
        if self.estimator == "auto" and self.estimator_params:
            raise ValueError("estimator_params apply to one estimator: with estimator='auto' leave them empty, or name the estimator")
        return self

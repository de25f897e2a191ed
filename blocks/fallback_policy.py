"""The FallbackPolicy block: how the serving model routes rows between the
primary (`@champion`) and the fallback (`@fallback`), and when it stops
calling a broken primary."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, model_validator


class FallbackPolicy(Block):
    """Per-row routing, the circuit breaker, and how often serving follows the registry.

    Confidence routing is fitted per primary version (`prefect_crisis.tasks.serving.confidence_routing.fit_routing`), so the default
    never lowers accuracy; `confidence_threshold` is for a user who sets one on purpose. It is None, not a number,
    by default, so "not set" survives saving the block and the serving model's stored configuration (a pydantic
    `model_fields_set` would not: a saved block stores every field).

    Example:
        ```python
        from prefect_crisis.blocks import FallbackPolicy

        FallbackPolicy(confidence_threshold=0.7, primary_timeout_seconds=0.5).save("churn", overwrite=True)
        ```
    """

    _block_type_name = "Crisis Fallback Policy"
    _block_type_slug = "crisis-fallback-policy"
    _description = "How the serving model routes rows to the fallback model, and the circuit breaker in front of the primary."

    confidence_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Empty (the default): each primary version's fitted routing (routing.json of its run) decides which rows go to "
            "the fallback, and a version without one routes none on confidence. A number overrides it: a row whose primary "
            "confidence (calibrated when the version has a fitted routing) is below it is answered by the fallback."
        ),
    )
    confidence_measure: Literal["max_probability", "margin"] = Field(
        default="max_probability",
        description=(
            "For an explicit threshold on an uncalibrated version: max_probability, the largest class probability; margin, "
            "the largest minus the second largest. A fitted routing reads its own calibrated confidence."
        ),
    )
    primary_timeout_seconds: float | None = Field(
        default=2.0, gt=0, description="A primary call slower than this counts as failed and the batch goes to the fallback; empty: no timeout."
    )
    failure_threshold: int = Field(default=5, ge=1, description="Primary failures within failure_window_seconds that open the breaker.")
    failure_window_seconds: float = Field(default=60.0, gt=0, description="The window failures are counted in.")
    cooldown_seconds: float = Field(default=30.0, ge=0, description="How long an open breaker waits before one trial call to the primary.")
    refresh_seconds: float = Field(default=5.0, gt=0, description="How often serving re-reads @champion and @fallback and swaps in a moved version.")
    engage_share: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Share of recent rows answered by the fallback above which ml.fallback.engaged is emitted."
    )
    release_share: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Share under which (with the breaker closed) ml.fallback.released is emitted."
    )
    share_window_rows: int = Field(default=500, ge=1, description="How many recent rows the routed share is measured over.")
    min_share_rows: int = Field(default=50, ge=1, description="No share-based event before this many rows were seen.")
    error_burst_rows: int = Field(
        default=20,
        ge=1,
        description="Failed rows and refused requests within error_burst_seconds that emit ml.serving.errors (the monitor runs at once).",
    )
    error_burst_seconds: float = Field(
        default=10.0, gt=0, description="The window a burst of serving errors is counted in; at most one event per window."
    )
    id_column: str | None = Field(
        default=None, description="Input column whose value names each row in the output and the inference log; empty: the row's position."
    )

    @model_validator(mode="after")
    def _release_below_engage(self) -> FallbackPolicy:
        if self.release_share >= self.engage_share:
            raise ValueError(
                f"release_share ({self.release_share}) must be below engage_share ({self.engage_share}), "
                "or the fallback would be engaged and released on the same rows"
            )
        return self

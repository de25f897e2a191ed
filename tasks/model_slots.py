"""One-slot Prefect global concurrency limits per model: the sections that must never interleave for one model.

A response and an emergency stop of one model hold `crisis-response-<model>` (one after the other, never
interleaved); two trainings of one model hold `crisis-training-<model>` while each chooses the checkpoint it
resumes and claims it, so a checkpoint is resumed once. The limits show in the Prefect UI under Concurrency.

Example:
    >>> from prefect.concurrency.sync import concurrency
    >>> with concurrency(model_slot("training", "churn"), occupy=1, strict=True):  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def model_slot(purpose: str, model: str) -> str:
    """Name of the model's one-slot limit for `purpose` (`crisis-<purpose>-<model>`), created if missing."""
    name = f"crisis-{purpose}-{model}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another process of this model created it between the read and the create
                pass
    return name


def response_limit(model: str) -> str:
    """Name of the model's response limit (a response, an emergency stop), created (limit 1) if missing."""
    return model_slot("response", model)


# A held slot's lease, renewed while its holder lives: a response killed with its worker frees the model's slot within this
# long (Prefect's default, 300 s, would hold the retry of that response for five minutes).
RESPONSE_LEASE_SECONDS = 60


@contextmanager
def response_slot(model: str) -> Iterator[None]:
    """Hold the model's response slot: one response or emergency stop of a model at a time. A lease renewal that fails (the
    server away for a moment) does not end the response; the lease then lapses after RESPONSE_LEASE_SECONDS."""
    with concurrency(response_limit(model), occupy=1, strict=True, lease_duration=RESPONSE_LEASE_SECONDS, raise_on_lease_renewal_failure=False):
        yield


def training_limit(model: str) -> str:
    """Name of the model's training limit (choosing and claiming the checkpoint to resume), created if missing."""
    return model_slot("training", model)

"""Say, at the start of a run, which Prefect server, MLflow store and state
folder it uses: a run on the wrong stack is then one glance at its first log line."""

from __future__ import annotations

from prefect.settings import get_current_settings

from prefect_crisis.core.paths import crisis_home, default_storage, default_tracking_uri
from prefect_crisis.core.uris import mask_uri


def stack_summary(tracking_uri: str | None = None) -> str:
    """One line: Prefect API, MLflow store, state folder and batch storage, credentials masked."""
    api_url = get_current_settings().api.url or "an ephemeral Prefect server (no PREFECT_API_URL, no running `crisis up` found)"
    return (
        f"Prefect {mask_uri(api_url)}; MLflow {mask_uri(tracking_uri or default_tracking_uri())}; "
        f"state {crisis_home()}; storage {mask_uri(default_storage())}"
    )

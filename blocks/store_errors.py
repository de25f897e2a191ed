"""MLflow store errors, classified in one place: unavailable (down, locked, out of reach: a retry may succeed,
and a decision that needs the answer is INCONCLUSIVE, never "no version") or a refusal (not worth retrying).

Every reader of the store (the registry block, the response's retry condition, the CLI) asks `is_unavailable`,
and raises `unavailable_error` when it gives up, so a new symptom of an outage is one line here.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from prefect_crisis.core.errors import RegistryUnavailableError

# What an MLflow store that is down, locked or out of reach says: worth waiting out, unlike a refusal.
UNAVAILABLE = (
    "database is locked",
    "disk i/o error",
    "readonly database",
    "unable to open database",
    "connection refused",
    "max retries exceeded",
    "temporarily unavailable",
    "timed out",
    "connection aborted",
    "remote end closed",
    "error code 503",
)


def first_line(message: str) -> str:
    """MLflow's message cut to its first line: errors here are one line."""
    return (message or "").strip().splitlines()[0] if (message or "").strip() else "no detail"


def store_error_line(error: BaseException) -> str:
    """The line of a store error that says what happened: SQLAlchemy puts a note on autoflush first.

    Example:
        >>> store_error_line(MlflowException("(raised as a result of Query-invoked autoflush)\\n(sqlite3.OperationalError) disk I/O error"))
        '(sqlite3.OperationalError) disk I/O error'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "Error)" in line), lines[0] if lines else "no detail")


def is_unavailable(error: BaseException) -> bool:
    """True when MLflow could not be reached or written for now (a retry may succeed), not when it refused.

    Example:
        >>> is_unavailable(MlflowException("(sqlite3.OperationalError) database is locked"))
        True
        >>> is_unavailable(MlflowException("Registered Model with name=churn not found"))
        False
    """
    if isinstance(error, RegistryUnavailableError) or (isinstance(error, MlflowException) and error.error_code == "TEMPORARILY_UNAVAILABLE"):
        return True
    return isinstance(error, (MlflowException, OSError)) and any(hint in str(error).lower() for hint in UNAVAILABLE)


def reset_store_connections(client: MlflowClient) -> None:
    """Drop the pooled database connections of the client's stores (MLflow shares one engine per store URI in a
    process): a SQLite connection that met a disk I/O error during an outage stays unusable after the store is back,
    so a long-lived process (the warm worker) would fail every later write until restarted."""
    for store in (getattr(client._tracking_client, "store", None), getattr(client._get_registry_client(), "store", None)):
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()


def unavailable_error(
    store: str, what: str, model: str, error: BaseException, *, tries: int | None = None, seconds: float | None = None
) -> RegistryUnavailableError:
    """The one-line error for a store that stayed unavailable: which store, what could not be done, for which model,
    after how many tries (when retried), and the store's own line.

    Example:
        >>> str(unavailable_error("sqlite:///m.db", "read @champion", "churn", OSError("database is locked")))
        "MLflow store sqlite:///m.db unavailable: could not read @champion of 'churn' (database is locked)"
    """
    if tries is None:
        return RegistryUnavailableError(f"MLflow store {store} unavailable: could not {what} of {model!r} ({store_error_line(error)})")
    return RegistryUnavailableError(
        f"MLflow store {store} unavailable: could not {what} for {model!r} after {tries} tries in {seconds:g} s ({store_error_line(error)})"
    )

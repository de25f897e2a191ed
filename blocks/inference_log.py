"""The InferenceLog block: where serving logs every prediction, and where
monitoring and the crisis response read labelled windows back.

Any SQLAlchemy database: SQLite by default (`<crisis_home>/inference.db`),
PostgreSQL at scale (`postgresql+psycopg://user@host/db`, with the
`prefect-crisis[postgres]` extra). A password written into the URL is moved to
a secret field; logs, errors, reprs and the spool show the URL masked.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator
from sqlalchemy import create_engine, exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from prefect_crisis.blocks.inference_store import (
    create_tables, label_rows, labelled_by_model, models_query, upsert_labels, window_frame, window_query,
)
from prefect_crisis.blocks.inference_writer import InferenceLogWriter
from prefect_crisis.core.errors import InferenceLogError
from prefect_crisis.core.paths import crisis_home, validate_model_name
from prefect_crisis.core.timeline import Timeline, utc_now
from prefect_crisis.core.uris import mask_uri, password_moved_apart, split_password, with_password
from prefect_crisis.core.vocabulary import CrisisEvent


class InferenceLog(Block):
    """The inference log: every prediction, its inputs, its labels when they come.

    Example:
        ```python
        from prefect_crisis.blocks import InferenceLog
        from prefect_crisis.tasks.serving.inference_log import PredictionBatch

        log = InferenceLog(url="sqlite:////tmp/inference.db")
        writer = log.writer()
        writer.submit(PredictionBatch(...))        # on the request path: O(1), never raises
        writer.flush()
        log.record_labels(["req-1"], [1])          # later, when the truth is known
        window = log.read_window("churn", start=an_hour_ago)   # features, label, prediction, ...
        ```
    """

    _block_type_name = "Crisis Inference Log"
    _block_type_slug = "crisis-inference-log"
    _description = "Where serving logs every prediction (any SQLAlchemy database), with a local spool while it is down, and labelled windows read back."

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the log's database, without its password (a password given in it is moved to "
            "`password`); empty: a SQLite file <crisis_home>/inference.db. PostgreSQL: postgresql+psycopg://user@host:5432/db."
        ),
    )
    password: SecretStr | None = Field(default=None, description="Password of the URL's user; stored as a secret.")
    spool_path: str | None = Field(
        default=None,
        description="Folder where records wait while the database is down (one subfolder per database); empty: <crisis_home>/inference-spool/.",
    )
    spool_max_records: int = Field(default=100_000, ge=1, description="Bound of the spool; records beyond it are dropped and counted.")
    batch_rows: int = Field(default=1_000, ge=1, description="Rows per insert of the background writer.")
    flush_seconds: float = Field(default=1.0, gt=0, description="How long the background writer waits to fill a batch.")
    retry_seconds: float = Field(default=30.0, ge=0, description="How often a database that is down is tried again.")
    timeout_seconds: float = Field(default=5.0, gt=0, description="Connect (and SQLite lock) timeout; a slower database counts as down.")

    @model_validator(mode="before")
    @classmethod
    def _keep_the_password_apart(cls, values: Any) -> Any:
        return password_moved_apart(values, "url", "password")

    @property
    def resolved_url(self) -> str:
        """The URL SQLAlchemy is given, with the password; never print it (`display_url` is for that)."""
        if not self.url:
            return f"sqlite:///{crisis_home() / 'inference.db'}"
        return with_password(self.url, self.password.get_secret_value() if self.password else None)

    @property
    def display_url(self) -> str:
        """The URL with its credentials masked, for output, logs and errors."""
        return mask_uri(self.resolved_url)

    @property
    def spool_folder(self) -> Path:
        """This database's spool: a subfolder named by a digest of the URL without its password, so two
        databases never share one (and a spool never flushes into the wrong database)."""
        base = Path(self.spool_path) if self.spool_path else crisis_home() / "inference-spool"
        identity = split_password(self.resolved_url)[0]
        return base / hashlib.sha256(identity.encode()).hexdigest()[:16]

    def engine(self) -> Engine:
        """A new engine on the log's database (nothing connects until it is used)."""
        url = make_url(self.resolved_url)
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            connect_args["timeout"] = self.timeout_seconds
            if not self.url:
                crisis_home().mkdir(parents=True, exist_ok=True)
        elif url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
            connect_args["connect_timeout"] = max(1, math.ceil(self.timeout_seconds))
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    def writer(self, clock: Callable[[], float] = time.monotonic) -> InferenceLogWriter:
        """A writer on its own background thread; records spooled by an earlier process are flushed
        once the database answers. `clock`: monotonic seconds for the retry schedule (tests)."""
        secrets = [self.password.get_secret_value()] if self.password else []
        secrets += [p for p in [split_password(self.url or "")[1]] if p]
        return InferenceLogWriter(
            self.engine(), self.spool_folder, spool_max_records=self.spool_max_records, batch_rows=self.batch_rows,
            flush_seconds=self.flush_seconds, retry_seconds=self.retry_seconds, clock=clock,
            display_url=self.display_url, secrets=secrets,
        )

    def _failed(self, doing: str, error: BaseException) -> InferenceLogError:
        cause = getattr(error, "orig", None) or error
        detail = (str(cause).strip().splitlines() or ["no detail"])[0]
        if self.password:
            detail = detail.replace(self.password.get_secret_value(), "***")
        return InferenceLogError(
            f"cannot {doing} the inference log {self.display_url}: {type(cause).__name__}: {detail} "
            "(check that the database is up and the URL and password are right)"
        )

    def record_labels(self, keys: Iterable[Any], labels: Iterable[Any], *, emit: bool = True, timeline: Timeline | None = None) -> int:
        """Record true labels; returns how many. A key is a request id (the label applies to every
        row of that request) or a (request_id, row_id) pair. A label may come before or after its
        prediction is written; a second label for the same key replaces the first.

        With `emit`, one `ml.labels.recorded` per model whose logged predictions got labels
        (payload: `rows` labelled, `requests`, `labels`), so an automation can run the health
        monitor for that model at once; labels of predictions not logged yet emit nothing.
        `timeline`: where the events go (default: Prefect events)."""
        keys, labels = list(keys), list(labels)
        if len(keys) != len(labels):
            raise InferenceLogError(f"{len(keys)} keys but {len(labels)} labels: give one label per key")
        rows = label_rows(keys, labels, utc_now().replace(tzinfo=None))
        engine = self.engine()
        try:
            with engine.begin() as connection:
                create_tables(connection)
                upsert_labels(connection, rows)
                covered = labelled_by_model(connection, rows) if emit else {}
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            raise self._failed("write labels to", error) from None
        finally:
            engine.dispose()
        timeline = timeline or Timeline()
        for model, figures in covered.items():
            timeline.emit(CrisisEvent.LABELS_RECORDED, model, figures)
        return len(rows)

    def models(self, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """The models with records received in [start, end) (UTC; naive means UTC), sorted."""
        engine = self.engine()
        try:
            with engine.begin() as connection:
                create_tables(connection)
                return [model for (model,) in connection.execute(models_query(start, end))]
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            raise self._failed("read", error) from None
        finally:
            engine.dispose()

    def read_window(
        self, model: str, start: datetime | None = None, end: datetime | None = None, *, labelled_only: bool = True
    ) -> pd.DataFrame:
        """The rows of `model` received in [start, end) (UTC; naive means UTC), oldest first: the input
        features expanded back from JSON, then `label`, `timestamp` (when the request arrived),
        `prediction`, `answered_by`, `version`, `confidence`, `latency_ms`, `error`, `request_id`,
        `row_id`. `labelled_only` keeps the rows that have a label (refused requests left out)."""
        validate_model_name(model)
        engine = self.engine()
        try:
            with engine.begin() as connection:
                create_tables(connection)
                records = connection.execute(window_query(model, start, end, labelled_only)).all()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            raise self._failed("read", error) from None
        finally:
            engine.dispose()
        return window_frame(records)

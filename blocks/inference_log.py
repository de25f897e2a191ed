"""The InferenceLog block: where serving logs every prediction, and where
monitoring and the crisis response read labelled windows back.

Configuration only: the writer, its spool and the tables are serving's
(`prefect_crisis.tasks.serving.inference_log`: `open_inference_log(block)`,
`record_labels`, `read_window`, `logged_models`), opened from `settings()`.

Any SQLAlchemy database: SQLite by default (`<crisis_home>/inference.db`),
PostgreSQL at scale (`postgresql+psycopg://user@host/db`, with the
`prefect-crisis[postgres]` extra). A password written into the URL is moved to
a secret field; logs, errors, reprs and the spool show the URL masked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from prefect_crisis.core.paths import crisis_home
from prefect_crisis.core.uris import mask_uri, password_moved_apart, split_password, with_password


@dataclass(frozen=True)
class InferenceLogSettings:
    """An InferenceLog resolved to plain values (see the block's fields). `url` carries the password: never print
    it (`display_url` is masked); `secrets` are the strings no log line may show; `home`: the folder to create
    before opening the default SQLite file (None for a URL given)."""

    url: str
    display_url: str
    spool_folder: Path
    spool_max_records: int = 100_000
    batch_rows: int = 1_000
    flush_seconds: float = 1.0
    retry_seconds: float = 30.0
    timeout_seconds: float = 5.0
    secrets: tuple[str, ...] = ()
    home: Path | None = None


class InferenceLog(Block):
    """The inference log: every prediction, its inputs, its labels when they come.

    Example:
        ```python
        from prefect_crisis.blocks import InferenceLog
        from prefect_crisis.tasks.serving.inference_log import PredictionBatch, open_inference_log, read_window, record_labels

        log = InferenceLog(url="sqlite:////tmp/inference.db")
        writer = open_inference_log(log)
        writer.submit(PredictionBatch(...))        # on the request path: O(1), never raises
        writer.flush()
        record_labels(log, ["req-1"], [1])         # later, when the truth is known
        window = read_window(log, "churn", start=an_hour_ago)   # features, label, prediction, ...
        ```
    """

    _block_type_name = "Crisis Inference Log"
    _block_type_slug = "crisis-inference-log"
    _description = (
        "Where serving logs every prediction (any SQLAlchemy database), with a local spool while it is down, and labelled windows read back."
    )

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

    def settings(self) -> InferenceLogSettings:
        """The block's configuration resolved to plain values, for `prefect_crisis.tasks.serving` to open the log with."""
        secrets = [self.password.get_secret_value()] if self.password else []
        secrets += [p for p in [split_password(self.url or "")[1]] if p]
        return InferenceLogSettings(
            url=self.resolved_url,
            display_url=self.display_url,
            spool_folder=self.spool_folder,
            spool_max_records=self.spool_max_records,
            batch_rows=self.batch_rows,
            flush_seconds=self.flush_seconds,
            retry_seconds=self.retry_seconds,
            timeout_seconds=self.timeout_seconds,
            secrets=tuple(secrets),
            home=None if self.url else crisis_home(),
        )

"""The ModelRegistry block: one model in MLflow's registry, with an audit.

Aliases name the roles (`champion` serves, `challenger` is the newest
candidate, `fallback` is the simple model). MLflow keeps no history of alias
moves, so every move is also written to an append-only audit: an MLflow
experiment (`crisis-audit`) with one run per action. That answers "what was
serving at time T". Versions are never deleted; they are retired by tag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import RunStatus, ViewType
from mlflow.exceptions import MlflowException
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from prefect_crisis.blocks.registry_audit import (
    NO_VERSION,
    AliasMove,
    AuditSnapshot,
    _ms,
    audit_tags,
    finish_row,
    move_from_run,
    pending_settlements,
    read_audit,
)
from prefect_crisis.blocks.store_errors import (
    UNAVAILABLE,
    first_line,
    is_unavailable,
    reset_store_connections,
    store_error_line,
    unavailable_error,
)
from prefect_crisis.core.errors import RegistryError, RegistryUnavailableError
from prefect_crisis.core.paths import default_tracking_uri, ensure_experiment, validate_model_name
from prefect_crisis.core.timeline import Incident, Timeline, utc_now
from prefect_crisis.core.uris import mask_uri, password_moved_apart, with_password
from prefect_crisis.core.vocabulary import AliasAction, AuditOutcome, CrisisEvent, TagKey, VersionRole
from prefect_crisis.core.waiting import Retrying, stop_before_delay, wait_exponential

__all__ = [
    "MOVE_EVENTS",
    "NO_VERSION",
    "UNAVAILABLE",
    "AliasMove",
    "AuditSnapshot",
    "ModelRegistry",
    "RegistryUnavailableError",
    "VersionInfo",
    "first_line",
    "incident_id",
    "is_unavailable",
    "reset_store_connections",
    "store_error_line",
]
T = TypeVar("T")
logger = logging.getLogger("prefect_crisis.registry")

# The event each audited alias move emits itself, so no caller can forget it.
MOVE_EVENTS = {
    AliasAction.PROMOTE: CrisisEvent.MODEL_PROMOTED,
    AliasAction.ROLLBACK: CrisisEvent.MODEL_ROLLED_BACK,
    AliasAction.FALLBACK: CrisisEvent.FALLBACK_ENGAGED,
}  # a plain MOVE (the challenger of a new version) is told by ml.model.registered


def incident_id(incident: Incident | str | None) -> str | None:
    """The id of an incident, or the id given.

    Example:
        >>> incident_id("inc-20261127T030000"), incident_id(None)
        ('inc-20261127T030000', None)
    """
    return incident.id if isinstance(incident, Incident) else incident


@dataclass(frozen=True)
class VersionInfo:
    """A registered version with the metrics of the run that trained it."""

    version: str
    run_id: str | None
    created: datetime
    metrics: dict[str, float]
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def retired(self) -> bool:
        return TagKey.RETIRED in self.tags

    @property
    def is_fallback(self) -> bool:
        """The version is a fallback model (tag `crisis.role=fallback`): never promoted, a challenger or a rollback target."""
        return self.tags.get(TagKey.ROLE) == VersionRole.FALLBACK


class ModelRegistry(Block):
    """One registered model in MLflow, with audited alias moves.

    Example:
        ```python
        from prefect_crisis.blocks import ModelRegistry

        registry = ModelRegistry(model_name="churn")  # MLFLOW_TRACKING_URI or .crisis/mlflow.db
        registry.save("churn", overwrite=True)
        champion = registry.champion()
        if champion:
            print(champion.version, champion.metrics)
        registry.serving_at(datetime(2026, 11, 27, 3, 0, tzinfo=UTC))
        ```
    """

    _block_type_name = "Crisis Model Registry"
    _block_type_slug = "crisis-model-registry"
    _description = "One model in MLflow's registry: champion, challenger and fallback aliases, with an audit of every move."

    model_name: str = Field(description="Registered model name in MLflow.")
    tracking_uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking and registry URI, without its password (a password given in it is moved to "
            "tracking_password); empty uses MLFLOW_TRACKING_URI, else .crisis/mlflow.db."
        ),
    )
    tracking_password: SecretStr | None = Field(
        default=None,
        description="Password of the tracking URI's user (a database or an HTTP tracking server); stored as a secret.",
    )
    champion_alias: str = Field(default="champion", description="Alias of the version that serves.")
    challenger_alias: str = Field(default="challenger", description="Alias of the newest candidate.")
    fallback_alias: str = Field(default="fallback", description="Alias of the simple model served when all else fails.")
    audit_experiment: str = Field(default="crisis-audit", description="MLflow experiment holding the audit of alias moves.")
    unavailable_retry_seconds: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How long an alias move waits out an unreachable or locked MLflow store (retries with backoff from 0.2 s) "
            "before it gives up with the alias untouched."
        ),
    )

    _client: MlflowClient | None = PrivateAttr(default=None)
    _clock: Callable[[], datetime] | None = PrivateAttr(default=None)
    _timeline: Timeline | None = PrivateAttr(default=None)

    def use(
        self, *, client: MlflowClient | None = None, clock: Callable[[], datetime] | None = None, timeline: Timeline | None = None
    ) -> ModelRegistry:
        """Inject the MLflow client, the clock and the timeline (tests, or a shared client)."""
        if client is not None:
            self._client = client
        if clock is not None:
            self._clock = clock
        if timeline is not None:
            self._timeline = timeline
        return self

    def timeline(self, incident: Incident | str | None = None) -> Timeline:
        """The timeline registry events go to, bound to `incident` when one is given."""
        base = self._timeline or Timeline(clock=self.now)
        return base.bound(incident) if incident is not None else base

    @model_validator(mode="before")
    @classmethod
    def _keep_the_password_apart(cls, values: Any) -> Any:
        # `tracking_uri` is shown in the UI and in reprs: a password written into it
        # (the way MLflow and SQLAlchemy take it) is moved to the secret field.
        return password_moved_apart(values, "tracking_uri", "tracking_password")

    @property
    def resolved_tracking_uri(self) -> str:
        """The URI MLflow is given, with the password; never print it (`display_tracking_uri` is for that)."""
        if not self.tracking_uri:
            return default_tracking_uri()
        password = self.tracking_password.get_secret_value() if self.tracking_password else None
        return with_password(self.tracking_uri, password)

    @property
    def display_tracking_uri(self) -> str:
        """The tracking URI with its credentials masked, for output, logs and artifacts."""
        return mask_uri(self.resolved_tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            uri = self.resolved_tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    @field_validator("model_name")
    @classmethod
    def _usable_model_name(cls, name: str) -> str:
        return validate_model_name(name)  # it names storage paths and the stop flag

    def now(self) -> datetime:
        return (self._clock or utc_now)()

    # -- versions -----------------------------------------------------------------

    def ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name, tags={TagKey.MANAGED: "true"})

    def register_version(self, model_uri: str, run_id: str, model_id: str | None, tags: dict[str, str]) -> VersionInfo:
        """Register a logged model as a new version (never touches aliases)."""
        self.ensure_registered_model()
        source = model_uri
        if model_id and model_uri == f"models:/{model_id}":
            # MLflow's SQL registry resolves a models:/ source through the process-global
            # tracking URI (a ./mlflow.db when unset); resolve it through this block's store.
            source = self.client.get_logged_model(model_id).artifact_location
        created = self.client.create_model_version(self.model_name, source=source, run_id=run_id, tags=tags, model_id=model_id)
        self._audit(AliasAction.REGISTER, None, None, created.version, "registered", None)
        info = self.version(created.version)
        self.timeline().emit(
            CrisisEvent.MODEL_REGISTERED, self.model_name, {"version": info.version, "run_id": run_id, "metrics": info.metrics}, version=info.version
        )
        return info

    def _info(self, found, aliases: tuple[str, ...], metrics: dict[str, float] | None = None) -> VersionInfo:
        if metrics is None:
            metrics = self.client.get_run(found.run_id).data.metrics if found.run_id else {}
        return VersionInfo(
            version=str(found.version),
            run_id=found.run_id,
            created=datetime.fromtimestamp(found.creation_timestamp / 1000, tz=UTC),
            metrics=dict(metrics),
            tags=dict(found.tags),
            aliases=aliases,
        )

    def _not_found(self, version: str | int) -> RegistryError:
        """The one-line error for a version MLflow did not find: the model, or only the version, is missing."""
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            return RegistryError(
                f"no registered model {self.model_name!r} in {self.display_tracking_uri}: check the name and "
                "MLFLOW_TRACKING_URI / CRISIS_HOME, or train and register a version first"
            )
        return RegistryError(f"model {self.model_name!r} has no version {version}: list them with registry.versions()")

    def version(self, version: str | int) -> VersionInfo:
        """One version of the model.

        Raises:
            RegistryError: the model or the version does not exist.
        """
        try:
            found = self.client.get_model_version(self.model_name, str(version))
        except MlflowException as error:
            raise self._not_found(version) from error
        return self._info(found, tuple(found.aliases))

    def versions(self) -> list[VersionInfo]:
        """Every version, newest first (retired ones included, marked by tag)."""
        try:
            alias_map = self.client.get_registered_model(self.model_name).aliases
        except (MlflowException, OSError) as error:
            if is_unavailable(error):
                raise self._unavailable("list the versions", error) from error
            return []
        found = self.client.search_model_versions(f"name='{self.model_name}'", order_by=["version_number DESC"])
        metrics = self._metrics_of_runs([item.run_id for item in found if item.run_id])
        # Search results carry no aliases (MLflow leaves them out), so they come from the model, once.
        return [
            self._info(
                item,
                tuple(alias for alias, version in alias_map.items() if str(version) == str(item.version)),
                metrics.get(item.run_id, {}) if item.run_id else {},
            )
            for item in found
        ]

    def _metrics_of_runs(self, run_ids: list[str]) -> dict[str, dict[str, float]]:
        """Metrics of many runs in a few searches (one per 100 runs), not one request per run."""
        if not run_ids:
            return {}
        experiments = [experiment.experiment_id for experiment in self.client.search_experiments(view_type=ViewType.ALL, max_results=50_000)]
        metrics: dict[str, dict[str, float]] = {}
        unique = sorted(set(run_ids))
        for start in range(0, len(unique), 100):
            chunk = unique[start : start + 100]
            listed = ", ".join(f"'{run_id}'" for run_id in chunk)
            for run in self.client.search_runs(experiments, f"attributes.run_id IN ({listed})", run_view_type=ViewType.ALL, max_results=len(chunk)):
                metrics[run.info.run_id] = dict(run.data.metrics)
        return metrics

    def aliases(self) -> dict[str, str] | None:
        """Alias -> version of the registered model in one call; None when the model is not registered."""
        try:
            return {alias: str(version) for alias, version in self.client.get_registered_model(self.model_name).aliases.items()}
        except MlflowException:
            return None

    def version_by_alias(self, alias: str) -> VersionInfo | None:
        """The version `alias` points at; None when the alias (or the model) does not exist.

        Raises:
            RegistryUnavailableError: the store cannot be read now: unknown is not absent, so a decision that needs the
                answer is retried (or INCONCLUSIVE), never taken as "no version".
        """
        try:
            found = self.client.get_model_version_by_alias(self.model_name, alias)
        except (MlflowException, OSError) as error:
            if is_unavailable(error):
                raise self._unavailable(f"read @{alias}", error) from error
            return None
        return self._info(found, tuple(found.aliases))

    def _unavailable(self, what: str, error: BaseException) -> RegistryUnavailableError:
        return unavailable_error(self.display_tracking_uri, what, self.model_name, error)

    def champion(self) -> VersionInfo | None:
        """The version that serves now, or None before the first promotion."""
        return self.version_by_alias(self.champion_alias)

    def champion_since(self, audit: AuditSnapshot | None = None) -> datetime | None:
        """When the current champion took the alias (from the audit, or the snapshot of it given)."""
        trail = audit.of_alias(self.champion_alias) if audit is not None else self.audit_trail(self.champion_alias)
        moves = [move for move in trail if move.applied]
        return moves[-1].at if moves else None

    def retire(self, version: str | int, reason: str, incident: Incident | str | None = None) -> None:
        """Mark a version as retired for cause; it stays in the registry.

        Raises:
            RegistryError: the model or the version does not exist, or MLflow refused.
        """
        self.version(version)
        try:
            self.client.set_model_version_tag(self.model_name, str(version), TagKey.RETIRED, reason)
        except MlflowException as error:
            raise RegistryError(f"could not retire v{version} of {self.model_name!r}: {first_line(error.message)}") from error
        self._audit(AliasAction.RETIRE, None, str(version), None, reason, incident_id(incident))

    # -- aliases ------------------------------------------------------------------

    def move_alias(
        self,
        alias: str,
        version: str | int,
        reason: str,
        incident: Incident | str | None = None,
        action: AliasAction = AliasAction.MOVE,
        current: VersionInfo | None = None,
    ) -> AliasMove:
        """Point `alias` at `version`, audited, and emit the move's event; on failure the alias stays where it was.

        Args:
            current: the version `alias` points at now, when the caller just read it (saves a request).

        Raises:
            RegistryError: the version does not exist, is retired, or MLflow refused.
        """
        version = str(version)
        action = AliasAction(action)
        current = current if current is not None else self.version_by_alias(alias)
        from_version = current.version if current else None
        target = self.version(version)
        if target.retired and alias != self.fallback_alias:
            raise RegistryError(f"version {version} of {self.model_name!r} is retired ({target.tags[TagKey.RETIRED]}): pick another version")
        if target.is_fallback and (action is AliasAction.PROMOTE or alias == self.challenger_alias):
            # The fallback serves only through a FALLBACK recovery; the promotion gate never judged it.
            raise RegistryError(
                f"version {version} of {self.model_name!r} is the fallback model: it takes {alias!r} only through a "
                f"fallback recovery (action {AliasAction.FALLBACK.value!r}), never by promotion or as a challenger"
            )
        # The audit row is written first, as `pending`: the intent. The alias moves, then the row says `applied`.
        # An unavailable store is waited out (`unavailable_retry_seconds`); a move that still fails leaves the alias
        # where it was and its row `failed`; a row left `pending` (the store went away after the alias moved, or the
        # process died) is settled from the alias itself by the next `settle_audit`: never half done.
        audit = self._retrying(
            "write the audit row", self._audit, action, alias, from_version, version, reason, incident_id(incident), finished=False
        )
        try:
            self._retrying(f"move {alias!r}", self.client.set_registered_model_alias, self.model_name, alias, version)
        except (MlflowException, RegistryError) as error:
            reason_failed = first_line(getattr(error, "message", None) or str(error))
            if self._alias_reads(alias) != version:  # an HTTP store may have applied it and lost the answer
                self._settle_quietly(audit, AuditOutcome.FAILED.because(reason_failed))
                raise RegistryError(f"could not move {alias!r} of {self.model_name!r} to v{version}: {reason_failed}") from error
        self._settle_quietly(audit, AuditOutcome.APPLIED)
        move = AliasMove(
            str(action.value), alias, from_version, version, reason, incident_id(incident), None, self.now(), AuditOutcome.APPLIED, audit
        )
        try:
            move = self._move_from_run(self.client.get_run(audit))
        except MlflowException as error:  # the move is done and audited: a read-back the store refuses now changes nothing
            logger.warning("%s: could not read back audit row %s: %s", self.model_name, audit, first_line(str(error)))
        if action in MOVE_EVENTS:
            self.timeline(incident).emit(
                MOVE_EVENTS[action],
                self.model_name,
                {"alias": alias, "from_version": from_version, "to_version": version, "reason": reason, "metrics": target.metrics},
                version=version,
            )
        return move

    def promote(self, version: str | int, reason: str, incident: Incident | str | None = None) -> AliasMove:
        """Make `version` the champion."""
        return self.move_alias(self.champion_alias, version, reason, incident, action=AliasAction.PROMOTE)

    # -- audit --------------------------------------------------------------------

    def _retrying(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)`, retried with backoff while the store is unavailable, for `unavailable_retry_seconds`.

        Raises:
            RegistryUnavailableError: the store stayed unavailable (one line saying for how long).
            MlflowException: MLflow refused (not worth retrying).
        """
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            return call(*args, **kwargs)

        def before_sleep(error: BaseException, pause: float) -> None:
            logger.warning("%s: MLflow store unavailable (%s); retrying %s in %.1f s", self.model_name, store_error_line(error), what, pause)
            reset_store_connections(self.client)

        # from 0.2 s, doubling to 2 s; never sleeps past the budget (gives up when the next pause would end beyond it)
        policy = Retrying(stop=stop_before_delay(self.unavailable_retry_seconds), wait=wait_exponential(0.2, maximum=2.0))
        try:
            return policy.call(attempt, retry_on=(MlflowException, OSError), retry_if=is_unavailable, before_sleep=before_sleep)
        except (MlflowException, OSError) as error:
            if not is_unavailable(error):
                raise
            raise unavailable_error(
                self.display_tracking_uri, what, self.model_name, error, tries=tries, seconds=self.unavailable_retry_seconds
            ) from error

    def _alias_reads(self, alias: str) -> str | None:
        """The version `alias` points at now, or None when it cannot be read."""
        try:
            return str(self._retrying(f"read {alias!r}", self.client.get_model_version_by_alias, self.model_name, alias).version)
        except (MlflowException, RegistryError):
            return None

    def _settle_quietly(self, audit: str, outcome: str) -> bool:
        """Write the audit row's outcome; False (and the row left pending, settled on the next read) when the store is gone."""
        try:
            self._retrying("settle the audit row", self._finish_audit, audit, outcome)
            return True
        except (MlflowException, RegistryError) as error:
            logger.warning("%s: audit row %s left pending (settled by the next settle_audit): %s", self.model_name, audit, error)
            return False

    def settle_audit(self) -> int:
        """Settle the audit's `pending` rows older than their grace (a mover may still be at work) from what happened after
        them: applied when the alias went on from (or still points at) their version, failed otherwise, written to the
        store. An explicit step (reading the audit never writes): the response calls it before it decides, the `crisis`
        commands before they show the audit. Returns how many rows it settled; a row the store will not take now stays
        pending for the next call.

        Raises:
            RegistryUnavailableError: the audit cannot be read now.
        """
        return self._settle(self._read_moves())[0]

    def settled_snapshot(self) -> AuditSnapshot:
        """`settle_audit`, then the audit as settled, from one read of the store: what a response decides from.

        Raises:
            RegistryUnavailableError: the audit cannot be read now.
        """
        return AuditSnapshot(tuple(self._settle(self._read_moves())[1]))

    def _read_moves(self) -> list[AliasMove]:
        return self._retrying("read the audit", read_audit, self.client, self.audit_experiment, self.model_name)

    def _settle(self, moves: list[AliasMove]) -> tuple[int, list[AliasMove]]:
        grace = timedelta(seconds=3 * self.unavailable_retry_seconds + 30)
        settled = {
            move.audit_run_id: outcome
            for move, outcome in pending_settlements(moves, self.now(), grace, self._alias_reads)
            if self._settle_quietly(move.audit_run_id, outcome)
        }
        return len(settled), [replace(move, outcome=settled.get(move.audit_run_id, move.outcome)) for move in moves]

    def _audit_experiment_id(self) -> str:
        return ensure_experiment(self.client, self.audit_experiment, {TagKey.AUDIT: "true"})

    def _audit(
        self,
        action: str,
        alias: str | None,
        from_version: str | None,
        to_version: str | None,
        reason: str,
        incident: str | None,
        finished: bool = True,
    ) -> str:
        from prefect.runtime import flow_run

        at = self.now()
        tags = audit_tags(self.model_name, action, alias, from_version, to_version, reason, incident, flow_run.get_id(), at, finished)
        run = self.client.create_run(self._audit_experiment_id(), start_time=_ms(at), tags=tags, run_name=f"{action}-{self.model_name}")
        if finished:
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=_ms(at))
        return run.info.run_id

    def _finish_audit(self, run_id: str, outcome: str) -> None:
        finish_row(self.client, run_id, outcome, self.now())

    _move_from_run = staticmethod(move_from_run)

    def audit_trail(self, alias: str | None = None) -> list[AliasMove]:
        """Every audited action on this model (optionally one alias), oldest first, as stored: reading never writes (a row
        left `pending` stays so until `settle_audit`). Read again with backoff while the store is unavailable
        (`unavailable_retry_seconds`).

        Raises:
            RegistryUnavailableError: the store stayed unavailable.
        """
        return self._retrying("read the audit", read_audit, self.client, self.audit_experiment, self.model_name, alias)

    def audit_snapshot(self) -> AuditSnapshot:
        """The whole audit of this model, read once: an incident's steps share it."""
        return AuditSnapshot(tuple(self.audit_trail()))

    def history(self, version: str | int) -> list[AliasMove]:
        """The serving history of one version: every audited action that moved an alias to or from it."""
        version = str(version)
        return [move for move in self.audit_trail() if version in (move.from_version, move.to_version)]

    def serving_at(self, when: datetime, alias: str | None = None) -> str | None:
        """The version `alias` (default: champion) pointed at, at time `when`."""
        alias = alias or self.champion_alias
        serving = None
        for move in self.audit_trail(alias):
            if move.at > when:
                break
            if move.applied:
                serving = move.to_version
        return serving

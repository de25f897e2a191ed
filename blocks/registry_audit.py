"""The registry's audit log: one MLflow run per alias move (MLflow keeps no alias history), read and written here.

It lives in blocks (not tasks, not core) because the `ModelRegistry` block writes a row with every alias move, and a
block may import only the base; it needs an MLflow client, which the base does not take.

Reading never writes: `read_audit` returns the rows as stored. A row left `pending` (the store went away after the
alias moved, or the process died) is settled only by an explicit step: `pending_settlements` says what each pending
row became (pure: from the rows after it, or the alias as it reads now), and `ModelRegistry.settle_audit` writes it.
The response settles before it decides, and the `crisis` commands that show the audit settle before they show it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from prefect_crisis.core.vocabulary import AliasAction, AuditOutcome, TagKey

NO_VERSION = "none"


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class AliasMove:
    """One entry of the audit: an alias moved (or an action tried) at a time."""

    action: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    incident: str | None
    flow_run_id: str | None
    at: datetime
    outcome: str  # AuditOutcome.APPLIED, or "failed: <why>"
    audit_run_id: str

    @property
    def applied(self) -> bool:
        return self.outcome == AuditOutcome.APPLIED


@dataclass(frozen=True)
class AuditSnapshot:
    """The audit of one model read once (oldest first), passed along an incident's steps."""

    moves: tuple[AliasMove, ...] = ()

    def of_alias(self, alias: str) -> list[AliasMove]:
        return [move for move in self.moves if move.alias == alias]

    def handled(self, incident: str) -> bool:
        """True when an alias move for this incident was applied."""
        return any(move.incident == incident and move.applied for move in self.moves)


def audit_tags(
    model: str,
    action: str,
    alias: str | None,
    from_version: str | None,
    to_version: str | None,
    reason: str,
    incident: str | None,
    flow_run_id: str | None,
    at: datetime,
    finished: bool,
) -> dict[str, Any]:
    """The tags of one audit row: the row is its tags (MLflow runs carry no other searchable fields)."""
    return {
        TagKey.MODEL: model,
        TagKey.ACTION: AliasAction(action).value,
        TagKey.ALIAS: alias or "",
        TagKey.FROM_VERSION: from_version or NO_VERSION,
        TagKey.TO_VERSION: to_version or NO_VERSION,
        TagKey.REASON: reason,
        TagKey.INCIDENT: incident or "",
        TagKey.FLOW_RUN_ID: flow_run_id or "",
        TagKey.AT: at.isoformat(),
        TagKey.OUTCOME: (AuditOutcome.APPLIED if finished else AuditOutcome.PENDING).value,
    }


def finish_row(client: MlflowClient, run_id: str, outcome: str, at: datetime) -> None:
    """Write a row's outcome (applied, or failed: why) and close its run."""
    client.set_tag(run_id, TagKey.OUTCOME, str(outcome))
    status = RunStatus.FINISHED if outcome == AuditOutcome.APPLIED else RunStatus.FAILED
    client.set_terminated(run_id, RunStatus.to_string(status), end_time=_ms(at))


def move_from_run(run) -> AliasMove:
    """The audit row an MLflow run holds."""
    tags = run.data.tags

    def version(key: TagKey) -> str | None:
        value = tags.get(key, NO_VERSION)
        return None if value == NO_VERSION else value

    return AliasMove(
        action=tags[TagKey.ACTION],
        alias=tags.get(TagKey.ALIAS, ""),
        from_version=version(TagKey.FROM_VERSION),
        to_version=version(TagKey.TO_VERSION),
        reason=tags.get(TagKey.REASON, ""),
        incident=tags.get(TagKey.INCIDENT) or None,
        flow_run_id=tags.get(TagKey.FLOW_RUN_ID) or None,
        at=datetime.fromisoformat(tags[TagKey.AT]),
        outcome=tags.get(TagKey.OUTCOME, ""),
        audit_run_id=run.info.run_id,
    )


def read_audit(client: MlflowClient, experiment_name: str, model: str, alias: str | None = None) -> list[AliasMove]:
    """Every row of `model` (optionally one alias), oldest first, as stored: nothing is written."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    query = f"tags.`{TagKey.MODEL}` = '{model}'"
    if alias is not None:
        query += f" and tags.`{TagKey.ALIAS}` = '{alias}'"
    runs: list[Any] = []  # MLflow Runs, page after page
    page_token = None
    while True:
        page = client.search_runs([experiment.experiment_id], query, max_results=1000, order_by=["attributes.start_time ASC"], page_token=page_token)
        runs.extend(page)
        page_token = page.token
        if not page_token:
            break
    return sorted((move_from_run(run) for run in runs), key=lambda move: move.at)


def pending_settlements(
    moves: Sequence[AliasMove], now: datetime, grace: timedelta, alias_reads: Callable[[str], str | None]
) -> list[tuple[AliasMove, str]]:
    """What each pending row older than `grace` became: applied when the alias went on from (or still points at) its
    version, failed otherwise; a row whose alias cannot be read now (`alias_reads` gives None) is left for later.

    Example:
        >>> from datetime import timezone
        >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        >>> row = lambda version, outcome: AliasMove("rollback", "champion", "1", version, "", None, None, t, outcome, version)
        >>> [(m.to_version, o) for m, o in pending_settlements([row("2", "pending")], t + timedelta(hours=1), timedelta(minutes=1), lambda a: "2")]
        [('2', 'applied')]
        >>> pending_settlements([row("2", "pending")], t + timedelta(seconds=5), timedelta(minutes=1), lambda a: "2")  # perhaps in flight
        []
    """
    settled: list[tuple[AliasMove, str]] = []
    for index, move in enumerate(moves):
        if move.outcome != AuditOutcome.PENDING or not move.alias:
            continue
        if now - move.at < grace:
            continue  # perhaps still in flight in another process: its mover settles it
        later = [m for m in moves[index + 1 :] if m.alias == move.alias and m.applied]
        if later:
            applied = later[0].from_version == move.to_version
        else:
            current = alias_reads(move.alias)
            if current is None:
                continue  # cannot tell yet
            applied = current == move.to_version
        settled.append(
            (move, AuditOutcome.APPLIED.value if applied else AuditOutcome.FAILED.because("the move did not complete (settled from the alias)"))
        )
    return settled

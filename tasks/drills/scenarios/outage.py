"""The registry unavailable during a rollback: the MLflow store turns unwritable as a critical breach arrives and
stays so while the response runs; its writes wait the outage out and the rollback completes once, audited, nothing
half done."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect_crisis.core.errors import CrisisError, DrillError
from prefect_crisis.core.prefect_compat import drain_events
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent
from prefect_crisis.tasks.drills.injections import synthetic_champion
from prefect_crisis.tasks.drills.observe import response_runs
from prefect_crisis.tasks.drills.scenario import Drill, Scenario, seconds, wait_until
from prefect_crisis.tasks.drills.scenarios.rollbacks import MEASURED, Poisoned, expect_rollback, promote_poisoned_and_label

OUTAGE_AFTER_RESPONSE_STARTS = 2.5  # seconds the store stays unwritable once the response runs: its writes meet the outage


@dataclass
class Outage(Poisoned):
    """The store made unwritable, whether it still is, when it came back, and the thread that brings it back."""

    store: Path | None = None
    outage: bool = False
    restored_at: datetime | None = None
    restorer: threading.Thread | None = None


def sqlite_store() -> Path:
    """The stack's MLflow store as a file this process may make unwritable (root, chattr, a SQLite store).

    Raises:
        CrisisError: the store is not a local SQLite file, or this process cannot make it unwritable.
    """
    import os
    import shutil

    from prefect_crisis.core.paths import default_tracking_uri

    uri = default_tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise CrisisError(f"the registry-unavailable drill makes a local SQLite store unwritable; this stack's is {uri.split('://')[0]}")
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        raise CrisisError("the registry-unavailable drill needs root and chattr (e2fsprogs) to make the MLflow store unwritable")
    return Path(uri.removeprefix("sqlite:///"))


def chattr(path: Path, flag: str) -> None:
    import subprocess

    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class RegistryUnavailable(Scenario[Outage]):
    def new_state(self) -> Outage:
        return Outage()

    def setup(self, drill: Drill[Outage]) -> None:
        drill.state.store = sqlite_store()
        synthetic_champion(drill)
        promote_poisoned_and_label(drill)

    def inject(self, drill: Drill[Outage]) -> None:
        """The store goes unwritable, a critical breach arrives, and the store comes back only once the response has
        been running for OUTAGE_AFTER_RESPONSE_STARTS s (or after the time limit): its writes meet the outage."""
        import contextvars
        import time

        state, model, store = drill.state, drill.model, drill.state.store
        if store is None:
            raise DrillError(f"drill {drill.scenario!r} has no MLflow store to make unwritable: its setup finds it (sqlite_store)")
        chattr(store, "+i")
        state.outage = True
        injected_at = drill.inject_now()
        Timeline().emit(
            CrisisEvent.BREACH_CRITICAL, model, {"metric": "error_rate", "value": 0.4, "threshold": 0.2, "drill": True}, version=state.poisoned
        )
        drain_events()

        def restore() -> None:
            try:
                wait_until(
                    lambda: any((run.state_type and run.state_type.value == "RUNNING") or run.end_time for run in response_runs(model, injected_at)),
                    drill.limit / 2,
                    every=0.2,
                )
                time.sleep(OUTAGE_AFTER_RESPONSE_STARTS)
            finally:
                chattr(store, "-i")
                state.outage = False
                state.restored_at = datetime.now(UTC)

        # in this context's copy: the Prefect settings of the `crisis drill` command live in context variables
        state.restorer = threading.Thread(target=contextvars.copy_context().run, args=(restore,), name="drill-restore-store", daemon=True)
        state.restorer.start()

    def expect(self, drill: Drill[Outage]) -> None:
        state, registry, injected_at = drill.state, drill.model_registry, drill.fault_injected_at
        if state.restorer is None:
            raise DrillError(f"drill {drill.scenario!r} started nothing to bring the store back: its inject step does")
        state.restorer.join(drill.limit)
        expect_rollback(drill)
        registry.settle_audit()  # reading the audit never settles it: the rows the outage left pending, settled first
        moves = [move for move in registry.audit_trail(registry.champion_alias) if move.at >= injected_at]
        unsettled = [f"{move.action} v{move.to_version}: {move.outcome}" for move in moves if not move.applied]
        rollbacks = [move for move in moves if move.action == AliasAction.ROLLBACK]
        drill.require(len(rollbacks) == 1, f"{len(moves)} champion moves after the outage began")
        drill.require(not unsettled, f"audit rows not applied: {'; '.join(unsettled)}")
        if state.restored_at:
            drill.facts["outage_s"] = seconds(injected_at, state.restored_at)
            if rollbacks:  # the rollback as seen from the store's return: what the retries add to the outage
                drill.facts["recover_after_store_back_s"] = seconds(state.restored_at, rollbacks[0].at)

    def clean_up(self, drill: Drill[Outage]) -> None:
        if drill.state.outage and drill.state.store:
            chattr(drill.state.store, "-i")


SCENARIOS = (
    RegistryUnavailable(
        "registry-unavailable",
        "the MLflow store turns unwritable as a critical breach arrives and stays so while the "
        "response runs: its writes wait the outage out and the rollback completes once, audited, nothing half done",
        limit=90,
        end=MEASURED,
    ),
)

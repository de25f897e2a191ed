"""The MLflow store goes away during an alias move (a rollback, a promotion): a real SQLite store made
unwritable with `chattr +i` (as root `chmod` cannot), before, between and after the move's steps.

Retried with backoff, then completed, or given up with the alias untouched; never half done: an alias
moved without its audit row, or a row saying `applied` for an alias that did not move. A row left
`pending` (the store went away after the alias moved) is settled from the alias by an explicit `settle_audit`; reading never writes."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.errors import RegistryError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import AliasAction
from prefect_crisis.tasks.drills.injections import register_synthetic


def chattr(path: Path, flag: str) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def store(tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("no chattr on this machine: the store cannot be made unwritable (e2fsprogs provides it)")
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    registry = ModelRegistry(model_name="fragile", tracking_uri=uri, unavailable_retry_seconds=1.0).use(timeline=Timeline(sink=ListSink()))
    first, second = register_synthetic(registry, 1), register_synthetic(registry, 2)
    registry.promote(first, "first model")
    probe = tmp_path / "probe"
    probe.touch()
    try:
        chattr(probe, "+i")
        chattr(probe, "-i")
    except subprocess.CalledProcessError:
        pytest.skip("this filesystem does not take chattr +i")
    yield registry, db, first, second
    subprocess.run(["chattr", "-i", str(db)], capture_output=True)


class FaultAt(MlflowClient):
    """A real MLflow client that makes the store unwritable just before or just after it moves an alias."""

    def __init__(self, uri: str, db: Path, when: str):
        super().__init__(tracking_uri=uri, registry_uri=uri)
        self.db, self.when = db, when

    def set_registered_model_alias(self, name, alias, version):
        if self.when == "before":
            chattr(self.db, "+i")
        result = super().set_registered_model_alias(name, alias, version)
        if self.when == "after":
            chattr(self.db, "+i")
        return result


def later(registry: ModelRegistry) -> ModelRegistry:
    """The same registry read a few minutes on (a pending row younger than its grace may still be in flight)."""
    ahead = datetime.now(UTC) + timedelta(minutes=5)
    return ModelRegistry(model_name=registry.model_name, tracking_uri=registry.tracking_uri).use(
        clock=lambda: ahead, timeline=Timeline(sink=ListSink())
    )


def rollbacks(registry: ModelRegistry) -> list:
    return [move for move in registry.audit_trail(registry.champion_alias) if move.action == AliasAction.ROLLBACK]


def test_a_store_that_stays_unavailable_is_retried_then_given_up_with_the_alias_untouched(store):
    registry, db, first, second = store
    chattr(db, "+i")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"unavailable: could not write the audit row for 'fragile' after \d+ tries in 1 s"):
        registry.move_alias(registry.champion_alias, second, "rollback drill", action=AliasAction.ROLLBACK)
    assert 0.5 < time.monotonic() - started < 5  # retried, never sleeping past the 1 s budget
    chattr(db, "-i")
    assert registry.champion().version == first and rollbacks(registry) == []


def test_a_store_back_within_the_retry_budget_completes_the_move_once(store):
    registry, db, _first, second = store
    registry = ModelRegistry(model_name="fragile", tracking_uri=registry.tracking_uri, unavailable_retry_seconds=10.0).use(
        timeline=Timeline(sink=ListSink())
    )
    chattr(db, "+i")
    threading.Timer(1.5, chattr, args=(db, "-i")).start()
    started = time.monotonic()
    move = registry.move_alias(registry.champion_alias, second, "rollback drill", action=AliasAction.ROLLBACK)
    assert 1.4 < time.monotonic() - started < 10
    assert move.applied and registry.champion().version == second
    assert [(m.to_version, m.outcome) for m in rollbacks(registry)] == [(second, "applied")]


def test_a_store_lost_right_after_the_alias_moved_leaves_an_intent_the_next_read_settles_applied(store):
    registry, db, _first, second = store
    faulty = ModelRegistry(model_name="fragile", tracking_uri=registry.tracking_uri, unavailable_retry_seconds=1.0).use(
        client=FaultAt(registry.tracking_uri, db, "after"), timeline=Timeline(sink=ListSink())
    )
    faulty.move_alias(registry.champion_alias, second, "rollback drill", action=AliasAction.ROLLBACK)  # done: the alias moved
    chattr(db, "-i")
    assert registry.champion().version == second
    assert [m.outcome for m in rollbacks(registry)] == ["pending"]  # the intent, still within its grace
    assert registry.settle_audit() == 0 and [m.outcome for m in rollbacks(registry)] == ["pending"]  # perhaps in flight: left alone
    ahead = later(registry)
    assert [m.outcome for m in rollbacks(ahead)] == ["pending"]  # reading never writes: settling is its own step
    assert ahead.settle_audit() == 1
    assert [m.outcome for m in rollbacks(ahead)] == ["applied"]
    assert [m.outcome for m in rollbacks(registry)] == ["applied"]  # written back: every reader sees it settled


def test_a_store_lost_before_the_alias_moved_fails_the_move_and_the_row_settles_failed(store):
    registry, db, first, second = store
    faulty = ModelRegistry(model_name="fragile", tracking_uri=registry.tracking_uri, unavailable_retry_seconds=1.0).use(
        client=FaultAt(registry.tracking_uri, db, "before"), timeline=Timeline(sink=ListSink())
    )
    with pytest.raises(RegistryError, match="could not move 'champion' of 'fragile' to v2"):
        faulty.move_alias(registry.champion_alias, second, "rollback drill", action=AliasAction.ROLLBACK)
    chattr(db, "-i")
    assert registry.champion().version == first
    ahead = later(registry)
    assert ahead.settle_audit() == 1
    settled = rollbacks(ahead)
    assert len(settled) == 1 and settled[0].outcome.startswith("failed") and not settled[0].applied
    assert registry.serving_at(datetime.now(UTC) + timedelta(minutes=10)) == first

"""execute_recovery and candidates_from_registry over a real SQLite MLflow
registry; verification, the stop hook, the clock and the event sink are the
injected parts, so nothing here needs a Prefect server or waits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.timeline import Incident, ListSink, Timeline
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, AliasAction, CrisisEvent, DecisionKind, Severity, Strategy, TagKey, ViolationType
from prefect_crisis.tasks.response.recovery import Verification, execute_recovery
from prefect_crisis.tasks.response.rollback import RollbackDecision, candidates_from_registry

START = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    return [START]


@pytest.fixture
def sink():
    return ListSink()


@pytest.fixture
def registry(tmp_path, clock, sink):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = ModelRegistry(model_name="churn", tracking_uri=uri).use(client=client, clock=lambda: clock[0])
    registry.use(timeline=Timeline(clock=registry.now, sink=sink))
    experiment = client.create_experiment("training", artifact_location=str(tmp_path / "artifacts"))
    for accuracy in (0.91, 0.90, 0.55):  # v1, v2 stable; v3 poisoned
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", accuracy)
        registry.register_version(f"{run.info.artifact_uri}/model", run.info.run_id, None, {TagKey.FEATURES: "x"})
    return registry


def serve(registry, clock, version, hours, action=AliasAction.PROMOTE):
    registry.move_alias(registry.champion_alias, version, "test", action=action)
    clock[0] += timedelta(hours=hours)


def incident(violation=ViolationType.QUALITY) -> Incident:
    return Incident("inc-1", "churn", Severity.CRITICAL, violation, START)


def rollback_to(version: str) -> RollbackDecision:
    return RollbackDecision(DecisionKind.ROLLBACK, "degraded", version)


def test_candidates_carry_serving_intervals_incidents_and_the_last_rollback(registry, clock):
    serve(registry, clock, "1", 2)
    serve(registry, clock, "2", 1)
    registry.move_alias(registry.champion_alias, "1", "bad v2", "inc-0", action=AliasAction.ROLLBACK)
    rolled_back_at = clock[0]
    clock[0] += timedelta(hours=1)
    serve(registry, clock, "3", 0)

    champion, candidates, last_rollback_at = candidates_from_registry(registry)
    by_version = {c.version: c for c in candidates}
    assert champion.version == "3" and [c.version for c in candidates] == ["3", "2", "1"]
    assert by_version["2"].incident and not by_version["1"].incident  # v2 was replaced inside an incident
    assert (by_version["1"].served_from, by_version["1"].served_until) == (rolled_back_at, rolled_back_at + timedelta(hours=1))
    assert by_version["3"].served_until is None and by_version["1"].metrics == {"accuracy": 0.91}
    assert last_rollback_at == rolled_back_at
    # the same answer from a snapshot of the audit, read once
    assert candidates_from_registry(registry, registry.audit_snapshot()) == (champion, candidates, last_rollback_at)


def test_a_rollback_that_verifies_ends_the_recovery_with_events_in_order(registry, clock, sink):
    serve(registry, clock, "1", 2)
    serve(registry, clock, "3", 0)
    sink.clear()
    verified, stops = [], []
    outcome = execute_recovery(
        registry, rollback_to("1"), ViolationType.QUALITY, incident(),
        lambda version: verified.append(version) or Verification(True, "ok", {"accuracy": 0.9}), stops.append,
        timeline=registry.timeline(incident()),
    )
    assert (outcome.recovered, outcome.champion_before, outcome.champion_after) == (True, "3", "1")
    assert verified == ["1"] and stops == []
    assert [a.strategy for a in outcome.attempts] == [Strategy.ROLLBACK]
    assert [e.event for e in sink] == [CrisisEvent.MODEL_ROLLED_BACK, CrisisEvent.RECOVERY_SUCCEEDED]
    assert all(e.incident_ids == ["inc-1"] for e in sink)
    assert sink[-1].resource[EMERGENCY_LABEL] == "false"  # no emergency stop in force: the ladder has nothing to resolve
    assert registry.champion().version == "1"


def test_a_rollback_that_does_not_verify_falls_back_and_the_fallback_is_engaged(registry, clock, sink):
    serve(registry, clock, "1", 2)
    serve(registry, clock, "3", 0)
    registry.move_alias(registry.fallback_alias, "2", "simple model")
    sink.clear()
    outcome = execute_recovery(
        registry, rollback_to("1"), ViolationType.QUALITY, incident(),
        lambda version: Verification(version == "2", f"v{version}"), lambda reason: None,
        emergency_in_force=lambda model: model == registry.model_name,
    )
    assert outcome.recovered and outcome.champion_after == "2"
    assert [(a.strategy, a.version, a.verification.passed) for a in outcome.attempts] == [(Strategy.ROLLBACK, "1", False), (Strategy.FALLBACK, "2", True)]
    assert [e.event for e in sink] == [CrisisEvent.MODEL_ROLLED_BACK, CrisisEvent.FALLBACK_ENGAGED, CrisisEvent.RECOVERY_SUCCEEDED]
    assert sink[-1].resource[EMERGENCY_LABEL] == "true"  # the ladder's crisis-resolved matches on it


def test_data_integrity_raises_the_stop_flag_through_the_hook_and_moves_nothing(registry, clock, sink):
    serve(registry, clock, "3", 0)
    stops = []
    outcome = execute_recovery(
        registry, rollback_to("1"), ViolationType.DATA_INTEGRITY, incident(ViolationType.DATA_INTEGRITY),
        lambda version: pytest.fail("nothing to verify"), stops.append,
    )
    assert outcome.recovered and stops == ["incident inc-1: degraded"]
    assert registry.champion().version == "3"


def test_with_nowhere_to_go_recovery_fails_and_a_second_run_of_a_handled_incident_changes_nothing(registry, clock, sink):
    serve(registry, clock, "3", 0)
    failed = execute_recovery(registry, RollbackDecision(DecisionKind.FALLBACK, "degraded"), ViolationType.QUALITY, "inc-2", lambda v: Verification(True, ""), lambda r: None)
    assert not failed.recovered and [a.note for a in failed.attempts] == ["no rollback target", "no fallback target"]
    assert sink[-1].event is CrisisEvent.RECOVERY_FAILED

    serve(registry, clock, "1", 0)
    first = execute_recovery(registry, rollback_to("2"), ViolationType.QUALITY, "inc-3", lambda v: Verification(True, ""), lambda r: None)
    audit_rows = len(registry.audit_trail())
    again = execute_recovery(registry, rollback_to("2"), ViolationType.QUALITY, "inc-3", lambda v: pytest.fail("handled"), lambda r: None)
    assert first.recovered and again.already_handled and len(registry.audit_trail()) == audit_rows

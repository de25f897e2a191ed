"""execute_recovery and candidates_from_registry over a real SQLite MLflow
registry; verification, the stop hook, the clock and the event sink are the
injected parts, so nothing here needs a Prefect server or waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mlflow import MlflowClient

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.core.timeline import Incident, ListSink, Timeline
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, AliasAction, CrisisEvent, DecisionKind, Severity, Strategy, TagKey, ViolationType
from prefect_crisis.tasks.response.reading import candidates_from_registry
from prefect_crisis.tasks.response.recovery import Verification, execute_recovery
from prefect_crisis.tasks.response.rollback import RollbackDecision

START = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


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
        registry,
        rollback_to("1"),
        ViolationType.QUALITY,
        incident(),
        lambda version: verified.append(version) or Verification(True, "ok", {"accuracy": 0.9}),
        stops.append,
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
        registry,
        rollback_to("1"),
        ViolationType.QUALITY,
        incident(),
        lambda version: Verification(version == "2", f"v{version}"),
        lambda reason: None,
        emergency_in_force=lambda model: model == registry.model_name,
    )
    assert outcome.recovered and outcome.champion_after == "2"
    assert [(a.strategy, a.version, a.verification.passed) for a in outcome.attempts] == [
        (Strategy.ROLLBACK, "1", False),
        (Strategy.FALLBACK, "2", True),
    ]
    assert [e.event for e in sink] == [CrisisEvent.MODEL_ROLLED_BACK, CrisisEvent.FALLBACK_ENGAGED, CrisisEvent.RECOVERY_SUCCEEDED]
    assert sink[-1].resource[EMERGENCY_LABEL] == "true"  # the ladder's crisis-resolved matches on it


def test_data_integrity_raises_the_stop_flag_through_the_hook_and_moves_nothing(registry, clock, sink):
    serve(registry, clock, "3", 0)
    stops = []
    outcome = execute_recovery(
        registry,
        rollback_to("1"),
        ViolationType.DATA_INTEGRITY,
        incident(ViolationType.DATA_INTEGRITY),
        lambda version: pytest.fail("nothing to verify"),
        stops.append,
    )
    assert outcome.recovered and stops == ["incident inc-1: degraded"]
    assert registry.champion().version == "3"


def test_with_nowhere_to_go_recovery_fails_and_a_second_run_of_a_handled_incident_changes_nothing(registry, clock, sink):
    serve(registry, clock, "3", 0)
    failed = execute_recovery(
        registry,
        RollbackDecision(DecisionKind.FALLBACK, "degraded"),
        ViolationType.QUALITY,
        "inc-2",
        lambda v: Verification(True, ""),
        lambda r: None,
    )
    assert not failed.recovered and [a.note for a in failed.attempts] == ["no rollback target", "no fallback target"]
    assert sink[-1].event is CrisisEvent.RECOVERY_FAILED

    serve(registry, clock, "1", 0)
    first = execute_recovery(registry, rollback_to("2"), ViolationType.QUALITY, "inc-3", lambda v: Verification(True, ""), lambda r: None)
    audit_rows = len(registry.audit_trail())
    again = execute_recovery(registry, rollback_to("2"), ViolationType.QUALITY, "inc-3", lambda v: pytest.fail("handled"), lambda r: None)
    assert first.recovered and again.already_handled and len(registry.audit_trail()) == audit_rows


# -- verification is judged from values, and unknown is not recovered ---------------------------------------


def test_a_verification_on_a_window_too_thin_to_judge_does_not_pass():
    from prefect_crisis.blocks import MetricRule, RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    policy = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02, min_samples=30)])
    good = Candidate("2", START, None, {"accuracy": 0.90})
    thin = verify_on_window("2", LiveWindow({"accuracy": 29}, {"accuracy": 29}), [good], policy)  # perfect, but one row short
    assert not thin.passed and "29 samples < 30" in thin.detail
    enough = verify_on_window("2", LiveWindow({"accuracy": 30}, {"accuracy": 30}), [good], policy)  # the boundary: judged
    assert enough.passed
    assert not verify_on_window("9", LiveWindow({"accuracy": 300}, {"accuracy": 300}), [good], policy).passed  # no baseline: not verified
    capped = verify_on_window("2", LiveWindow({"accuracy": 10}, {"accuracy": 10}), [good], policy, min_samples_cap=10)
    assert capped.passed  # an emergency judges the small window


def test_the_fallback_verifies_against_what_served_before_never_its_own_baseline():
    from prefect_crisis.blocks import RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    fallback = Candidate("4", None, None, {"accuracy": 0.99}, fallback=True)
    window = LiveWindow({"accuracy": 60}, {"accuracy": 100})
    assert verify_on_window("4", window, [fallback], RollbackPolicy(), Verification(False, "", {"accuracy": 0.55})).passed
    assert not verify_on_window("4", window, [fallback], RollbackPolicy(), Verification(False, "", {"accuracy": 0.61})).passed


# -- the emergency stop: the champion alias moves to the fallback; a run without the model's name is not the model's


def test_serve_fallback_moves_the_champion_alias_to_the_fallback_version(registry, clock):
    from prefect_crisis.tasks.response.emergency import serve_fallback

    serve(registry, clock, "2", 2)
    registry.move_alias(registry.fallback_alias, "1", "the simple model")
    result = serve_fallback(registry, "emergency", "inc-1")
    assert result.ok and result.changed == ["1"]
    assert registry.champion().version == "1" and registry.version_by_alias(registry.fallback_alias).version == "1"
    # the fallback alias was set at the same instant (a fixed clock): pick the emergency's move by its action
    moved = [move for move in registry.audit_trail() if move.action == AliasAction.FALLBACK]
    assert [(m.alias, m.from_version, m.to_version) for m in moved] == [(registry.champion_alias, "2", "1")]
    assert serve_fallback(registry, "again", "inc-1").changed == []  # already serving it: nothing moves


def test_serve_fallback_without_a_fallback_leaves_serving_unchanged(registry, clock):
    from prefect_crisis.tasks.response.emergency import serve_fallback

    serve(registry, clock, "2", 2)
    assert serve_fallback(registry, "emergency", "inc-1").changed == []
    assert registry.champion().version == "2"


def test_a_run_matches_the_model_only_when_its_parameters_name_it():
    from prefect_crisis.tasks.response.emergency import of_model

    assert of_model({"model_name": "churn"}, "churn")
    assert not of_model({"model_name": "fraud"}, "churn")
    assert not of_model({}, "churn") and not of_model(None, "churn") and not of_model({"other": "churn"}, "churn")


def test_reading_the_audit_never_writes_and_settling_is_an_explicit_step(registry, clock):
    serve(registry, clock, "1", 2)
    pending = registry._audit(AliasAction.ROLLBACK, registry.champion_alias, "1", "2", "lost store", "inc-1", finished=False)
    clock[0] += timedelta(hours=1)  # past the grace of a move still in flight
    assert registry.audit_trail()[-1].outcome == "pending"
    assert registry.audit_trail()[-1].outcome == "pending"  # read again: still as stored
    assert registry.settle_audit() == 1  # the alias never moved to v2: failed
    last = registry.audit_trail()[-1]
    assert last.audit_run_id == pending and last.outcome.startswith("failed") and not last.applied
    assert registry.settle_audit() == 0

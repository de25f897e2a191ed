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


# -- the plan and the verification as plain values ---------------------------------------------------------


def plan(kind: DecisionKind, violation: ViolationType, *, fallback_next: bool = True):
    from prefect_crisis.tasks.response.recovery import plan_of

    return plan_of(
        RollbackDecision(kind, "degraded", "1" if kind is DecisionKind.ROLLBACK else None, fallback_version="4", fallback_next=fallback_next),
        violation,
    )


def test_a_plan_tries_the_rollback_then_the_fallback_when_the_decision_allows_it():
    assert plan(DecisionKind.ROLLBACK, ViolationType.QUALITY) == [(Strategy.ROLLBACK, "1"), (Strategy.FALLBACK, "4")]
    assert plan(DecisionKind.ROLLBACK, ViolationType.ERRORS) == [(Strategy.ROLLBACK, "1"), (Strategy.FALLBACK, "4")]
    assert plan(DecisionKind.ROLLBACK, ViolationType.QUALITY, fallback_next=False) == [(Strategy.ROLLBACK, "1")]


def test_a_latency_crisis_only_ever_falls_back():
    assert plan(DecisionKind.ROLLBACK, ViolationType.LATENCY, fallback_next=False) == [(Strategy.FALLBACK, "4")]
    assert plan(DecisionKind.FALLBACK, ViolationType.LATENCY) == [(Strategy.FALLBACK, "4")]


def test_a_fallback_decision_says_the_rollback_was_tried_with_no_target():
    assert plan(DecisionKind.FALLBACK, ViolationType.QUALITY, fallback_next=False) == [(Strategy.ROLLBACK, None), (Strategy.FALLBACK, "4")]


def test_a_data_integrity_crisis_only_stops_training():
    assert plan(DecisionKind.ROLLBACK, ViolationType.DATA_INTEGRITY) == [(Strategy.STOP_TRAINING, None)]


def test_a_verification_says_what_it_measured_against_which_baseline():
    from prefect_crisis.blocks import MetricRule, RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    policy = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02), MetricRule(metric="latency_p95_ms", tolerance=0.5, relative=True)])
    good = Candidate("2", START, None, {"accuracy": 0.90})
    passed = verify_on_window("2", LiveWindow({"accuracy": 270}, {"accuracy": 300}), [good], policy)
    assert passed == Verification(
        True, "v2 accuracy 0.9000 on the window against its own baseline; not measured: latency_p95_ms (no latency samples)", {"accuracy": 0.9}
    )
    assert passed.accuracy == 0.9
    failed = verify_on_window("2", LiveWindow({"accuracy": 150}, {"accuracy": 300}), [good], RollbackPolicy(rules=[MetricRule(metric="accuracy")]))
    assert failed.passed is False
    assert failed.detail.startswith("v2 accuracy 0.5000 on the window against its own baseline; still failing: ['accuracy 0.5 (bound")
    empty = verify_on_window("2", LiveWindow({}, {"accuracy": 0}), [good], policy)
    assert (empty.passed, empty.accuracy) == (False, 0.0)  # nothing labelled: no accuracy to divide, and not verified


def test_a_version_is_verified_against_the_baseline_of_the_version_it_was_promoted_over():
    from prefect_crisis.blocks import MetricRule, RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    policy = RollbackPolicy(rules=[MetricRule(metric="accuracy", tolerance=0.02)])
    replaced = Candidate("1", START, START, {"accuracy": 0.95})
    poisoned = Candidate("2", START, None, {"accuracy": 0.70}, promoted_over="1")
    window = LiveWindow({"accuracy": 700}, {"accuracy": 1_000})  # its own figure, far below the 0.95 it claimed to beat
    assert verify_on_window("2", window, [replaced, poisoned], policy).passed is False
    assert verify_on_window("2", window, [Candidate("2", START, None, {"accuracy": 0.70})], policy).passed is True


def test_the_fallback_verification_compares_with_what_served_before_inclusively():
    from prefect_crisis.blocks import RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    fallback = Candidate("4", None, None, {"accuracy": 0.99}, fallback=True)
    window = LiveWindow({"accuracy": 60}, {"accuracy": 100})
    same = verify_on_window("4", window, [fallback], RollbackPolicy(), Verification(False, "", {"accuracy": 0.6}))
    assert same == Verification(True, "fallback v4 accuracy 0.6000 on the window against 0.6000 serving before (a stopgap)", {"accuracy": 0.6})
    alone = verify_on_window("4", window, [fallback], RollbackPolicy())
    assert alone == Verification(True, "fallback v4 accuracy 0.6000 on the window (a stopgap)", {"accuracy": 0.6})
    unmeasured = verify_on_window("4", window, [fallback], RollbackPolicy(), Verification(False, "", {}))
    assert unmeasured.passed is True


# -- execute_recovery's branches, on an in-memory registry (the SQLite one costs seconds a test) ----------


class MemoryRegistry:
    """The registry as execute_recovery uses it: two aliases, an audit of the moves applied, a timeline into a list."""

    model_name, champion_alias, fallback_alias = "churn", "champion", "fallback"

    def __init__(self, champion: str, fallback: str | None = None, refuse: tuple[str, ...] = ()):
        self.aliases = {self.champion_alias: champion, self.fallback_alias: fallback}
        self.refuse, self.moves, self.sink, self.currents = refuse, [], ListSink(), []

    def timeline(self, incident=None) -> Timeline:
        return Timeline(incident, clock=lambda: START, sink=self.sink)

    def version_by_alias(self, alias):
        from types import SimpleNamespace

        return SimpleNamespace(version=self.aliases[alias]) if self.aliases[alias] else None

    def champion(self):
        return self.version_by_alias(self.champion_alias)

    def audit_snapshot(self):
        from prefect_crisis.blocks.registry_audit import AuditSnapshot

        return AuditSnapshot(tuple(self.moves))

    def move_alias(self, alias, version, reason, incident=None, action=AliasAction.MOVE, current=None):
        from prefect_crisis.blocks.registry_audit import AliasMove
        from prefect_crisis.core.errors import RegistryError

        if version in self.refuse:
            raise RegistryError(f"v{version} is gone")
        identifier = incident if isinstance(incident, str) or incident is None else incident.id
        applied = AliasMove(action, alias, self.aliases[alias], version, reason, identifier, None, START, "applied", f"row-{len(self.moves)}")
        self.aliases[alias] = version
        self.moves.append(applied)
        self.currents.append(current)
        return applied


def recover(registry: MemoryRegistry, decision: RollbackDecision, accuracy: dict[str, float], passes: tuple[str, ...] = (), **options):
    return execute_recovery(
        registry,
        decision,
        ViolationType.QUALITY,
        "inc-7",
        lambda version: Verification(version in passes, f"v{version}", {"accuracy": accuracy[version]}),
        lambda reason: None,
        **options,
    )


def test_when_no_move_verifies_the_state_measured_best_is_left_serving():
    registry = MemoryRegistry(champion="3", fallback="2")
    decision = RollbackDecision(DecisionKind.ROLLBACK, "degraded", "1", fallback_version="2")
    outcome = recover(registry, decision, {"1": 0.70, "2": 0.60}, before=Verification(False, "v3", {"accuracy": 0.50}))
    assert (outcome.recovered, outcome.champion_before, outcome.champion_after) == (False, "3", "1")
    assert registry.aliases["champion"] == "1"
    assert [(m.to_version, m.action, m.reason) for m in registry.moves] == [
        ("1", AliasAction.ROLLBACK, "rollback: degraded"),
        ("2", AliasAction.FALLBACK, "fallback: degraded"),
        ("1", AliasAction.ROLLBACK, "keep the better state: no move verified; measured on the window v3 50.0%, v1 70.0%, v2 60.0%"),
    ]
    kept = outcome.attempts[-1]
    assert (kept.strategy, kept.version, kept.verification.passed, kept.verification.accuracy) == (Strategy.ROLLBACK, "1", False, 0.70)
    assert kept.verification.detail == "kept the better state v1 (v3 50.0%, v1 70.0%, v2 60.0%)"
    assert kept.note == "no move verified: kept the better state v1 (v3 50.0%, v1 70.0%, v2 60.0%)"
    (event,) = registry.sink
    assert (event.event, event.payload["champion_after"], event.payload["recovered"], event.payload["violation"]) == (
        CrisisEvent.RECOVERY_FAILED,
        "1",
        False,
        "quality",
    )


def test_when_what_served_before_measured_best_it_is_put_back_quietly_if_told():
    registry = MemoryRegistry(champion="3")
    outcome = recover(registry, rollback_to("1"), {"1": 0.40}, before=Verification(False, "v3", {"accuracy": 0.50}), escalate=False)
    assert (outcome.recovered, outcome.champion_after) == (False, "3")
    assert [m.to_version for m in registry.moves] == ["1", "3"]
    assert list(registry.sink) == []  # escalate=False: no ml.recovery.failed


def test_the_last_move_is_kept_when_it_measured_best_or_nothing_was_measured():
    best_last = MemoryRegistry(champion="3")
    outcome = recover(best_last, rollback_to("1"), {"1": 0.60}, before=Verification(False, "v3", {"accuracy": 0.50}))
    assert outcome.champion_after == "1" and [m.to_version for m in best_last.moves] == ["1"]
    unmeasured = MemoryRegistry(champion="3")
    outcome = execute_recovery(unmeasured, rollback_to("1"), ViolationType.QUALITY, "inc-7", lambda v: Verification(False, "?"), lambda r: None)
    assert outcome.champion_after == "1" and [m.to_version for m in unmeasured.moves] == ["1"]


def test_a_refused_move_is_an_attempt_and_the_next_strategy_is_tried():
    registry = MemoryRegistry(champion="3", fallback="2", refuse=("1",))
    outcome = recover(registry, RollbackDecision(DecisionKind.ROLLBACK, "degraded", "1"), {"2": 0.8}, passes=("2",))
    assert [(a.strategy, a.version, a.note) for a in outcome.attempts] == [
        (Strategy.ROLLBACK, "1", "alias move refused: v1 is gone"),
        (Strategy.FALLBACK, "2", ""),
    ]
    assert (outcome.recovered, outcome.champion_after) == (True, "2")
    (event,) = registry.sink
    assert event.event is CrisisEvent.RECOVERY_SUCCEEDED and event.resource[EMERGENCY_LABEL] == "false"


def test_keeping_the_better_state_may_be_refused_too():
    registry = MemoryRegistry(champion="3", refuse=("3",))
    outcome = recover(registry, rollback_to("1"), {"1": 0.40}, before=Verification(False, "v3", {"accuracy": 0.50}))
    assert outcome.champion_after == "1"
    assert outcome.attempts[-1].note == "keeping the better state v3 refused: v3 is gone"


def test_a_move_to_the_version_already_serving_is_skipped_and_said():
    registry = MemoryRegistry(champion="1")
    outcome = execute_recovery(registry, rollback_to("1"), ViolationType.QUALITY, "inc-7", lambda v: pytest.fail("no move"), lambda r: None)
    assert [(a.strategy, a.version, a.note) for a in outcome.attempts] == [
        (Strategy.ROLLBACK, "1", "v1 already serves"),
        (Strategy.FALLBACK, None, "no fallback target"),  # no @fallback version
    ]
    assert outcome.recovered is False and registry.moves == []


def test_a_handled_incident_is_skipped_unless_a_later_response_acts_again():
    registry = MemoryRegistry(champion="3")
    first = recover(registry, rollback_to("1"), {"1": 0.9}, passes=("1",))
    registry.aliases["champion"] = "3"
    handled = execute_recovery(registry, rollback_to("2"), ViolationType.QUALITY, "inc-7", lambda v: pytest.fail("handled"), lambda r: None)
    assert (handled.recovered, handled.already_handled, handled.champion_before, handled.champion_after, handled.attempts) == (
        True,
        True,
        "3",
        "3",
        (),
    )
    again = recover(registry, rollback_to("1"), {"1": 0.9}, passes=("1",), skip_if_handled=False)
    assert first.recovered and again.recovered and not again.already_handled and again.champion_after == "1"


def test_the_stop_flag_is_raised_with_the_incident_and_the_reason():
    registry, stops = MemoryRegistry(champion="3"), []
    outcome = execute_recovery(registry, rollback_to("1"), ViolationType.DATA_INTEGRITY, "inc-7", lambda v: pytest.fail("no move"), stops.append)
    assert stops == ["incident inc-7: degraded"] and registry.moves == []
    assert [(a.strategy, a.version, a.verification.passed, a.note) for a in outcome.attempts] == [
        (Strategy.STOP_TRAINING, None, True, "stop flag raised")
    ]
    assert outcome.recovered and registry.sink[0].event is CrisisEvent.RECOVERY_SUCCEEDED


def test_an_outcome_reads_as_a_payload():
    from prefect_crisis.tasks.response.recovery import Attempt, RecoveryOutcome

    outcome = RecoveryOutcome(
        "inc-1",
        False,
        False,
        "3",
        "1",
        (Attempt(Strategy.ROLLBACK, "1", Verification(False, "v1 failing")), Attempt(Strategy.FALLBACK, None, None, "no fallback target")),
    )
    assert outcome.to_dict() == {
        "incident": "inc-1",
        "recovered": False,
        "already_handled": False,
        "champion_before": "3",
        "champion_after": "1",
        "attempts": [
            {"strategy": "rollback", "version": "1", "verified": False, "detail": "v1 failing"},
            {"strategy": "fallback", "version": None, "verified": None, "detail": "no fallback target"},
        ],
    }


def test_the_first_move_passes_the_champion_it_read_and_later_moves_read_the_alias_again():
    """`current` saves the registry a read; after a move it would be stale, so the next move passes none."""
    registry = MemoryRegistry(champion="3", fallback="2")
    champion = registry.champion()
    recover(registry, rollback_to("1"), {"1": 0.5, "2": 0.9}, passes=("2",), champion=champion)
    assert [move.to_version for move in registry.moves] == ["1", "2"]
    assert registry.currents[0] is champion and registry.currents[1] is None


def test_the_champion_and_the_audit_the_incident_began_with_are_the_ones_used():
    from types import SimpleNamespace

    from prefect_crisis.blocks.registry_audit import AuditSnapshot

    registry = MemoryRegistry(champion="3")
    outcome = recover(registry, rollback_to("1"), {"1": 0.9}, passes=("1",), champion=SimpleNamespace(version="2"))
    assert (outcome.champion_before, outcome.champion_after) == ("2", "1")
    # the incident's snapshot of the audit (taken before its first move) says it is not handled yet
    registry.aliases["champion"] = "3"
    again = recover(registry, rollback_to("1"), {"1": 0.9}, passes=("1",), audit=AuditSnapshot(()))
    assert again.already_handled is False and again.champion_after == "1"
    nobody = MemoryRegistry(champion=None)
    assert recover(nobody, rollback_to("1"), {"1": 0.9}, passes=("1",)).champion_before is None


def test_a_verified_move_is_kept_even_when_what_served_before_measured_better():
    registry = MemoryRegistry(champion="3")
    outcome = recover(registry, rollback_to("1"), {"1": 0.80}, passes=("1",), before=Verification(False, "v3", {"accuracy": 0.90}))
    assert (outcome.recovered, outcome.champion_after) == (True, "1")
    assert [move.to_version for move in registry.moves] == ["1"]


def test_a_fallback_decision_looks_up_the_fallback_alias_only_for_the_fallback():
    registry = MemoryRegistry(champion="3", fallback="2")
    outcome = recover(registry, RollbackDecision(DecisionKind.FALLBACK, "degraded"), {"2": 0.9}, passes=("2",))
    assert [(a.strategy, a.version, a.note) for a in outcome.attempts] == [
        (Strategy.ROLLBACK, None, "no rollback target"),
        (Strategy.FALLBACK, "2", ""),
    ]
    assert [(move.to_version, move.action) for move in registry.moves] == [("2", AliasAction.FALLBACK)]


def test_the_recovery_events_name_the_incident_the_version_and_the_outcome():
    registry = MemoryRegistry(champion="3")
    outcome = recover(registry, rollback_to("1"), {"1": 0.9}, passes=("1",), emergency_in_force=lambda model: model == "churn")
    (succeeded,) = registry.sink
    assert succeeded.event is CrisisEvent.RECOVERY_SUCCEEDED and succeeded.incident_ids == ["inc-7"]
    assert succeeded.resource["ml.model.name"] == "churn" and succeeded.resource[EMERGENCY_LABEL] == "true"
    assert any(r["prefect.resource.role"] == "model-version" and r["prefect.resource.id"].endswith(".1") for r in succeeded.related)
    assert succeeded.payload == {"violation": "quality", "incident": "inc-7", **outcome.to_dict()}
    assert (outcome.incident, outcome.already_handled) == ("inc-7", False)
    failing = MemoryRegistry(champion="3")
    recover(failing, rollback_to("1"), {"1": 0.5})
    (failed,) = failing.sink
    assert failed.event is CrisisEvent.RECOVERY_FAILED and EMERGENCY_LABEL not in failed.resource and failed.incident_ids == ["inc-7"]
    assert failing.moves[0].incident == "inc-7"


def test_keeping_the_better_state_is_audited_under_the_incident():
    registry = MemoryRegistry(champion="3")
    recover(registry, rollback_to("1"), {"1": 0.40}, before=Verification(False, "v3", {"accuracy": 0.50}))
    assert [(move.to_version, move.incident) for move in registry.moves] == [("1", "inc-7"), ("3", "inc-7")]
    refused = MemoryRegistry(champion="3", refuse=("3",))
    outcome = recover(refused, rollback_to("1"), {"1": 0.40}, before=Verification(False, "v3", {"accuracy": 0.50}))
    assert (outcome.attempts[-1].strategy, outcome.attempts[-1].version, outcome.attempts[-1].verification) == (Strategy.ROLLBACK, "3", None)


def test_the_stop_flag_attempt_is_verified_by_raising_it():
    registry = MemoryRegistry(champion="3")
    outcome = execute_recovery(registry, rollback_to("1"), ViolationType.DATA_INTEGRITY, "inc-7", lambda v: pytest.fail("no move"), lambda r: None)
    assert outcome.attempts[0].verification == Verification(True, "stop flag raised")


def test_the_window_accuracy_reads_the_labelled_rows():
    from prefect_crisis.blocks import MetricRule, RollbackPolicy
    from prefect_crisis.tasks.response.candidates import Candidate
    from prefect_crisis.tasks.response.recovery import verify_on_window
    from prefect_crisis.tasks.response.rules import LiveWindow

    good = Candidate("2", START, None, {"accuracy": 0.9})
    assert verify_on_window("2", LiveWindow({"accuracy": 1}, {"accuracy": 1}), [good], RollbackPolicy()).accuracy == 1.0
    assert verify_on_window("2", LiveWindow({}, {}), [good], RollbackPolicy()).accuracy == 0.0
    two_latencies = RollbackPolicy(rules=[MetricRule(metric="latency_p50_ms"), MetricRule(metric="latency_p95_ms")])
    detail = verify_on_window("2", LiveWindow({"accuracy": 9}, {"accuracy": 10}), [good], two_latencies).detail
    assert detail.endswith("; not measured: latency_p50_ms (no latency samples), latency_p95_ms (no latency samples)")


def test_an_attempt_with_neither_a_note_nor_a_verification_has_an_empty_detail():
    from prefect_crisis.tasks.response.recovery import Attempt, RecoveryOutcome

    outcome = RecoveryOutcome("inc-1", False, False, "3", "3", (Attempt(Strategy.ROLLBACK, "1", None),))
    assert outcome.to_dict()["attempts"] == [{"strategy": "rollback", "version": "1", "verified": None, "detail": ""}]

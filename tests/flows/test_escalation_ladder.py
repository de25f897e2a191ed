"""The escalation ladder on the session's real Prefect server.

The test harness evaluates automations but runs no worker, so each test
checks the flow run an automation CREATED (deployment, parameters), not that
it ran. The deployments are stand-ins registered under the ladder's names.
"""

from __future__ import annotations

import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.events import emit_event

from prefect_crisis.blocks import EscalationPolicy, LadderStep
from prefect_crisis.core.timeline import model_resource
from prefect_crisis.core.vocabulary import EMERGENCY_LABEL, CrisisEvent
from prefect_crisis.deployments.automations import CRISIS_RESPONSE, EMERGENCY_STOP, HEALTH_MONITOR, LADDER_DEPLOYMENTS, apply_ladder
from tests.helpers import wait_for

POLICY = EscalationPolicy(warnings_to_escalate=3, escalation_window_minutes=10, cooldown_minutes=30, monitor_interval_seconds=5, dead_man_intervals=2)


@pytest.fixture(scope="module")
def deployment_ids(prefect_server):
    """Stand-in deployments under the names the ladder looks up; the automations, deleted after the module."""
    ids = {}
    with get_client(sync_client=True) as client:
        for name in LADDER_DEPLOYMENTS:
            flow_name, deployment_name = name.split("/")
            ids[name] = client.create_deployment(flow_id=client.create_flow_from_name(flow_name), name=deployment_name)
        apply_ladder(POLICY, client)
    yield ids
    with get_client(sync_client=True) as client:
        for step in LadderStep:
            for automation in client.read_automations_by_name(step.automation_name):
                client.delete_automation(automation.id)


def model() -> str:
    return f"ladder-{uuid.uuid4().hex[:8]}"


def emit(event: CrisisEvent, name: str, **labels: str):
    return emit_event(event=event.value, resource={**model_resource(name), **labels})


def runs_for(deployment_id, name: str) -> list:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))
    return [run for run in runs if run.parameters.get("model_name") == name or name in (run.parameters.get("model_names") or [])]


def wait_for_runs(deployment_id, name: str, count: int = 1, timeout: float = 30.0) -> list:
    return wait_for(lambda: runs_for(deployment_id, name), lambda runs: len(runs) >= count, timeout=timeout)


def test_applying_twice_leaves_one_of_each_and_a_changed_threshold_updates_in_place(deployment_ids):
    with get_client(sync_client=True) as client:
        again = apply_ladder(POLICY, client)
        assert again == [(step.automation_name, "unchanged") for step in LadderStep]
        assert all(len(client.read_automations_by_name(step.automation_name)) == 1 for step in LadderStep)
        before = client.read_automations_by_name("crisis-escalate-warnings")[0]

        changed = apply_ladder(POLICY.model_copy(update={"warnings_to_escalate": 4}), client)
        assert dict(changed)["crisis-escalate-warnings"] == "updated" and dict(changed)["crisis-critical"] == "unchanged"
        after = client.read_automations_by_name("crisis-escalate-warnings")
        assert len(after) == 1 and after[0].id == before.id and after[0].trigger.threshold == 4

        assert dict(apply_ladder(POLICY, client))["crisis-escalate-warnings"] == "updated"  # back to 3 for the other tests
        assert client.read_automations_by_name("crisis-escalate-warnings")[0].trigger.threshold == 3


def test_a_critical_breach_runs_the_response_for_that_model_with_the_event_as_incident(deployment_ids):
    affected, healthy = model(), model()
    event = emit(CrisisEvent.BREACH_CRITICAL, affected)
    runs = wait_for_runs(deployment_ids[CRISIS_RESPONSE], affected)
    assert len(runs) == 1
    parameters = runs[0].parameters
    assert parameters["incident_id"] == str(event.id) and parameters["triggering_event_id"] == str(event.id)
    assert (parameters["severity"], parameters["diagnose_only"]) == ("critical", False)
    assert runs_for(deployment_ids[CRISIS_RESPONSE], healthy) == []


def test_two_models_breaching_in_the_same_second_both_get_a_response(deployment_ids):
    first, second = model(), model()
    emit(CrisisEvent.BREACH_CRITICAL, first)
    emit(CrisisEvent.BREACH_CRITICAL, second)  # PrefectHQ/prefect#11199: without for_each, one action for both
    assert len(wait_for_runs(deployment_ids[CRISIS_RESPONSE], first)) == 1
    assert len(wait_for_runs(deployment_ids[CRISIS_RESPONSE], second)) == 1


def test_a_second_critical_inside_the_cool_down_starts_no_second_response(deployment_ids):
    storming, marker = model(), model()
    emit(CrisisEvent.BREACH_CRITICAL, storming)
    assert len(wait_for_runs(deployment_ids[CRISIS_RESPONSE], storming)) == 1
    emit(CrisisEvent.BREACH_CRITICAL, storming)
    emit(CrisisEvent.BREACH_CRITICAL, marker)  # evaluated after the second breach: once its run exists, the second was judged
    assert len(wait_for_runs(deployment_ids[CRISIS_RESPONSE], marker)) == 1
    settled = wait_for(lambda: runs_for(deployment_ids[CRISIS_RESPONSE], storming), lambda runs: len(runs) > 1, timeout=3.0)
    assert len(settled) == 1


def test_three_warnings_within_the_window_escalate_to_a_critical_response(deployment_ids):
    warned = model()
    for _ in range(3):
        emit(CrisisEvent.BREACH_WARNING, warned)
    runs = wait_for(
        lambda: runs_for(deployment_ids[CRISIS_RESPONSE], warned),
        lambda found: any(run.parameters["severity"] == "critical" for run in found) and any(run.parameters["diagnose_only"] for run in found),
    )
    critical = [run for run in runs if run.parameters["severity"] == "critical"]
    warnings = [run for run in runs if run.parameters["severity"] == "warning"]
    assert len(critical) == 1 and not critical[0].parameters["diagnose_only"]
    assert warnings and all(run.parameters["diagnose_only"] for run in warnings)


def test_a_failed_recovery_runs_the_emergency_stop_and_a_success_resolves_it(deployment_ids):
    failing = model()
    failed = emit(CrisisEvent.RECOVERY_FAILED, failing)
    runs = wait_for_runs(deployment_ids[EMERGENCY_STOP], failing)
    assert len(runs) == 1
    assert runs[0].parameters == {
        "model_name": failing,
        "incident_id": str(failed.id),
        "triggering_event_id": str(failed.id),
        "reason": "ml.recovery.failed",
    }
    emit(CrisisEvent.RECOVERY_SUCCEEDED, failing, **{EMERGENCY_LABEL: "true"})
    runs = wait_for_runs(deployment_ids[EMERGENCY_STOP], failing, count=2)
    assert [run.parameters.get("resolve", False) for run in sorted(runs, key=lambda run: run.created)] == [False, True]


def test_a_recovery_with_no_emergency_in_force_resolves_nothing(deployment_ids):
    """Every successful rollback emits ml.recovery.succeeded; only one under an emergency stop runs the resolve."""
    calm, alarmed = model(), model()
    emit(CrisisEvent.RECOVERY_SUCCEEDED, calm, **{EMERGENCY_LABEL: "false"})
    emit(CrisisEvent.RECOVERY_SUCCEEDED, alarmed, **{EMERGENCY_LABEL: "true"})
    assert len(wait_for_runs(deployment_ids[EMERGENCY_STOP], alarmed)) == 1  # the automation service got this far
    assert runs_for(deployment_ids[EMERGENCY_STOP], calm) == []


def test_new_labels_run_the_health_monitor_for_that_model(deployment_ids):
    labelled = model()
    emit(CrisisEvent.LABELS_RECORDED, labelled)
    runs = wait_for_runs(deployment_ids[HEALTH_MONITOR], labelled)
    assert len(runs) == 1 and runs[0].parameters == {"model_names": [labelled]}  # a templated list renders item by item


def test_the_dead_mans_switch_is_stored_as_a_proactive_trigger_per_model(deployment_ids):
    """Firing is not checked here: in Prefect 3.9.1's test harness the proactive evaluation loop did
    not fire within 50 s (measured), while reactive triggers fire within a second or two."""
    with get_client(sync_client=True) as client:
        (stored,) = client.read_automations_by_name("crisis-monitor-silent")
    trigger = stored.trigger
    assert (trigger.posture, trigger.expect, trigger.threshold) == ("Proactive", {"ml.health.reported"}, 1)
    assert trigger.within.total_seconds() == 10 and trigger.for_each == {"ml.model.name"}
    parameters = stored.actions[0].parameters
    assert stored.actions[0].deployment_id == deployment_ids[CRISIS_RESPONSE]
    assert (parameters["severity"], parameters["diagnose_only"], parameters["violation"]) == ("warning", True, "errors")
    assert "incident_id" not in parameters

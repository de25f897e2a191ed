"""The escalation ladder as built from a policy, without a server: names,
triggers, thresholds, windows, templated parameters, and the idempotent apply."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest
from prefect.events.actions import RunDeployment, SendNotification

from prefect_crisis.blocks import EscalationPolicy, LadderStep
from prefect_crisis.core.errors import PolicyError, StackError
from prefect_crisis.deployments.automations import (
    CRISIS_RESPONSE,
    EMERGENCY_STOP,
    EVENT_ID,
    HEALTH_MONITOR,
    LADDER_DEPLOYMENTS,
    MODEL,
    apply_ladder,
    is_unchanged,
    ladder,
)

IDS = {name: uuid4() for name in LADDER_DEPLOYMENTS}


def by_name(policy: EscalationPolicy | None = None, notification=None) -> dict:
    policy = policy or EscalationPolicy()
    return {automation.name: automation for automation in ladder(policy, IDS, notification)}


MODEL_STEPS = [
    "crisis-warning",
    "crisis-critical",
    "crisis-escalate-warnings",
    "crisis-emergency",
    "crisis-resolved",
    "crisis-monitor-silent",
    "crisis-stopgap",
    "crisis-evidence",
]
RUN_STEPS = ["crisis-stalled", "crisis-retry-response", "crisis-retry-emergency"]  # on the ladder's own flow runs


def test_every_step_is_one_automation_per_model_on_model_events():
    automations = by_name()
    assert list(automations) == MODEL_STEPS + RUN_STEPS
    for automation in (automations[name] for name in MODEL_STEPS):
        assert automation.trigger.for_each == {"ml.model.name"}
        assert automation.trigger.match.model_dump()["prefect.resource.id"] == "ml.model.*"
        assert automation.enabled


def test_triggers_thresholds_and_windows_follow_the_policy():
    policy = EscalationPolicy(
        warnings_to_escalate=4, escalation_window_minutes=15, cooldown_minutes=45, monitor_interval_seconds=30, dead_man_intervals=3
    )
    automations = by_name(policy)
    critical, escalate = automations["crisis-critical"].trigger, automations["crisis-escalate-warnings"].trigger
    assert (critical.expect, critical.threshold, critical.within) == ({"ml.breach.critical"}, 1, timedelta(minutes=45))
    assert (escalate.expect, escalate.threshold, escalate.within) == ({"ml.breach.warning"}, 4, timedelta(minutes=15))
    emergency = automations["crisis-emergency"].trigger
    # a rejected batch never reaches the emergency step (it blocks training on that batch only): the warning step diagnoses
    assert (emergency.expect, emergency.within) == ({"ml.breach.emergency", "ml.recovery.failed"}, timedelta(seconds=30))
    assert automations["crisis-warning"].trigger.expect == {"ml.breach.warning", "ml.data.rejected"}
    silent = automations["crisis-monitor-silent"].trigger
    assert (silent.posture, silent.expect, silent.within) == ("Proactive", {"ml.health.reported"}, timedelta(seconds=90))
    assert silent.after == {"ml.health.reported"}  # each report opens a window that expects the next one
    resolved = automations["crisis-resolved"].trigger
    assert resolved.expect == {"ml.recovery.succeeded"} and resolved.match.root["ml.model.emergency"] == "true"
    stopgap = automations["crisis-stopgap"].trigger  # the fallback serving keeps the ladder looking for a good version
    assert (stopgap.expect, stopgap.within, stopgap.match.root["ml.model.serving"]) == ({"ml.health.reported"}, timedelta(minutes=45), "fallback")
    assert automations["crisis-stopgap"].actions[0].parameters["severity"] == "critical"
    evidence = automations["crisis-evidence"].trigger
    assert (evidence.expect, evidence.within) == ({"ml.labels.recorded", "ml.serving.errors"}, timedelta(seconds=30))


def test_actions_run_the_right_deployment_with_templated_parameters():
    automations = by_name()
    warning = automations["crisis-warning"].actions[0]
    assert isinstance(warning, RunDeployment) and warning.deployment_id == IDS[CRISIS_RESPONSE]
    assert warning.parameters == {
        "model_name": MODEL,
        "incident_id": EVENT_ID,
        "triggering_event_id": EVENT_ID,
        "severity": "warning",
        "diagnose_only": True,
    }
    assert MODEL == "{{ event.resource['ml.model.name'] }}" and EVENT_ID == "{{ event.id | string }}"
    assert automations["crisis-critical"].actions[0].parameters["severity"] == "critical"
    assert automations["crisis-escalate-warnings"].actions[0].parameters["diagnose_only"] is False
    emergency = automations["crisis-emergency"].actions[0]
    assert emergency.deployment_id == IDS[EMERGENCY_STOP] and emergency.parameters["reason"] == "{{ event.event }}"
    assert automations["crisis-resolved"].actions[0].parameters["resolve"] is True
    assert automations["crisis-evidence"].actions[0].deployment_id == IDS[HEALTH_MONITOR]
    assert automations["crisis-evidence"].actions[0].parameters == {"model_names": [MODEL]}


def test_pages_only_when_a_block_is_named_on_the_same_triggers_blind_to_drill_models():
    from prefect.server.events.schemas.events import Resource, ResourceSpecification

    assert not any(isinstance(a, SendNotification) for automation in by_name().values() for a in automation.actions)
    block = uuid4()
    automations = by_name(notification=block)
    paging = {name for name, automation in automations.items() if any(isinstance(a, SendNotification) for a in automation.actions)}
    steps = ["crisis-warning", "crisis-critical", "crisis-escalate-warnings", "crisis-emergency", "crisis-monitor-silent"]
    assert paging == {f"{step}-page" for step in steps}
    for step in steps:  # the step itself acts for every model, its page fires the same way except for drills
        acting, page = automations[step], automations[f"{step}-page"]
        assert not any(isinstance(a, SendNotification) for a in acting.actions)
        assert (page.trigger.expect, page.trigger.within, page.trigger.threshold) == (
            acting.trigger.expect,
            acting.trigger.within,
            acting.trigger.threshold,
        )
        match = ResourceSpecification(page.trigger.match.model_dump())  # Prefect's own matcher, as the server runs it
        assert match.matches(Resource({"prefect.resource.id": "ml.model.churn", "ml.model.name": "churn"}))
        assert not match.matches(Resource({"prefect.resource.id": "ml.model.drill-latency-spike-1", "ml.model.name": "drill-latency-spike-1"}))


def test_pages_of_a_policy_that_no_longer_names_a_block_are_deleted():
    client = FakeClient()
    for automation in ladder(EscalationPolicy(), IDS, uuid4()):
        client.create_automation(automation)
    outcomes = apply_ladder(EscalationPolicy(), client)
    assert {name for name, outcome in outcomes if outcome == "deleted"} == {
        "crisis-warning-page",
        "crisis-critical-page",
        "crisis-escalate-warnings-page",
        "crisis-emergency-page",
        "crisis-monitor-silent-page",
    }
    assert sorted(automation.name for automation in client.automations.values()) == sorted(a.name for a in ladder(EscalationPolicy(), IDS))


def test_disabled_levels_are_built_disabled():
    automations = by_name(EscalationPolicy(enabled_levels=[LadderStep.CRITICAL, LadderStep.EMERGENCY]))
    assert {name for name, automation in automations.items() if automation.enabled} == {"crisis-critical", "crisis-emergency"}


def test_a_missing_deployment_is_one_line_naming_crisis_deploy():
    with pytest.raises(StackError, match=r"emergency-stop/emergency-stop.*crisis deploy"):
        ladder(EscalationPolicy(), {CRISIS_RESPONSE: uuid4(), HEALTH_MONITOR: uuid4()})


def test_a_changed_threshold_is_a_change():
    before, after = by_name(), by_name(EscalationPolicy(warnings_to_escalate=5))
    assert is_unchanged(before["crisis-escalate-warnings"], by_name()["crisis-escalate-warnings"])
    assert not is_unchanged(before["crisis-escalate-warnings"], after["crisis-escalate-warnings"])
    assert is_unchanged(before["crisis-critical"], after["crisis-critical"])


class FakeClient:
    """Just enough of a synchronous Prefect client to apply the ladder."""

    def __init__(self):
        self.automations: dict = {}

    def read_deployment_by_name(self, name):
        return type("Deployment", (), {"id": IDS[name]})

    def read_automations_by_name(self, name):
        return [automation for automation in self.automations.values() if automation.name == name]

    def create_automation(self, automation):
        from prefect.automations import Automation

        created = Automation(**automation.model_dump(), id=uuid4())
        self.automations[created.id] = created
        return created.id

    def update_automation(self, automation_id, automation):
        from prefect.automations import Automation

        self.automations[automation_id] = Automation(**automation.model_dump(), id=automation_id)

    def delete_automation(self, automation_id):
        del self.automations[automation_id]


def test_apply_creates_then_leaves_unchanged_then_updates_in_place_and_drops_duplicates():
    client = FakeClient()
    assert {outcome for _, outcome in apply_ladder(EscalationPolicy(), client)} == {"created"}
    assert {outcome for _, outcome in apply_ladder(EscalationPolicy(), client)} == {"unchanged"}
    ids = set(client.automations)
    client.create_automation(ladder(EscalationPolicy(), IDS)[0])  # a duplicate crisis-warning
    outcomes = dict(apply_ladder(EscalationPolicy(cooldown_minutes=5), client))
    assert outcomes["crisis-critical"] == "updated" and outcomes["crisis-warning"] == "unchanged"
    assert set(client.automations) == ids and len(client.automations) == len(LadderStep)


def test_a_malformed_notification_block_is_refused():
    with pytest.raises(PolicyError, match="block-type-slug"):
        apply_ladder(EscalationPolicy(notification_block="on-call"), FakeClient())


def test_the_dead_mans_switch_watches_every_model_but_drill_models_other_than_the_silent_monitor_drills():
    from prefect.server.events.schemas.events import Resource, ResourceSpecification

    match = ResourceSpecification(by_name()["crisis-monitor-silent"].trigger.match.model_dump())

    def watched(name: str) -> bool:
        return match.matches(Resource({"prefect.resource.id": f"ml.model.{name}", "ml.model.name": name}))

    assert watched("churn") and watched("drill-monitor-silent-1a2b3c")
    assert not watched("drill-poisoned-retrain-1a2b3c") and not watched("drill-concept-drift-9")


def test_a_response_whose_heartbeats_stop_is_marked_crashed_and_a_crashed_one_runs_again():
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    automations = by_name()
    responders = {f"prefect.deployment.{IDS[name]}" for name in (CRISIS_RESPONSE, EMERGENCY_STOP)}
    stalled = automations["crisis-stalled"]
    trigger = stalled.trigger
    assert (trigger.posture, trigger.after, trigger.within, trigger.for_each) == (
        "Proactive",
        {"prefect.flow-run.heartbeat"},
        timedelta(seconds=90),  # three missed heartbeats of 30 s
        {"prefect.resource.id"},
    )
    # the next heartbeat or any end keeps it quiet; a run cancelling on purpose is never marked Crashed
    assert trigger.expect == {f"prefect.flow-run.{name}" for name in ("heartbeat", "Completed", "Failed", "Crashed", "Cancelled", "Cancelling")}
    related = trigger.match_related if isinstance(trigger.match_related, list) else [trigger.match_related]
    assert set(related[0].model_dump()["prefect.resource.id"]) == responders and str(IDS[HEALTH_MONITOR]) not in str(related)
    (action,) = stalled.actions
    assert isinstance(action, ChangeFlowRunState) and action.state == StateType.CRASHED and action.force is False
    for name, deployment in (("crisis-retry-response", CRISIS_RESPONSE), ("crisis-retry-emergency", EMERGENCY_STOP)):
        retry = automations[name]
        assert retry.trigger.expect == {"prefect.flow-run.Crashed"} and retry.trigger.posture == "Reactive"
        related = retry.trigger.match_related if isinstance(retry.trigger.match_related, list) else [retry.trigger.match_related]
        assert related[0].model_dump()["prefect.resource.id"] == [f"prefect.deployment.{IDS[deployment]}"]
        assert retry.actions[0].deployment_id == IDS[deployment]


@pytest.mark.parametrize("deployment", [CRISIS_RESPONSE, EMERGENCY_STOP])
def test_a_retry_repeats_every_parameter_of_the_crashed_run_as_prefect_renders_it(deployment):
    """Prefect's own server-side rendering of the retry's parameters against a crashed run: the run's values with their
    types, the flow's defaults for what it was not given, the crashed run's id and the next attempt."""
    import inspect
    from uuid import uuid4

    from prefect.server.events.actions import RunDeployment as ServerRunDeployment
    from prefect.server.schemas.core import FlowRun
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from prefect_crisis.flows.emergency import emergency_stop
    from prefect_crisis.flows.response import crisis_response

    function = (crisis_response if deployment == CRISIS_RESPONSE else emergency_stop).fn
    name = "crisis-retry-response" if deployment == CRISIS_RESPONSE else "crisis-retry-emergency"
    parameters = dict(by_name()[name].actions[0].parameters)
    assert set(parameters) == set(inspect.signature(function).parameters)
    given = {"model_name": "churn", "incident_id": "ev-1", "triggering_event_id": "ev-1", "window_minutes": 15.5}
    crashed = FlowRun(id=uuid4(), flow_id=uuid4(), parameters={**given, "attempt": 2})
    ServerRunDeployment._upgrade_v1_templates(parameters)
    rendered = hydrate(parameters, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"flow_run": crashed}))
    assert {key: rendered[key] for key in given} == given
    assert rendered["retry_of"] == str(crashed.id) and rendered["attempt"] == 3
    defaults = {
        key: p.default for key, p in inspect.signature(function).parameters.items() if key not in given and key not in ("retry_of", "attempt")
    }
    assert {key: rendered[key] for key in defaults} == {key: getattr(value, "value", value) for key, value in defaults.items()}
    first = FlowRun(id=uuid4(), flow_id=uuid4(), parameters={"model_name": "churn"})  # a first run has no attempt parameter
    parameters = dict(by_name()[name].actions[0].parameters)
    ServerRunDeployment._upgrade_v1_templates(parameters)
    assert hydrate(parameters, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"flow_run": first}))["attempt"] == 2

"""The escalation ladder as Prefect automations, built from an EscalationPolicy.

`ladder` is pure: policy and deployment ids in, automations out, so the whole
ladder is unit-tested without a server. `apply_ladder` writes it to a server,
idempotently by name: a second apply leaves one automation of each name, and a
changed policy updates each automation in place (same id).

Every trigger matches `ml.model.*` resources and runs `for_each` model name,
so one model's breach never answers (or silences) another's; a reactive
trigger stays quiet for the rest of its `within` window after firing, which is
the cool-down of `crisis-critical` and the debounce of `crisis-evidence`.
Prefect automations cannot emit custom events, so every step acts by running a
deployment. Three steps watch the ladder's own runs instead of a model: a
response or emergency stop whose heartbeats stop (its worker was killed) is
marked Crashed (`crisis-stalled`), and a crashed one runs again with the same
parameters (`crisis-retry-response`, `crisis-retry-emergency`); the flow joins
the crashed run's incident and gives up to the emergency rung after
`RESPONSE_ATTEMPTS` runs, so a cool-down never outlives a response that did
not finish. When a notification block is named, each paging step gets a twin,
`crisis-<step>-page`, on the same trigger but blind to drill models (`drill-*`):
a recovery drill goes through the real ladder and pages nobody.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from functools import partial
from typing import Any, Literal
from uuid import UUID

from prefect.client.schemas.objects import StateType
from prefect.events.actions import ActionTypesOrUnknown, ChangeFlowRunState, RunDeployment, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from prefect_crisis.blocks.escalation_policy import EscalationPolicy, LadderStep
from prefect_crisis.core.errors import PolicyError, StackError
from prefect_crisis.core.vocabulary import (
    DRILL_PREFIX,
    EMERGENCY_LABEL,
    MODEL_NAME_LABEL,
    MODEL_RESOURCE,
    SERVING_LABEL,
    SILENT_DRILL_PREFIX,
    CrisisEvent,
    Serving,
    Severity,
    ViolationType,
)
from prefect_crisis.deployments.pools import HEARTBEAT_SECONDS, STALLED_AFTER_HEARTBEATS

CRISIS_RESPONSE = "crisis-response/crisis-response"
EMERGENCY_STOP = "emergency-stop/emergency-stop"
HEALTH_MONITOR = "health-monitor/health-monitor"
LADDER_DEPLOYMENTS = (CRISIS_RESPONSE, EMERGENCY_STOP, HEALTH_MONITOR)

# Templates the server renders from the triggering event. `| string`: a bare UUID does not render as a parameter.
MODEL = "{{ event.resource['" + MODEL_NAME_LABEL + "'] }}"
EVENT_ID = "{{ event.id | string }}"
EVENT_NAME = "{{ event.event }}"
NOTIFICATION_BODY = "{{ event.event }} for model {{ event.resource['" + MODEL_NAME_LABEL + "'] }} at {{ event.occurred }} (event {{ event.id }}): "


def model_trigger(
    events: set[CrisisEvent],
    *,
    threshold: int = 1,
    within: timedelta = timedelta(0),
    posture: Literal[Posture.Reactive, Posture.Proactive] = Posture.Reactive,
    after: Iterable[CrisisEvent] = (),
    labels: dict[str, str | list[str]] | None = None,
) -> EventTrigger:
    """A trigger on `events` about any model, counted per model (`for_each` on the model name label).

    `after`: the events that open a window; `labels`: further resource labels the events must carry (a list: any of them)."""
    return EventTrigger(
        after={event.value for event in after},
        expect={event.value for event in events},
        match={"prefect.resource.id": f"{MODEL_RESOURCE}*", **(labels or {})},
        for_each={MODEL_NAME_LABEL},
        posture=posture,
        threshold=threshold,
        within=within,
    )


# what ends a flow run's heartbeats (a run that is cancelling is not retried: it stops on purpose)
RUN_ENDED = ("Completed", "Failed", "Crashed", "Cancelled", "Cancelling")


def flow_run_trigger(
    events: Iterable[str],
    deployment_ids: Iterable[UUID],
    *,
    after: Iterable[str] = (),
    within: timedelta = timedelta(0),
    posture: Literal[Posture.Reactive, Posture.Proactive] = Posture.Reactive,
) -> EventTrigger:
    """A trigger on `prefect.flow-run.<event>` of the runs of these deployments, counted per flow run."""
    return EventTrigger(
        after={f"prefect.flow-run.{event}" for event in after},
        expect={f"prefect.flow-run.{event}" for event in events},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.id": [f"prefect.deployment.{id}" for id in deployment_ids]},
        for_each={"prefect.resource.id"},
        posture=posture,
        threshold=1,
        within=within,
    )


def jinja_literal(value: Any) -> str:
    """`value` as a Jinja literal (a flow parameter's default in a template).

    Example:
        >>> [jinja_literal(value) for value in (None, True, 60, 0.5, "churn")]
        ['none', 'true', '60', '0.5', '"churn"']
    """
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no Jinja literal for a default of type {type(value).__name__}")


def retry_parameters(function: Callable[..., Any]) -> dict[str, str]:
    """Parameters of a run that repeats the crashed run of the triggering event: each of the flow function's parameters
    as that run had it (its default when it was not given), `retry_of` the crashed run's id and `attempt` one more.
    Each value is one template expression, so it renders with its JSON type (Prefect's `| tojson` wrapping).

    Example:
        >>> def flow_function(model_name: str, window_minutes: float = 60, retry_of: str | None = None, attempt: int = 1): ...
        >>> retry_parameters(flow_function)["window_minutes"], retry_parameters(flow_function)["attempt"]
        ("{{ flow_run.parameters.get('window_minutes', 60) }}", "{{ (flow_run.parameters.get('attempt', 1) + 1) }}")
    """
    parameters = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        parameters[name] = "{{ flow_run.parameters.get(" + repr(name) + ", " + jinja_literal(default) + ") }}"
    parameters["retry_of"] = "{{ flow_run.id | string }}"
    # in parentheses: Prefect appends `| tojson` to a single expression, and a filter binds tighter than `+`
    parameters["attempt"] = "{{ (flow_run.parameters.get('attempt', 1) + 1) }}"
    return parameters


def run(deployment_ids: dict[str, UUID], deployment: str, parameters: dict[str, Any]) -> RunDeployment:
    """RunDeployment of `deployment` (flow-name/deployment-name) with templated parameters."""
    if deployment not in deployment_ids:
        raise StackError(f"deployment {deployment!r} is not on the server: run `crisis deploy` first")
    return RunDeployment(source="selected", deployment_id=deployment_ids[deployment], parameters=parameters, job_variables=None)


def response_parameters(
    severity: Severity, *, diagnose_only: bool = False, incident: bool = True, defaults: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """crisis-response parameters for the triggering event's model; the event id is the incident id unless `incident` is False;
    `defaults`: the deployment's default policy blocks."""
    parameters = {
        "model_name": MODEL,
        "severity": severity.value,
        "triggering_event_id": EVENT_ID,
        "diagnose_only": diagnose_only,
        **extra,
        **(defaults or {}),
    }
    if incident:
        parameters["incident_id"] = EVENT_ID
    return parameters


@dataclass(frozen=True)
class Notifier:
    """The SendNotification action of the ladder, when a notification block is named."""

    block_document_id: UUID | None

    def __call__(self, what: str) -> list[ActionTypesOrUnknown]:
        if self.block_document_id is None:
            return []
        return [SendNotification(block_document_id=self.block_document_id, subject=f"prefect-crisis: {what}", body=NOTIFICATION_BODY + what)]


def ladder(policy: EscalationPolicy, deployment_ids: dict[str, UUID], notification_block_id: UUID | None = None) -> list[AutomationCore]:
    """Every automation of the escalation ladder, named `crisis-<step>`, in ladder order.

    Args:
        policy: thresholds, windows and the steps to enable (the others are built disabled).
        deployment_ids: `flow-name/deployment-name` -> id, for crisis-response, emergency-stop and health-monitor.
        notification_block_id: the notification block's document id: each step that pages gets a companion
            automation `crisis-<step>-page` on the same trigger, drill models left out; None: no pages.

    Raises:
        StackError: a deployment the ladder runs is missing from `deployment_ids`.

    Example:
        >>> from uuid import uuid4
        >>> automations = ladder(EscalationPolicy(), {name: uuid4() for name in LADDER_DEPLOYMENTS})
        >>> [automation.name for automation in automations][:3]
        ['crisis-warning', 'crisis-critical', 'crisis-escalate-warnings']
        >>> automations[1].trigger.within.total_seconds(), sorted(automations[1].trigger.for_each)
        (1800.0, ['ml.model.name'])
    """
    notify = Notifier(notification_block_id)
    # the deployment's default policy blocks, for models without their own (a model's own always binds first: bind_policy)
    defaults = {"rollback_policy_block": policy.rollback_policy} if policy.rollback_policy else {}
    emergency_events = {CrisisEvent.BREACH_EMERGENCY, CrisisEvent.RECOVERY_FAILED}
    # the scheduled and the evidence-triggered sweep may report one breach in the same second: one stop per sweep interval
    # (the flow itself joins the model's open incident after that, so a breach that persists stays one incident)
    emergency_debounce = timedelta(seconds=policy.monitor_interval_seconds)
    # the ladder's own runs: lost with their worker -> Crashed -> run again (the flows join the incident and count attempts)
    from prefect_crisis.flows.emergency import emergency_stop
    from prefect_crisis.flows.response import crisis_response
    from prefect_crisis.tasks.response.episodes import RESPONSE_ATTEMPTS

    stalled = timedelta(seconds=HEARTBEAT_SECONDS * STALLED_AFTER_HEARTBEATS)
    responders = [deployment_ids[name] for name in (CRISIS_RESPONSE, EMERGENCY_STOP) if name in deployment_ids]
    # step -> (description, its trigger (given further label matches), its actions, what its page says or None)
    steps: dict[LadderStep, tuple[str, Callable[..., EventTrigger], list[ActionTypesOrUnknown], str | None]] = {
        LadderStep.WARNING: (
            "A warning breach or a rejected batch: diagnose the model (crisis-response, diagnose_only) without acting. A rejected "
            "batch blocks training on that batch only (the training flow refuses it); it never touches serving.",
            partial(model_trigger, {CrisisEvent.BREACH_WARNING, CrisisEvent.DATA_REJECTED}),
            [run(deployment_ids, CRISIS_RESPONSE, response_parameters(Severity.WARNING, diagnose_only=True, defaults=defaults))],
            "warning: diagnosing",
        ),
        LadderStep.CRITICAL: (
            f"A critical breach: the full response (diagnose, decide rollback, recover, verify). Cool-down: no second response "
            f"for the same model within {policy.cooldown_minutes:g} minutes.",
            partial(model_trigger, {CrisisEvent.BREACH_CRITICAL}, within=policy.cooldown),
            [run(deployment_ids, CRISIS_RESPONSE, response_parameters(Severity.CRITICAL, defaults=defaults))],
            "critical: responding",
        ),
        LadderStep.ESCALATE_WARNINGS: (
            f"{policy.warnings_to_escalate} warning breaches of one model within {policy.escalation_window_minutes:g} minutes: "
            "escalate to the full (critical) response.",
            partial(model_trigger, {CrisisEvent.BREACH_WARNING}, threshold=policy.warnings_to_escalate, within=policy.escalation_window),
            [run(deployment_ids, CRISIS_RESPONSE, response_parameters(Severity.CRITICAL, defaults=defaults))],
            "repeated warnings: escalated to critical",
        ),
        LadderStep.EMERGENCY: (
            "An emergency breach or a failed recovery: emergency stop (stop flag, cancel and pause training) and the critical "
            "decision for serving without waiting for more samples: roll back to a good version, the fallback only when there "
            f"is none or it is measured better. At most one stop per model per {emergency_debounce.total_seconds():g} s; later "
            "breaches join the open incident.",
            partial(model_trigger, emergency_events, within=emergency_debounce),
            [
                run(
                    deployment_ids,
                    EMERGENCY_STOP,
                    {"model_name": MODEL, "incident_id": EVENT_ID, "triggering_event_id": EVENT_ID, "reason": EVENT_NAME, **defaults},
                )
            ],
            "EMERGENCY: stopping training and repairing serving",
        ),
        LadderStep.RESOLVED: (
            "Recovery succeeded while the model's emergency stop is in force: undo the stop (lower the stop flag, resume the "
            "training schedules it paused).",
            lambda labels=None: model_trigger({CrisisEvent.RECOVERY_SUCCEEDED}, labels={EMERGENCY_LABEL: "true", **(labels or {})}),
            [
                run(
                    deployment_ids,
                    EMERGENCY_STOP,
                    {
                        "model_name": MODEL,
                        "incident_id": EVENT_ID,
                        "triggering_event_id": EVENT_ID,
                        "reason": EVENT_NAME,
                        "resolve": True,
                    },
                )
            ],
            None,
        ),
        LadderStep.MONITOR_SILENT: (
            f"Dead man's switch: no ml.health.reported for a model within {policy.dead_man_window.total_seconds():g} s "
            f"({policy.dead_man_intervals} monitor intervals): diagnose it as a warning. Only models reported at least once are watched.",
            # Prefect's heartbeat pattern: each report opens a window that expects the next one; none -> fire.
            # Drill models are left out but the silent-monitor drill's: the others go quiet for good when their drill ends.
            lambda labels=None: model_trigger(
                {CrisisEvent.HEALTH_REPORTED},
                within=policy.dead_man_window,
                posture=Posture.Proactive,
                after={CrisisEvent.HEALTH_REPORTED},
                labels=labels if labels is not None else {MODEL_NAME_LABEL: [f"!{DRILL_PREFIX}*", f"{SILENT_DRILL_PREFIX}*"]},
            ),
            # the firing's event is the model's last health report, not news: each run opens its own incident
            [
                run(
                    deployment_ids,
                    CRISIS_RESPONSE,
                    response_parameters(
                        Severity.WARNING, diagnose_only=True, incident=False, violation=ViolationType.ERRORS.value, defaults=defaults
                    ),
                )
            ],
            "the health monitor went silent for this model",
        ),
        LadderStep.STOPGAP: (
            f"The fallback serves (a sweep reports ml.model.serving=fallback): the incident stays open and the full response looks "
            f"again for a version measured healthy on the window, at most once per {policy.cooldown_minutes:g} minutes.",
            lambda labels=None: model_trigger(
                {CrisisEvent.HEALTH_REPORTED}, within=policy.cooldown, labels={SERVING_LABEL: Serving.FALLBACK.value, **(labels or {})}
            ),
            [run(deployment_ids, CRISIS_RESPONSE, response_parameters(Severity.CRITICAL, defaults=defaults))],
            None,
        ),
        LadderStep.EVIDENCE: (
            "New labels or a burst of serving errors: run the health monitor for that model now, at most once per monitor interval.",
            partial(
                model_trigger, {CrisisEvent.LABELS_RECORDED, CrisisEvent.SERVING_ERRORS}, within=timedelta(seconds=policy.monitor_interval_seconds)
            ),
            [run(deployment_ids, HEALTH_MONITOR, {"model_names": [MODEL]})],
            None,
        ),
        LadderStep.STALLED: (
            f"A crisis response or emergency stop sent no heartbeat for {stalled.total_seconds():g} s ({STALLED_AFTER_HEARTBEATS} "
            f"heartbeats of {HEARTBEAT_SECONDS} s) and did not end: its worker died with it. Mark the run Crashed (not forced: a run "
            "that ended meanwhile keeps its state), so crisis-retry-* runs it again.",
            lambda: flow_run_trigger((*RUN_ENDED, "heartbeat"), responders, after={"heartbeat"}, within=stalled, posture=Posture.Proactive),
            [
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    name="Crashed",
                    force=False,
                    message=f"no heartbeat for {stalled.total_seconds():g} s: its worker is gone",
                )
            ],
            None,
        ),
        LadderStep.RETRY_RESPONSE: (
            f"A crisis response crashed (its worker died): run it again with the same parameters; it joins the crashed run's "
            f"incident, and after {RESPONSE_ATTEMPTS} runs hands the incident to the emergency step (ml.recovery.failed).",
            lambda: flow_run_trigger({"Crashed"}, [deployment_ids[CRISIS_RESPONSE]]),
            [run(deployment_ids, CRISIS_RESPONSE, retry_parameters(crisis_response.fn))],
            None,
        ),
        LadderStep.RETRY_EMERGENCY: (
            f"An emergency stop crashed (its worker died): run it again with the same parameters, at most {RESPONSE_ATTEMPTS} runs.",
            lambda: flow_run_trigger({"Crashed"}, [deployment_ids[EMERGENCY_STOP]]),
            [run(deployment_ids, EMERGENCY_STOP, retry_parameters(emergency_stop.fn))],
            None,
        ),
    }
    enabled = set(policy.enabled_levels)
    automations = [
        AutomationCore(name=step.automation_name, description=description, enabled=step in enabled, trigger=trigger(), actions=actions)
        for step, (description, trigger, actions, _) in steps.items()
    ]
    if notification_block_id is not None:  # pages: the same triggers, a drill's models left out
        automations += [
            AutomationCore(
                name=page_name(step),
                description=f"Page for {step.automation_name} (drill models, {DRILL_PREFIX}*, page nobody).",
                enabled=step in enabled,
                trigger=trigger(labels={MODEL_NAME_LABEL: f"!{DRILL_PREFIX}*"}),
                actions=notify(what),
            )
            for step, (_, trigger, _, what) in steps.items()
            if what is not None
        ]
    return automations


def page_name(step: LadderStep) -> str:
    """The name of a step's page automation.

    Example:
        >>> page_name(LadderStep.CRITICAL)
        'crisis-critical-page'
    """
    return f"{step.automation_name}-page"


COMPARED = {"name", "description", "enabled", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"}


def is_unchanged(desired: AutomationCore, existing: AutomationCore) -> bool:
    """True when the server's automation already is the desired one (ids and server-side fields aside)."""
    return AutomationCore.model_validate(existing.model_dump(include=COMPARED)) == AutomationCore.model_validate(desired.model_dump(include=COMPARED))


def resolve_deployment_ids(client: Any, names: tuple[str, ...] = LADDER_DEPLOYMENTS) -> dict[str, UUID]:
    """`flow-name/deployment-name` -> id, read from the server.

    Raises:
        StackError: a deployment is missing (one line naming `crisis deploy`).
    """
    from prefect.exceptions import ObjectNotFound

    found, missing = {}, []
    for name in names:
        try:
            found[name] = client.read_deployment_by_name(name).id
        except ObjectNotFound:
            missing.append(name)
    if missing:
        raise StackError(f"deployment(s) {', '.join(missing)} not on the server: run `crisis deploy` to create them")
    return found


def resolve_notification_block(client: Any, reference: str | None) -> UUID | None:
    """The document id of a notification block named `<block-type-slug>/<name>`.

    Raises:
        PolicyError: the reference is malformed or names no saved block.
    """
    if not reference:
        return None
    from prefect.exceptions import ObjectNotFound

    slug, _, name = reference.partition("/")
    if not slug or not name:
        raise PolicyError(f"notification_block {reference!r} must read `<block-type-slug>/<name>`, e.g. `slack-webhook/on-call`")
    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        raise PolicyError(f"notification block {reference!r} is not saved on the server: save it, or empty notification_block") from None


def check_named_block(client: Any, field: str, name: str | None) -> None:
    """A policy block the escalation policy names is saved on the server.

    Raises:
        PolicyError: it is not (one line naming the field and the block type).
    """
    if not name:
        return
    from prefect.exceptions import ObjectNotFound

    slug = "crisis-" + field.replace("_", "-")
    try:
        client.read_block_document_by_name(name=name, block_type_slug=slug)
    except ObjectNotFound:
        raise PolicyError(f"the escalation policy's {field} names {slug} block {name!r}, which is not saved: save it, or empty {field}") from None


def apply_ladder(policy: EscalationPolicy, client: Any) -> list[tuple[str, str]]:
    """Create or update every automation of the ladder by name; extra copies of a name are deleted.

    Args:
        policy: the escalation policy.
        client: a synchronous Prefect client (`get_client(sync_client=True)`).

    Returns:
        (automation name, "created" | "updated" | "unchanged" | "deleted") in ladder order, stale pages first.

    Raises:
        StackError: a deployment the ladder runs is missing.
        PolicyError: the notification block cannot be found.
    """
    for field in ("rollback_policy", "monitoring_policy", "fallback_policy"):
        check_named_block(client, field, getattr(policy, field))
    automations = ladder(policy, resolve_deployment_ids(client), resolve_notification_block(client, policy.notification_block))
    outcomes = []
    wanted = {automation.name for automation in automations}
    for step in LadderStep:  # pages of an earlier policy that named a notification block
        if page_name(step) not in wanted:
            for stale in client.read_automations_by_name(page_name(step)):
                client.delete_automation(stale.id)
                outcomes.append((page_name(step), "deleted"))
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            client.create_automation(automation)
            outcomes.append((automation.name, "created"))
            continue
        keep, *duplicates = existing
        for duplicate in duplicates:
            client.delete_automation(duplicate.id)
        if is_unchanged(automation, keep):
            outcomes.append((automation.name, "unchanged"))
        else:
            client.update_automation(keep.id, automation)
            outcomes.append((automation.name, "updated"))
    return outcomes

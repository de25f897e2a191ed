"""emergency_stop against a real Prefect server and MLflow store: the flag goes
up, the model's running training run is cancelled and its training deployment
paused (another model's are left alone), serving moves to the fallback; a
rerun of the incident changes nothing; resolve undoes flag and pause."""

from __future__ import annotations

import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Running

from prefect_crisis.blocks import ModelRegistry
from prefect_crisis.deployments.inspect import read_crisis_events
from prefect_crisis.flows.emergency import emergency_stop
from prefect_crisis.tasks.response.emergency import TRAINING_FLOW, EmergencyRecord
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, read_stop_flag
from tests.helpers import poisoned_after_stable, register, wait_for

pytestmark = pytest.mark.usefixtures("mlflow_tracking_uri", "crisis_home")


def training_deployment(client, model: str):
    """A continuous-training deployment for `model`, and a Running flow run of it."""
    flow_id = client.create_flow_from_name(TRAINING_FLOW)
    deployment_id = client.create_deployment(flow_id=flow_id, name=f"train-{model}", parameters={"model_name": model})
    run = client.create_flow_run_from_deployment(deployment_id, parameters={"model_name": model})
    client.set_flow_run_state(run.id, Running(), force=True)
    return deployment_id, run.id


def test_emergency_stop_stops_training_rolls_back_to_the_stable_version_and_resolve_undoes_it():
    model, bystander = f"emergency-{uuid.uuid4().hex[:8]}", f"bystander-{uuid.uuid4().hex[:8]}"
    registry, good, poisoned = poisoned_after_stable(model, seeds=(1, 2))
    simple = register(registry, False, seed=3)
    registry.move_alias(registry.fallback_alias, simple, "the simple model")
    with get_client(sync_client=True) as client:
        deployment_id, run_id = training_deployment(client, model)
        other_deployment, other_run = training_deployment(client, bystander)

    state = emergency_stop(model_name=model, incident_id="inc-e1", reason="ml.recovery.failed", return_state=True)

    assert state.is_completed() and state.name == "Stopped", state.message
    assert read_stop_flag(model) == "ml.recovery.failed" and read_stop_flag(bystander) is None
    # rollback before fallback: a version served stably, so the emergency goes back to it, not to the fallback
    assert ModelRegistry(model_name=model).champion().version == good
    last = ModelRegistry(model_name=model).audit_trail("champion")[-1]
    assert (last.action, last.from_version, last.to_version, last.incident) == ("rollback", poisoned, good, "inc-e1")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.type == StateType.CANCELLING
        assert client.read_flow_run(other_run).state.type == StateType.RUNNING
        assert client.read_deployment(deployment_id).paused is True
        assert client.read_deployment(other_deployment).paused is False
    assert EmergencyRecord.read(model).paused_deployments == [str(deployment_id)]
    events = wait_for(lambda: read_crisis_events(model), lambda found: any(e.event == "ml.emergency.stopped" for e in found))
    stopped = next(e for e in events if e.event == "ml.emergency.stopped")
    assert stopped.payload["steps"]["cancel-training"]["changed"] == [str(run_id)]
    assert any(r.id == "ml.incident.inc-e1" for r in stopped.related)

    again = emergency_stop(model_name=model, incident_id="inc-e1", reason="ml.recovery.failed", return_state=True)
    assert again.is_completed(), again.message
    assert "cancelled 0 training run(s)" in again.message and f"v{good} keeps serving" in again.message
    assert EmergencyRecord.read(model).paused_deployments == [str(deployment_id)]  # the pause of the first stop is still remembered
    opened = wait_for(lambda: read_crisis_events(model), lambda found: sum(e.event == "ml.emergency.stopped" for e in found) >= 2)
    assert sum(e.event == "ml.incident.opened" for e in opened) == 1  # the rerun joined the incident

    resolved = emergency_stop(model_name=model, incident_id="inc-r1", reason="ml.recovery.succeeded", resolve=True, return_state=True)
    assert resolved.is_completed() and resolved.name == "Resolved", resolved.message
    assert read_stop_flag(model) is None and EmergencyRecord.read(model) is None
    with get_client(sync_client=True) as client:
        assert client.read_deployment(deployment_id).paused is False
    assert ModelRegistry(model_name=model).champion().version == good  # the champion stays where recovery put it
    nothing = emergency_stop(model_name=model, resolve=True, return_state=True)
    assert nothing.name == "Nothing to resolve"


def test_a_failing_step_fails_the_run_and_the_others_still_run(monkeypatch):
    model = f"emergency-{uuid.uuid4().hex[:8]}"
    registry, good, _poisoned = poisoned_after_stable(model, seeds=(1, 2))
    simple = register(registry, False, seed=3)
    registry.move_alias(registry.fallback_alias, simple, "the simple model")
    with get_client(sync_client=True) as client:
        deployment_id, _ = training_deployment(client, model)

    from prefect_crisis.tasks.response import emergency

    def refuse(*args, **kwargs):
        raise RuntimeError("the server refused the cancel\nsecond line")

    monkeypatch.setattr(emergency.cancel_training_runs_task, "fn", refuse)
    try:
        state = emergency_stop(model_name=model, incident_id="inc-e2", reason="ml.breach.emergency", return_state=True)
        assert state.is_failed()
        assert state.message == f"emergency stop of {model!r} incomplete: cancel-training (failed: the server refused the cancel)"
        assert read_stop_flag(model) == "ml.breach.emergency"
        assert ModelRegistry(model_name=model).champion().version == good
        with get_client(sync_client=True) as client:
            assert client.read_deployment(deployment_id).paused is True
    finally:
        clear_stop_flag(model)


def test_an_emergency_stop_past_its_attempts_gives_up_without_acting():
    from prefect_crisis.tasks.response.episodes import RESPONSE_ATTEMPTS

    model = f"emergency-{uuid.uuid4().hex[:8]}"
    registry, _good, poisoned = poisoned_after_stable(model, seeds=(1, 2))
    state = emergency_stop(model_name=model, incident_id="ev-3", retry_of=str(uuid.uuid4()), attempt=RESPONSE_ATTEMPTS + 1, return_state=True)
    assert state.is_failed() and state.name == "Gave up" and f"{RESPONSE_ATTEMPTS} times" in state.message
    assert read_stop_flag(model) is None and registry.champion().version == poisoned

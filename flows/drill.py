"""Recovery drills: faults injected into the running stack, the automated response
awaited, the end state checked, and the times measured.

A scenario is a value (`Scenario`): setup, inject, expect, clean up, time limit.
Each iteration runs on a fresh drill model (`drill-<scenario>-<tag>`), so
iterations never meet each other's versions, cool-downs or incidents, and every
incident the ladder opens for it is marked as a drill (and pages nobody).

Nothing here repairs anything: the drill breaks a model, a batch or a served
primary the way the world would, then waits for the stack (`crisis up --worker`,
`crisis deploy`: the automations, the workers, the MLflow registry, the
inference log) to notice and act, and reads back from Prefect events and the
MLflow audit when it noticed (detect), when the harm stopped reaching clients
(mitigate) and when the model was whole again (recover). Every time counts from
the moment the evidence existed: the labels recorded, the batch sent, the fault
switched on.

A drill passes on its end state (`EndState`), the same for every scenario: what
serves after the response scores at least the pre-crisis version's accuracy on
fresh labelled rows, minus `END_STATE_TOLERANCE`; the episode opened the
incidents it should (one, unless the scenario says why not); no row was lost.
The `real-*` scenarios run real models on the bundled real data sets
(tasks/drills/real_models.py), where a wrong repair costs far more than the tolerance.
"""

from __future__ import annotations

import base64
import io
import json
import math
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events.worker import EventsWorker

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.fallback_policy import FallbackPolicy
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import CrisisError, IncidentError
from prefect_crisis.core.paths import artifact_key, crisis_home, default_storage
from prefect_crisis.core.timeline import Timeline, TimelineEvent, model_resource, prefect_sink, related_resources
from prefect_crisis.core.vocabulary import INCIDENT_RESOURCE, AliasAction, CrisisEvent, DecisionKind, Severity, TagKey
from prefect_crisis.flows.validate_batch import validate_batch
from prefect_crisis.tasks.drills.datasets import LABEL
from prefect_crisis.tasks.drills.injections import (
    END_STATE_TOLERANCE, FRESH_ROWS, PROGRESS, SCENARIO_NAMES, Served, applied_moves, champion_moves, concept_drifted, corrupt_real,
    drill_model_name, first_event, flow_run_processes, incidents_opened, inject_into_primary, model_events, positives_flipped, register_synthetic,
    scenario_names, seconds, serve_rows, stable_champion, training_runs, wait_until,
)
from prefect_crisis.tasks.response.emergency import EmergencyRecord
from prefect_crisis.tasks.response.report import wait_for_incident_end
from prefect_crisis.tasks.validation.quarantine import storage_uri, write_parquet
from prefect_crisis.tasks.drills.real_models import build_real_stack, mislabelled, release_poisoned, release_retrained, serving_accuracy, version_accuracy
from prefect_crisis.tasks.serving.router import FallbackRouter
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, read_stop_flag
from prefect_crisis.tasks.drills.synthetic import make_batch

DRILL_CONTRACT = "drill-stream"
TIMELINE_STEPS = ("incident.opened", "decision.taken", "model.rolled-back", "recovery.succeeded")
SERVED_ROWS = 300


@dataclass
class Drill:
    """One iteration's state: what setup made, when the fault went in, what the checks found."""

    scenario: str
    iteration: int
    seed: int
    model: str
    limit: float
    registry: ModelRegistry | None = None
    injected_at: datetime | None = None
    cleared_at: datetime | None = None
    detect_s: float | None = None
    mitigate_s: float | None = None
    recover_s: float | None = None
    incident: str | None = None
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def require(self, condition: Any, failure: str) -> bool:
        """Record `failure` unless `condition` holds; returns whether it held."""
        if not condition:
            self.failures.append(failure)
        return bool(condition)

    def inject_now(self) -> datetime:
        self.injected_at = datetime.now(timezone.utc)
        return self.injected_at

    def since(self, at: datetime | None) -> float | None:
        return seconds(self.injected_at, at) if self.injected_at else None


@dataclass(frozen=True)
class EndState:
    """What a drill's success is judged on once the stack has responded, the same for every scenario:

    - accuracy: what `@champion` serves scores, on `fresh(drill)` labelled rows the response never saw, at least the
      pre-crisis version's accuracy on the same rows minus END_STATE_TOLERANCE (`pre_accuracy`, `end_accuracy`);
      `fresh` None: the fault says nothing about accuracy, and `unmeasured` says why;
    - incidents: the `ml.incident.opened` of the drill model after the injection number `incidents` (fewest, most):
      one per episode unless `why` says otherwise; `warnings_only`: each is a warning;
    - nothing lost: the scenario's `rows_lost` fact, where it sends rows, is 0.
    """

    fresh: Callable[["Drill"], pd.DataFrame] | None = None
    unmeasured: str = ""
    incidents: tuple[int, int] = (1, 1)
    warnings_only: bool = False
    why: str = ""


@dataclass(frozen=True)
class Scenario:
    """A drill: `setup` builds the model, `inject` breaks it (and stamps the time), `expect` waits for the stack's
    response within `limit` seconds and records what held, `end` judges where it left the model, `cleanup` leaves
    nothing in force."""

    name: str
    summary: str
    setup: Callable[[Drill], None]
    inject: Callable[[Drill], None]
    expect: Callable[[Drill], None]
    cleanup: Callable[[Drill], None]
    limit: float = 120.0
    end: EndState = EndState()


@dataclass(frozen=True)
class DrillResult:
    scenario: str
    iteration: int
    seed: int
    model: str
    passed: bool
    detect_s: float | None
    mitigate_s: float | None
    recover_s: float | None
    incident: str | None
    failures: tuple[str, ...]
    facts: dict[str, Any]
    wall_s: float


# -- shared steps ------------------------------------------------------------------------

def _no_cleanup(drill: Drill) -> None:
    return None


def _lift_emergency(drill: Drill) -> None:
    """Leave no stop in force: a drill's emergency is resolved by the drill, as an operator would after it."""
    if EmergencyRecord.read(drill.model) is not None:
        EmergencyRecord.clear(drill.model)
    clear_stop_flag(drill.model)


def _close_router(drill: Drill) -> None:
    router = drill.state.pop("router", None)
    if router is not None:
        router.close()


def _serve_and_label(drill: Drill, batch: pd.DataFrame, name: str, emit: bool = True) -> Served:
    """Serve `batch` (features and their true `label`: synthetic rows or a real data set's) through the champion into
    the stack's inference log, then record the true labels (with `emit`, `ml.labels.recorded`: the evidence the ladder
    acts on). Stamps the injection time at the labels."""
    log = InferenceLog()
    router = FallbackRouter(drill.registry, log=log.writer(), close_log=True).start(refresh_in_background=False)
    try:
        served = serve_rows(router, batch, prefix=f"{drill.model}-{name}")
    finally:
        router.close()
    drill.require(served.rows_lost == 0, f"{served.failed_requests} requests and {served.rows_failed} rows failed to the client")
    drill.inject_now()
    log.record_labels(served.keys, served.labels, emit=emit)
    if emit:
        EventsWorker.drain_all()
    drill.facts.update(rows_served=served.rows_sent, rows_lost=drill.facts.get("rows_lost", 0) + served.rows_lost)
    return served


def _synthetic_rows(seed: int, rows: int = SERVED_ROWS, drift: bool = False) -> pd.DataFrame:
    batch = make_batch(rows, seed=seed)
    return concept_drifted(batch, seed) if drift else batch


def _ladder_runs(model: str, since: datetime, deployment: str = "crisis-response") -> list:
    """The runs of a ladder deployment (crisis-response, emergency-stop) for `model` created since `since`, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterExpectedStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since - timedelta(seconds=5))),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200,
        )
    return [run for run in runs if run.parameters.get("model_name") == model]


def _response_runs(model: str, since: datetime) -> list:
    """The crisis-response runs of `model` created since `since` (newest first: a busy stack has many)."""
    return _ladder_runs(model, since)


def _incident_of(event) -> str | None:
    """The incident an event belongs to (its related `ml.incident.<id>` resource)."""
    return next((r.id.removeprefix(INCIDENT_RESOURCE) for r in event.related if r.role == "incident"), None)


INCIDENTS_SETTLE = 20.0  # seconds for the incidents a drill saw to reach the server's event store


def judge_end_state(drill: Drill, end: EndState) -> None:
    """Record and check the end state (`EndState`): `pre_accuracy`, `end_accuracy` and `incidents` in the facts."""
    if not drill.require(drill.injected_at, "the fault was never injected: no end state to judge"):
        return
    fewest, most = end.incidents

    def counted():  # the server persists events in batches: wait for the incidents the drill already knows of
        opened = incidents_opened(drill.model, drill.injected_at)
        known = drill.incident is None or drill.incident in {_incident_of(event) for event in opened}
        return (opened,) if len(opened) >= fewest and known else None  # a tuple: none opened is an answer too

    EventsWorker.drain_all()
    settled = wait_until(counted, INCIDENTS_SETTLE)
    opened = settled[0] if settled else incidents_opened(drill.model, drill.injected_at)
    drill.facts["incidents"] = len(opened)
    expected = str(fewest) if fewest == most else f"{fewest} to {most}"
    drill.require(fewest <= len(opened) <= most,
                  f"{len(opened)} incidents opened for the episode, expected {expected}" + (f" ({end.why})" if end.why else ""))
    if end.warnings_only:
        severities = sorted({str(event.payload.get("severity")) for event in opened} - {Severity.WARNING.value})
        drill.require(not severities, f"a {', '.join(severities)} incident opened: this fault warns at most")
        drill.facts["warns_at_most"] = True
    if end.why:
        drill.facts["incidents_expected"] = f"{expected}: {end.why}"
    if end.fresh is None:
        drill.facts["accuracy"] = f"not measured: {end.unmeasured}"
    else:
        fresh = end.fresh(drill)
        before = version_accuracy(drill.registry, drill.state["good"], fresh)
        version, after = serving_accuracy(drill.registry, fresh)
        drill.facts.update(pre_accuracy=round(before, 4), end_accuracy=round(after, 4), pre_version=drill.state["good"], end_version=version,
                           fresh_rows=len(fresh))
        drill.require(after >= before - END_STATE_TOLERANCE,
                      f"the end state serves v{version} at {after:.3f} accuracy on {len(fresh)} fresh rows, below the pre-crisis "
                      f"v{drill.state['good']}'s {before:.3f} by more than {END_STATE_TOLERANCE}")
    if "rows_lost" in drill.facts:
        drill.require(drill.facts["rows_lost"] == 0, f"{drill.facts['rows_lost']} rows lost: not kept, quarantined or answered")


def _fresh_rows(drill: Drill) -> pd.DataFrame:
    return _synthetic_rows(drill.seed + 900, FRESH_ROWS)


def _fresh_drifted_rows(drill: Drill) -> pd.DataFrame:
    return _synthetic_rows(drill.seed + 900, FRESH_ROWS, drift=True)


def _fresh_real_rows(drill: Drill) -> pd.DataFrame:
    return drill.state["stack"].fresh()


def _check_timeline(drill: Drill, incident: str | None, steps: tuple[str, ...] = TIMELINE_STEPS) -> None:
    """The incident's timeline is complete (its steps reached the server) and it is marked as a drill."""
    if not drill.require(incident, "no incident recorded the response"):
        return
    drill.incident = incident
    try:
        report = wait_for_incident_end(incident, timeout=20)  # its recovery outcome on the server: the steps before it are too
    except IncidentError as error:
        drill.failures.append(f"incident {incident}: {error}")
        return
    seen = {step.step for step in report.steps}
    missing = [step for step in steps if step not in seen]
    drill.require(not missing, f"incident {incident}'s timeline lacks {', '.join(missing)}")
    drill.require(report.incident.get("drill"), f"incident {incident} is not marked as a drill")


# -- 1 corrupted batch -----------------------------------------------------------------------

def _corrupted_setup(drill: Drill) -> None:
    drill.registry, drill.state["good"] = stable_champion(drill.model, drill.seed)
    drill.state["fallback"] = drill.registry.version_by_alias(drill.registry.fallback_alias).version
    _save_drill_contract(drill)


def _save_drill_contract(drill: Drill, name: str = DRILL_CONTRACT, keyed: bool = True) -> None:
    """A DataContract block for the drill (`drill-stream`: keyed by event_id), learnt from a clean synthetic reference."""
    reference = make_batch(2_000, seed=10_000)
    reference = _keyed(reference) if keyed else reference
    uri = storage_uri(default_storage(), drill.model, "reference.parquet")
    write_parquet(reference, uri)
    DataContract.from_reference(reference, key_column="event_id" if keyed else None, label_column="label", reference_uri=uri,
                                max_quarantine_ratio=0.1).save(name, overwrite=True)


def _keyed(batch, start: int = 0):
    batch = batch.copy()
    batch.insert(0, "event_id", [f"e{start + i:07d}" for i in range(len(batch))])
    return batch


def corrupt(batch, rows: int, seed: int):
    """Break `rows` rows of the batch, in equal parts: a missing value, inf, a value far out of range, text in a
    numeric column, a duplicated key. Returns the broken batch (text makes its column a text column)."""
    rng = np.random.default_rng(seed)
    broken = batch.astype({"f04": object}).copy()
    chosen = rng.choice(len(batch) - 1, size=rows, replace=False) + 1
    for number, row in enumerate(chosen):
        kind = number % 5
        if kind == 0:
            broken.iat[row, broken.columns.get_loc("f01")] = np.nan
        elif kind == 1:
            broken.iat[row, broken.columns.get_loc("f02")] = np.inf
        elif kind == 2:
            broken.iat[row, broken.columns.get_loc("f03")] = 1e6
        elif kind == 3:
            broken.iat[row, broken.columns.get_loc("f04")] = "n/a"
        else:
            broken.iat[row, broken.columns.get_loc("event_id")] = broken.iat[row - 1, broken.columns.get_loc("event_id")]
    return broken


def _corrupted_inject(drill: Drill) -> None:
    storage = default_storage()
    batches = {}
    for name, rows_broken, seed in (("light", 10, drill.seed + 1), ("heavy", 70, drill.seed + 2)):
        batch = corrupt(_keyed(make_batch(200, seed=seed), start=seed * 1_000), rows_broken, seed)
        uri = storage_uri(storage, drill.model, f"drill-{name}-{drill.iteration}.parquet")
        write_parquet(batch, uri)
        batches[name] = (uri, len(batch))
    light = validate_batch(model_name=drill.model, contract_block=DRILL_CONTRACT, batch_path=batches["light"][0], storage=storage)
    drill.inject_now()  # the heavy batch: 35% broken, over the contract's 10%: rejected whole
    heavy = validate_batch(model_name=drill.model, contract_block=DRILL_CONTRACT, batch_path=batches["heavy"][0], storage=storage)
    drill.state.update(light=light, heavy=heavy, sent={name: rows for name, (_, rows) in batches.items()})


# A value far out of range: an `outlier` past a contract's learnt tolerance bands, `out_of_range` past a hard limit.
FAR_OUT = {"outlier", "out_of_range"}


def _corrupted_expect(drill: Drill) -> None:
    light, heavy, sent = drill.state["light"], drill.state["heavy"], drill.state["sent"]
    for name, report in (("light", light), ("heavy", heavy)):
        drill.require(report.kept + report.quarantined == sent[name],
                      f"{name} batch: kept {report.kept} + quarantined {report.quarantined} != {sent[name]} rows sent")
    kinds = set(light.check_counts)
    wanted = {"null", "not_finite", "wrong_type", "duplicate_key"}
    drill.require(wanted <= kinds and kinds & FAR_OUT, f"light batch: quarantine reasons {sorted(kinds)} miss {sorted(wanted - kinds) or 'outlier'}")
    drill.require(light.verdict.value != "reject" and light.kept >= 180, f"light batch (5% broken): {light.verdict.value}, kept {light.kept}")
    drill.facts.update(light_quarantined=light.quarantined, heavy_quarantined=heavy.quarantined,
                       rows_lost=sum(sent[name] - report.kept - report.quarantined for name, report in (("light", light), ("heavy", heavy))))
    _rejected_expect(drill, heavy, "heavy batch (35% broken)")


WARNING_WAIT = 60.0  # seconds a rejected batch's warning response has to end before the drill judges what it left


def _rejected_expect(drill: Drill, report, what: str) -> None:
    """A batch over the contract's quarantine limit is rejected: quarantined whole (`ml.data.rejected`), so training
    never sees a row of it; it may warn (the warning step diagnoses the model and acts on nothing) and never reaches
    serving: no emergency stop, no stop flag, no move of the champion. Detect and mitigate: the rejection reaching the
    server (the batch is kept from training from then on)."""
    drill.require(report.verdict.value == "reject" and report.kept == 0, f"{what}: {report.verdict.value}, kept {report.kept}")
    rejected = wait_until(lambda: first_event(drill.model, [CrisisEvent.DATA_REJECTED], drill.injected_at), 15)
    if drill.require(rejected, "no ml.data.rejected event reached the server"):
        drill.detect_s = drill.mitigate_s = drill.since(rejected.occurred)
    warned = wait_until(lambda: [run for run in _ladder_runs(drill.model, drill.injected_at) if run.state and run.state.is_final()],
                        min(drill.limit, WARNING_WAIT), every=0.5)
    drill.facts["warning"] = warned[0].state.name if warned else f"none within {min(drill.limit, WARNING_WAIT):g} s"
    for run in warned or []:
        drill.require((run.parameters.get("severity"), run.parameters.get("diagnose_only")) == (Severity.WARNING.value, True),
                      f"the rejected batch started a {run.parameters.get('severity')} response, not a diagnose-only warning")
        drill.incident = drill.incident or run.parameters.get("incident_id")
    registry, good = drill.registry, drill.state["good"]
    stops = _ladder_runs(drill.model, drill.injected_at, "emergency-stop")
    drill.require(not stops, f"the rejected batch started {len(stops)} emergency stop(s): a rejected batch never reaches serving")
    moves = champion_moves(registry, drill.injected_at)
    drill.require(not moves, "the rejected batch moved the champion: " + "; ".join(f"{m.action} v{m.from_version} -> v{m.to_version}" for m in moves))
    champion = registry.champion()
    drill.require(champion is not None and champion.version == good, f"the champion is v{champion.version if champion else None}, not v{good}")
    flag = read_stop_flag(drill.model)
    drill.require(flag is None, f"training's stop flag was raised over a rejected batch ({flag})")
    drill.facts.update(stop_flag=flag is not None, kept_for_training=report.kept)


# -- 2 poisoned retrain, 3 concept drift ------------------------------------------------------

def _stable_setup(drill: Drill) -> None:
    drill.registry, drill.state["good"] = stable_champion(drill.model, drill.seed)
    drill.state["fallback"] = drill.registry.version_by_alias(drill.registry.fallback_alias).version


def _poisoned_inject(drill: Drill) -> None:
    registry = drill.registry
    poisoned = register_synthetic(registry, drill.seed + 1, positives_flipped)
    holdout = registry.version(poisoned).metrics.get("accuracy")
    registry.promote(poisoned, f"retrained on the latest batch (holdout accuracy {holdout:.3f} on its own labels)")
    drill.state["poisoned"] = poisoned
    _serve_and_label(drill, _synthetic_rows(drill.seed + 500), str(drill.seed + 500))


def _rollback_expect(drill: Drill) -> None:
    registry, good = drill.registry, drill.state["good"]
    moves = wait_until(lambda: applied_moves(registry, AliasAction.ROLLBACK, drill.injected_at), drill.limit, every=0.2)
    breach = first_event(drill.model, [CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY], drill.injected_at)
    drill.detect_s = drill.since(breach.occurred) if breach else None
    drill.require(breach, "no critical or emergency breach was raised")
    if not drill.require(moves, f"no rollback within {drill.limit:g} s of the labels"):
        return
    drill.recover_s = drill.mitigate_s = drill.since(moves[0].at)
    drill.require(moves[0].to_version == good and registry.champion().version == good,
                  f"rolled back to v{moves[0].to_version}, champion v{registry.champion().version}; the stable version is v{good}")
    _check_timeline(drill, moves[0].incident)


def _drift_inject(drill: Drill) -> None:
    _serve_and_label(drill, _synthetic_rows(drill.seed + 600, drift=True), str(drill.seed + 600))


def _drift_expect(drill: Drill) -> None:
    """Every version learnt the old concept, so nothing is better than what serves but by the window's noise. The
    decision: the fallback only when measured better than what serves on the window, and then it serves as a stopgap
    (verified, no escalation); else the response holds, emits `ml.recovery.failed`, and the emergency step stops
    training and holds serving. Either way at most one move of the champion, and the end state is no worse than
    doing nothing (pre_accuracy here: the pre-crisis version on fresh rows of the new concept)."""
    registry, good, fallback = drill.registry, drill.state["good"], drill.state["fallback"]
    breach = wait_until(lambda: first_event(drill.model, [CrisisEvent.BREACH_CRITICAL, CrisisEvent.BREACH_EMERGENCY], drill.injected_at), drill.limit)
    if not drill.require(breach, f"the drift was not detected within {drill.limit:g} s"):
        return
    drill.detect_s = drill.since(breach.occurred)

    def settled():
        return first_event(drill.model, [CrisisEvent.EMERGENCY_STOPPED], drill.injected_at) or applied_moves(registry, AliasAction.FALLBACK, drill.injected_at)

    if not drill.require(wait_until(settled, drill.limit), f"neither a stopgap nor an emergency stop within {drill.limit:g} s"):
        return
    moves = champion_moves(registry, drill.injected_at)
    drill.require(len(moves) <= 1, f"{len(moves)} champion moves: a storm")
    decisions = [event.payload for event in model_events(drill.model, [CrisisEvent.DECISION_TAKEN], drill.injected_at)]
    chosen = next((decision for decision in decisions if decision.get("decision") == DecisionKind.FALLBACK.value), decisions[0] if decisions else {})
    measured = chosen.get("measured_accuracy", {})
    drill.facts.update(champion_moves=len(moves), measured_on_window=measured)
    stopgap = [move for move in moves if move.action == AliasAction.FALLBACK]
    if stopgap:
        drill.facts["response"] = "stopgap"
        drill.mitigate_s = drill.since(stopgap[0].at)
        drill.incident = stopgap[0].incident
        drill.require(stopgap[0].to_version == fallback, f"the stopgap is v{stopgap[0].to_version}, not the fallback v{fallback}")
        drill.require(measured.get(fallback, 0.0) > measured.get(good, 1.0),
                      f"the fallback serves though not measured better on the window ({measured})")
        return
    drill.facts["response"] = "held"
    failed = first_event(drill.model, [CrisisEvent.RECOVERY_FAILED], drill.injected_at)
    drill.require(failed, "the response held without emitting ml.recovery.failed")
    stopped = first_event(drill.model, [CrisisEvent.EMERGENCY_STOPPED], drill.injected_at)
    if drill.require(stopped, "the ladder did not escalate to the emergency stop"):
        drill.mitigate_s = drill.since(stopped.occurred)
        drill.incident = _incident_of(stopped)
    drill.require(not moves and registry.champion().version == good, f"the champion moved from v{good} with nothing measured better")
    drill.require(read_stop_flag(drill.model), "training was not stopped while the concept changed")


# -- 4 primary raising, 5 latency spike -------------------------------------------------------

class _Recorder:
    """The router's timeline sink: every event to Prefect, and its time kept here (the router sends from a thread)."""

    def __init__(self):
        self.seen: list[TimelineEvent] = []

    def __call__(self, event: TimelineEvent) -> None:
        self.seen.append(event)
        prefect_sink(event)

    def first(self, name: CrisisEvent, since: datetime) -> datetime | None:
        return next((event.occurred for event in self.seen if event.event == name.value and event.occurred >= since), None)


SERVING_FAULT = EndState(
    unmeasured="a serving fault: the primary's answers fail or come late, they are not wrong; the router's fallback answers "
               "meanwhile, the primary answers again once fixed, and the champion never moves (checked)",
    incidents=(0, 1), warnings_only=True,
    why="none by design: the router alone answers from the fallback; a health sweep that happens to see the fallback's share "
        "meanwhile may raise one diagnose-only warning",
)
SERVING_DRILL_POLICY = FallbackPolicy(primary_timeout_seconds=0.25, failure_threshold=3, cooldown_seconds=1.0,
                                      share_window_rows=200, min_share_rows=50, refresh_seconds=3600)


def _serving_setup(drill: Drill) -> None:
    drill.registry, drill.state["good"] = stable_champion(drill.model, drill.seed)
    recorder = _Recorder()
    router = FallbackRouter(drill.registry, SERVING_DRILL_POLICY, log=InferenceLog().writer(), close_log=True,
                            timeline=Timeline(sink=recorder)).start(refresh_in_background=False)
    drill.state.update(router=router, recorder=recorder)
    warm = serve_rows(router, make_batch(200, seed=drill.seed + 700), prefix=f"{drill.model}-warm")
    drill.require(warm.rows_by_fallback < 100, f"before the fault the fallback answered {warm.rows_by_fallback} of 200 rows")


def _serving_inject(fault: str | float) -> Callable[[Drill], None]:
    def inject(drill: Drill) -> None:
        router = drill.state["router"]
        faulty = inject_into_primary(router)
        drill.state["faulty"] = faulty
        served = Served([], [])
        drill.inject_now()
        faulty.fault = fault
        served.extend(serve_rows(router, make_batch(300, seed=drill.seed + 701), prefix=f"{drill.model}-fault", pause=0.02))
        drill.cleared_at = datetime.now(timezone.utc)
        faulty.fault = None  # the primary is fixed (a restarted dependency, a deploy rolled back)
        deadline = time.monotonic() + drill.limit
        batch = make_batch(100, seed=drill.seed + 702)
        while time.monotonic() < deadline and drill.state["recorder"].first(CrisisEvent.FALLBACK_RELEASED, drill.cleared_at) is None:
            served.extend(serve_rows(router, batch, prefix=f"{drill.model}-after-{uuid.uuid4().hex[:4]}", pause=0.02))
        drill.state["served"] = served
    return inject


def _serving_expect(drill: Drill) -> None:
    recorder, served, faulty = drill.state["recorder"], drill.state["served"], drill.state["faulty"]
    drill.require(served.failed_requests == 0 and served.rows_failed == 0,
                  f"{served.failed_requests} of {served.requests} requests and {served.rows_failed} rows failed to the client")
    engaged = recorder.first(CrisisEvent.FALLBACK_ENGAGED, drill.injected_at)
    released = recorder.first(CrisisEvent.FALLBACK_RELEASED, drill.cleared_at)
    if drill.require(engaged, "the fallback was never engaged while the primary failed"):
        drill.detect_s = drill.mitigate_s = drill.since(engaged)
    if drill.require(released, f"the fallback was not released within {drill.limit:g} s of the primary's repair"):
        drill.recover_s = seconds(drill.cleared_at, released)
    drill.facts.update(requests=served.requests, rows_by_fallback=served.rows_by_fallback, primary_calls_faulted=faulty.faulted_calls,
                       rows_lost=served.rows_lost)
    moves = champion_moves(drill.registry, drill.injected_at)
    drill.require(not moves, f"a serving fault moved the champion {len(moves)} time(s): the router alone answers it")
    _close_router(drill)
    EventsWorker.drain_all()
    on_server = wait_until(lambda: first_event(drill.model, [CrisisEvent.FALLBACK_RELEASED], drill.injected_at), 15)
    drill.require(on_server, "ml.fallback.released did not reach the Prefect server")


# -- 8 duplicate and late events --------------------------------------------------------------

def _duplicate_setup(drill: Drill) -> None:
    _stable_setup(drill)
    registry = drill.registry
    poisoned = register_synthetic(registry, drill.seed + 1, positives_flipped)
    registry.promote(poisoned, "retrained on the latest batch")
    drill.state["poisoned"] = poisoned
    _serve_and_label(drill, _synthetic_rows(drill.seed + 800), str(drill.seed + 800), emit=False)  # the window the response reads; no monitor run


def _duplicate_inject(drill: Drill) -> None:
    """One critical breach delivered twice (the same event, id and all, posted again: a sender's retry after a lost
    acknowledgement), then a late one that happened a minute earlier (out of order)."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    model, poisoned = drill.model, drill.state["poisoned"]
    payload = {"metric": "error_rate", "value": 0.4, "threshold": 0.2, "window": "drill", "samples": SERVED_ROWS, "drill": True}
    drill.inject_now()
    breach = Event(event=CrisisEvent.BREACH_CRITICAL.value, resource=model_resource(model), related=related_resources(model, poisoned),
                   payload=payload, occurred=drill.injected_at)
    late = Event(event=CrisisEvent.BREACH_CRITICAL.value, resource=model_resource(model), related=related_resources(model, poisoned),
                 payload=payload, occurred=drill.injected_at - timedelta(minutes=1))
    with get_client(sync_client=True) as client:  # the events API, as any sender posts them
        for event in (breach, breach, late):
            client.request("POST", "/events", json=[event.model_dump(mode="json")]).raise_for_status()
    drill.state["event_ids"] = {str(breach.id), str(late.id)}


def _duplicate_expect(drill: Drill) -> None:
    _rollback_expect(drill)
    time.sleep(5)  # a second response would have started by now
    runs = _response_runs(drill.model, drill.injected_at)
    moves = applied_moves(drill.registry, AliasAction.ROLLBACK, drill.injected_at)
    drill.require(len(runs) == 1, f"{len(runs)} responses to one breach sent twice and a late copy")
    drill.require(len(moves) == 1, f"{len(moves)} rollbacks")
    # the server orders events by when they happened: the late copy may be the one that opened the incident
    drill.require(drill.incident in drill.state["event_ids"], f"the incident is {drill.incident}, not one of the breaches' event ids")
    drill.facts.update(responses=len(runs))


# -- 6 the registry unavailable during a rollback ---------------------------------------------

OUTAGE_AFTER_RESPONSE_STARTS = 2.5  # seconds the store stays unwritable once the response runs: its writes meet the outage


def _sqlite_store() -> Path:
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


def _chattr(path: Path, flag: str) -> None:
    import subprocess

    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True, timeout=10)


def _unavailable_setup(drill: Drill) -> None:
    drill.state["store"] = _sqlite_store()
    _duplicate_setup(drill)


def _unavailable_inject(drill: Drill) -> None:
    """The store goes unwritable, a critical breach arrives, and the store comes back only once the response has
    been running for OUTAGE_AFTER_RESPONSE_STARTS s (or after the time limit): its writes meet the outage."""
    import contextvars
    import threading

    store, model, poisoned = drill.state["store"], drill.model, drill.state["poisoned"]
    _chattr(store, "+i")
    drill.state["outage"] = True
    drill.inject_now()
    Timeline().emit(CrisisEvent.BREACH_CRITICAL, model, {"metric": "error_rate", "value": 0.4, "threshold": 0.2, "drill": True}, version=poisoned)
    EventsWorker.drain_all()

    def restore() -> None:
        try:
            wait_until(lambda: any(run.state_type and run.state_type.value == "RUNNING" or run.end_time for run in _response_runs(model, drill.injected_at)),
                       drill.limit / 2, every=0.2)
            time.sleep(OUTAGE_AFTER_RESPONSE_STARTS)
        finally:
            _chattr(store, "-i")
            drill.state["outage"] = False
            drill.state["restored_at"] = datetime.now(timezone.utc)

    # in this context's copy: the Prefect settings of the `crisis drill` command live in context variables
    drill.state["restorer"] = threading.Thread(target=contextvars.copy_context().run, args=(restore,), name="drill-restore-store", daemon=True)
    drill.state["restorer"].start()


def _unavailable_expect(drill: Drill) -> None:
    drill.state["restorer"].join(drill.limit)
    _rollback_expect(drill)
    moves = [move for move in drill.registry.audit_trail(drill.registry.champion_alias) if move.at >= drill.injected_at]
    unsettled = [f"{move.action} v{move.to_version}: {move.outcome}" for move in moves if not move.applied]
    rollbacks = [move for move in moves if move.action == AliasAction.ROLLBACK]
    drill.require(len(rollbacks) == 1, f"{len(moves)} champion moves after the outage began")
    drill.require(not unsettled, f"audit rows not applied: {'; '.join(unsettled)}")
    if drill.state.get("restored_at"):
        drill.facts["outage_s"] = seconds(drill.injected_at, drill.state["restored_at"])
        if rollbacks:  # the rollback as seen from the store's return: what the retries add to the outage
            drill.facts["recover_after_store_back_s"] = seconds(drill.state["restored_at"], rollbacks[0].at)


def _restore_store(drill: Drill) -> None:
    if drill.state.get("outage") and drill.state.get("store"):
        _chattr(drill.state["store"], "-i")


# -- 7 training killed mid-epoch --------------------------------------------------------------

TRAINING_DEPLOYMENT = "continuous-training/continuous-training"
DRILL_POLICY = DRILL_TRAINING_CONTRACT = "drill-training"
TRAINING_ROWS = 20_000  # 10 epochs of 250 mini-batches: a training of several seconds to kill in the middle of


def _training_setup(drill: Drill) -> None:
    drill.registry = ModelRegistry(model_name=drill.model)
    _save_drill_contract(drill, DRILL_TRAINING_CONTRACT, keyed=False)  # the synthetic batches the deployment makes have no key
    policy = TrainingPolicy(epochs=10, batch_size=64)  # the default checkpoint interval
    policy.save(DRILL_POLICY, overwrite=True)
    drill.state["interval"] = policy.checkpoint_every_seconds


def _start_training(drill: Drill) -> str:
    """A run of the deployed continuous-training flow for the drill model (as its schedule starts one); its id."""
    from prefect.deployments import run_deployment

    parameters = {"model_name": drill.model, "contract_block": DRILL_TRAINING_CONTRACT, "policy_block": DRILL_POLICY,
                  "synthetic_rows": TRAINING_ROWS, "seed": drill.seed}
    return str(run_deployment(TRAINING_DEPLOYMENT, parameters=parameters, timeout=0, as_subflow=False).id)


def _flow_run_ended(flow_run_id: str):
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run if run.state is not None and run.state.is_final() else None


def _training_inject(drill: Drill) -> None:
    """Start a training on the process worker; once it has written a checkpoint, SIGKILL its process mid-epoch
    (a seeded moment): no handler runs, as when the kernel's OOM killer or a lost node ends it."""
    import random

    flow_run_id = _start_training(drill)
    drill.state["killed_flow_run"] = flow_run_id

    def checkpointed():
        found = next((run for run in training_runs(drill.registry) if run.data.tags.get(TagKey.CHECKPOINT) == "true"
                      and run.info.status == "RUNNING"), None)
        return found or ("ended" if _flow_run_ended(flow_run_id) else None)

    run = wait_until(checkpointed, drill.limit / 2, every=0.2)
    if run is None or run == "ended":
        ended = _flow_run_ended(flow_run_id)
        raise CrisisError(f"the training run wrote no checkpoint within {drill.limit / 2:g} s"
                          + (f" (it ended {ended.state.name}: {ended.state.message})" if ended else ""))
    time.sleep(random.Random(drill.seed).uniform(0.1, 0.8))  # a seeded moment, well before the last epoch
    processes = flow_run_processes(flow_run_id)
    if not processes:
        raise CrisisError("the training flow run's process is not on this machine: run the drill where the crisis-pool worker runs")
    for process in processes:
        process.kill()  # SIGKILL
    drill.inject_now()
    drill.state["killed_run"] = run.info.run_id


def _training_expect(drill: Drill) -> None:
    """Prefect records the killed run Crashed; the MLflow run it left RUNNING is closed as killed by the next training
    run, which resumes its last checkpoint (written within the policy's interval of the kill) and completes."""
    from prefect_crisis.tasks.training.checkpoints import load_checkpoint_state, load_checkpoint_written_at

    client, killed_id, interval = drill.registry.client, drill.state["killed_run"], drill.state["interval"]
    ended = wait_until(lambda: _flow_run_ended(drill.state["killed_flow_run"]), 60, every=0.2)
    if not drill.require(ended, "Prefect did not record the killed training run as over within 60 s"):
        return
    drill.require(ended.state.is_crashed(), f"the killed training run ended {ended.state.name}, not Crashed")
    drill.detect_s = drill.since(ended.state.timestamp)
    written_at = load_checkpoint_written_at(client, killed_id)
    if drill.require(written_at, f"training run {killed_id} has no readable checkpoint"):
        lost = drill.injected_at.timestamp() - written_at
        drill.facts["work_lost_s"] = round(lost, 3)
        # the interval, plus a write and the mini-batch in flight, with room for a loaded machine
        drill.require(lost <= interval + 2.0, f"its last checkpoint was written {lost:.1f} s before the kill (interval {interval:g} s)")
        position, _ = load_checkpoint_state(client, killed_id)
        drill.facts["resumed_at"] = f"epoch {position.epoch}, batch {position.batch_index}"
    again = drill.state["next_flow_run"] = _start_training(drill)  # the next training, as the schedule would start it
    finished = wait_until(lambda: _flow_run_ended(again), drill.limit, every=0.5)
    if not drill.require(finished, f"the next training run did not finish within {drill.limit:g} s"):
        return
    drill.require(finished.state.is_completed() and finished.state.name == "Completed",
                  f"the next training run ended {finished.state.name}: {finished.state.message}")
    killed = client.get_run(killed_id)
    drill.require((killed.info.status, killed.data.tags.get(TagKey.STOP_KIND)) == ("FAILED", "killed"),
                  f"the killed MLflow run is {killed.info.status}, stop kind {killed.data.tags.get(TagKey.STOP_KIND)}")
    resumed = next((run for run in training_runs(drill.registry) if run.data.tags.get(TagKey.RESUMED_FROM) == killed_id), None)
    drill.require(resumed, f"no training run resumed the checkpoint of {killed_id}")
    started = first_event(drill.model, [CrisisEvent.TRAINING_STARTED], drill.injected_at)
    if drill.require(started and started.payload.get("resumed_from") == killed_id, "no ml.training.started resumed the killed run"):
        drill.recover_s = drill.since(started.occurred)
    stopped = first_event(drill.model, [CrisisEvent.TRAINING_STOPPED], drill.injected_at)
    drill.require(stopped and stopped.payload.get("reason") == "killed", "no ml.training.stopped recorded the kill")
    drill.require(drill.registry.champion() is not None, "the resumed training registered no champion")


def _cancel_training(drill: Drill) -> None:
    """Leave no training of the drill running (a failed drill may have left one): processes still running one of its
    flow runs (found again by their environment, never by a pid that may have been reused)."""
    import contextlib

    import psutil

    for flow_run_id in (drill.state.get("killed_flow_run"), drill.state.get("next_flow_run")):
        for process in flow_run_processes(flow_run_id) if flow_run_id else ():
            with contextlib.suppress(psutil.Error):  # it ended meanwhile
                process.kill()


# -- 9 a silent monitor -----------------------------------------------------------------------

def _dead_man_window() -> float:
    from prefect.client.orchestration import get_client

    from prefect_crisis.blocks.escalation_policy import LadderStep

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(LadderStep.MONITOR_SILENT.automation_name)
    if not found:
        from prefect_crisis.core.errors import StackError

        raise StackError("the crisis-monitor-silent automation is not on the server: run `crisis deploy`")
    return found[0].trigger.within.total_seconds()


def _silent_setup(drill: Drill) -> None:
    _stable_setup(drill)
    drill.state["window"] = _dead_man_window()


def _silent_inject(drill: Drill) -> None:
    Timeline().emit(CrisisEvent.HEALTH_REPORTED, drill.model, {"breaches": 0, "drill": True})
    EventsWorker.drain_all()
    drill.inject_now()  # its last report: from now on the monitor is silent


def _silent_expect(drill: Drill) -> None:
    window = drill.state["window"]
    runs = wait_until(lambda: _response_runs(drill.model, drill.injected_at), window + drill.limit, every=1.0)
    if not drill.require(runs, f"no warning response within {window + drill.limit:g} s of the last health report (window {window:g} s)"):
        return
    run = runs[-1]
    drill.detect_s = drill.mitigate_s = drill.since(run.created)
    drill.require(drill.detect_s >= window - 1, f"the warning came {drill.detect_s:.1f} s after the last report, before the {window:g} s window")
    drill.require((run.parameters.get("severity"), run.parameters.get("diagnose_only")) == (Severity.WARNING.value, True),
                  f"the silent monitor started a {run.parameters.get('severity')} response, not a diagnose-only warning")
    drill.facts["window_s"] = window


# -- 10 a bad release, 11 a poisoned retrain, 12 a rejected batch: real models on real data ---------

REAL_CONTRACT = "drill-real"
# A labelling pipeline that records half the benign tumours as malignant: the retrain's own holdout (on those labels)
# says 0.6-0.77, and on true labels it answers 0.57-0.75 of breast-cancer's rows right: the monitor's critical band.
BENIGN_RECORDED_MALIGNANT = 0.5
OVER_THE_LIMIT = 0.15  # the rejected batch's broken share above the contract's quarantine limit


def _real_setup(dataset: str) -> Callable[[Drill], None]:
    """A real model on `dataset` (tasks/drills/real_models.py): a good scaled logistic version that served 3 h, the weak
    3-feature fallback behind it."""
    def setup(drill: Drill) -> None:
        with warnings.catch_warnings():  # digits' blank border pixels: the fallback's feature ranking says so, a terminal need not
            warnings.filterwarnings("ignore", message="Features .* are constant", category=UserWarning)
            stack = build_real_stack(drill.model, dataset, seed=drill.seed)
        drill.registry = stack.registry
        drill.state.update(stack=stack, good=stack.good, fallback=stack.fallback)
    return setup


def _real_bad_release_inject(drill: Drill) -> None:
    """A release trained on labels a broken pipeline rotated (every digit recorded as the next) is promoted over the
    good version, serves the window's rows, and their true labels come in."""
    stack = drill.state["stack"]
    drill.state["poisoned"] = release_poisoned(stack)
    _serve_and_label(drill, stack.window(), "window")


def _real_retrain_inject(drill: Drill) -> None:
    """A retrain on labels that recorded BENIGN_RECORDED_MALIGNANT of the benign tumours as malignant, promoted directly
    (as poisoned-retrain's, past any gate), serves the window's rows, and their true labels come in."""
    stack = drill.state["stack"]
    recorded = mislabelled(stack.parts["retrain"][LABEL].to_numpy(), stack.data.classes, BENIGN_RECORDED_MALIGNANT, np.random.default_rng(drill.seed))
    drill.state["poisoned"] = release_retrained(stack, recorded)
    _serve_and_label(drill, stack.window(), "window")


def _real_rollback_expect(drill: Drill) -> None:
    """Rolled back to the good version (rollback before fallback): never to the weak fallback."""
    _rollback_expect(drill)
    stopgaps = applied_moves(drill.registry, AliasAction.FALLBACK, drill.injected_at)
    drill.require(not stopgaps, f"the weak fallback v{drill.state['fallback']} served though the good v{drill.state['good']} was there")


def _real_rejected_setup(drill: Drill) -> None:
    """A real model on digits that serves (the window's rows, labelled: the monitor sees it healthy), and the contract
    learnt from its training rows (`DataContract.from_reference`, the label's classes included)."""
    _real_setup("digits")(drill)
    stack = drill.state["stack"]
    reference = stack.parts["train"]
    uri = storage_uri(default_storage(), drill.model, "reference.parquet")
    write_parquet(reference, uri)
    contract = DataContract.from_reference(reference, label_column=LABEL, reference_uri=uri)
    contract.save(REAL_CONTRACT, overwrite=True)
    drill.state["limit"] = contract.max_quarantine_ratio
    _serve_and_label(drill, stack.window(), "serving")


def _real_rejected_inject(drill: Drill) -> None:
    """The next training's batch (the retrain rows) arrives with NaN, text in a numeric column, a class never seen and
    values far out of range on OVER_THE_LIMIT more of its rows than the contract's quarantine limit."""
    stack, limit = drill.state["stack"], drill.state["limit"]
    batch = stack.parts["retrain"]
    broken = math.ceil(len(batch) * (limit + OVER_THE_LIMIT))
    uri = storage_uri(default_storage(), drill.model, f"drill-real-{drill.iteration}.parquet")
    write_parquet(corrupt_real(batch, broken, drill.seed, stack.data.classes), uri)
    drill.inject_now()
    report = validate_batch(model_name=drill.model, contract_block=REAL_CONTRACT, batch_path=uri, storage=default_storage())
    drill.state.update(report=report, sent=len(batch), broken=broken)


def _real_rejected_expect(drill: Drill) -> None:
    report, sent, broken, limit = drill.state["report"], drill.state["sent"], drill.state["broken"], drill.state["limit"]
    drill.require(report.kept + report.quarantined == sent, f"kept {report.kept} + quarantined {report.quarantined} != {sent} rows sent")
    kinds, wanted = set(report.check_counts), {"null", "wrong_type", "unknown_category"}
    drill.require(wanted <= kinds, f"quarantine reasons {sorted(kinds)} miss {sorted(wanted - kinds)}")
    drill.facts.update(batch_rows=sent, broken_rows=broken, quarantined=report.quarantined,
                       rows_lost=drill.facts.get("rows_lost", 0) + sent - report.kept - report.quarantined)
    _rejected_expect(drill, report, f"the batch ({broken / sent:.0%} broken, limit {limit:.0%})")


MEASURED = EndState(_fresh_rows)
REAL = EndState(_fresh_real_rows)
REJECTED_WARNS = ("a rejected batch warns at most: the warning step's diagnosis, which acts on nothing; the batch's rows were all "
                  "kept from training, so nothing else is needed")

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("corrupted-batch", "a batch with NaN, inf, out-of-range values, text in a numeric column and duplicate keys: "
                 "5% broken is quarantined row by row, 35% is rejected whole; it may warn, and never reaches serving",
                 _corrupted_setup, _corrupted_inject, _corrupted_expect, _lift_emergency, limit=90,
                 end=EndState(_fresh_rows, incidents=(0, 1), warnings_only=True, why=REJECTED_WARNS)),
        Scenario("poisoned-retrain", "a retrain on labels flipped upstream is promoted by its own holdout; live labels reveal it; "
                 "the monitor breaches and the response rolls back to the stable version",
                 _stable_setup, _poisoned_inject, _rollback_expect, _no_cleanup, limit=240, end=MEASURED),
        Scenario("concept-drift", "live traffic whose labels follow a new concept: every version is wrong, so nothing is better; "
                 "detected, the response holds and the emergency step stops training (or the fallback, measured better, is a stopgap)",
                 _stable_setup, _drift_inject, _drift_expect, _lift_emergency, limit=120, end=EndState(_fresh_drifted_rows)),
        Scenario("primary-raising", "the served primary raises on every call: each request is answered by the fallback, and the "
                 "breaker lets the primary back when it is fixed",
                 _serving_setup, _serving_inject("raise"), _serving_expect, _close_router, limit=30, end=SERVING_FAULT),
        Scenario("latency-spike", "the served primary takes 1 s a call against a 0.25 s timeout: answered by the fallback, "
                 "released when the primary is fast again",
                 _serving_setup, _serving_inject(1.0), _serving_expect, _close_router, limit=30, end=SERVING_FAULT),
        Scenario("registry-unavailable", "the MLflow store turns unwritable as a critical breach arrives and stays so while the "
                 "response runs: its writes wait the outage out and the rollback completes once, audited, nothing half done",
                 _unavailable_setup, _unavailable_inject, _unavailable_expect, _restore_store, limit=90, end=MEASURED),
        Scenario("training-killed", "the training process is killed mid-epoch (SIGKILL: no handler runs): Prefect records it "
                 "Crashed, and the next training run closes the orphaned MLflow run and resumes its last periodic checkpoint",
                 _training_setup, _training_inject, _training_expect, _cancel_training, limit=120,
                 end=EndState(unmeasured="a killed training: nothing served before it, and what it leaves is the resumed run, "
                              "judged by completing from its checkpoint", incidents=(0, 0),
                              why="none by design: the next training run resumes the checkpoint; nothing breaches")),
        Scenario("duplicate-event", "one critical breach delivered twice (same event id) and a late copy out of order: "
                 "one response, one rollback",
                 _duplicate_setup, _duplicate_inject, _duplicate_expect, _no_cleanup, limit=90, end=MEASURED),
        Scenario("real-bad-release", "digits: a release trained on rotated labels is promoted over the good version and serves; "
                 "labels come in; the ladder rolls back to the good version, not the weak fallback",
                 _real_setup("digits"), _real_bad_release_inject, _real_rollback_expect, _lift_emergency, limit=240, end=REAL),
        Scenario("real-poisoned-retrain", "breast-cancer: a retrain on labels that call half the benign tumours malignant is "
                 "promoted directly and serves; labels come in; the response rolls back to the good version",
                 _real_setup("breast-cancer"), _real_retrain_inject, _real_rollback_expect, _lift_emergency, limit=240, end=REAL),
        Scenario("real-rejected-batch", "digits, serving: the next training batch arrives with NaN, text, an unseen class and "
                 "values far out of range on more rows than the contract allows: rejected whole, it may warn, never reaches serving",
                 _real_rejected_setup, _real_rejected_inject, _real_rejected_expect, _lift_emergency, limit=90,
                 end=EndState(_fresh_real_rows, incidents=(0, 1), warnings_only=True, why=REJECTED_WARNS)),
        Scenario("monitor-silent", "a model's health monitor stops reporting: the dead man's switch raises a diagnose-only "
                 "warning once its window has passed",
                 _silent_setup, _silent_inject, _silent_expect, _no_cleanup, limit=60, end=EndState(_fresh_rows, warnings_only=True)),
    )
}
assert tuple(SCENARIOS) == SCENARIO_NAMES, "tasks/drills.SCENARIO_NAMES lists the scenarios in catalogue order"


def say(line: str) -> None:
    """A progress line: into the drill's run log (log_prints) and to `prefect_crisis.drill` for a terminal."""
    print(line)
    PROGRESS.info(line)


def run_iteration(scenario: Scenario, iteration: int, seed: int, progress: Callable[[str], None] = say) -> DrillResult:
    """Set up, inject, expect and clean up once; an exception anywhere is a failure with its reason, never a crash."""
    drill = Drill(scenario.name, iteration, seed, drill_model_name(scenario.name), scenario.limit)
    drill.facts.update(pre_accuracy=None, end_accuracy=None, incidents=None)
    progress(f"{scenario.name} #{iteration} (seed {seed}): {scenario.summary} [{drill.model}]")
    started = time.monotonic()
    try:
        scenario.setup(drill)
        scenario.inject(drill)
        scenario.expect(drill)
        judge_end_state(drill, scenario.end)
    except Exception as error:  # noqa: BLE001 - a drill reports what broke, it does not stop the others
        drill.failures.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    finally:
        try:
            scenario.cleanup(drill)
        except Exception as error:  # noqa: BLE001
            drill.failures.append(f"cleanup: {type(error).__name__}: {error}")
    result = DrillResult(scenario.name, iteration, seed, drill.model, not drill.failures, drill.detect_s, drill.mitigate_s,
                         drill.recover_s, drill.incident, tuple(drill.failures), drill.facts, round(time.monotonic() - started, 2))
    progress(describe(result))
    return result


def describe(result: DrillResult) -> str:
    """One line for a person following the drill.

    Example:
        >>> describe(DrillResult("latency-spike", 0, 7, "drill-latency-spike-1", True, 0.61, 0.61, 1.2, None, (), {}, 9.5))
        'latency-spike #0 (seed 7): passed; detect 0.61 s, mitigate 0.61 s, recover 1.20 s [drill-latency-spike-1, 9.5 s]'
        >>> describe(DrillResult("real-bad-release", 0, 7, "drill-real-bad-release-1", True, 0.9, 2.1, 2.1, "e-1", (),
        ...                      {"pre_accuracy": 0.9582, "end_accuracy": 0.9582, "incidents": 1}, 30.2))
        'real-bad-release #0 (seed 7): passed; detect 0.90 s, mitigate 2.10 s, recover 2.10 s; accuracy 0.958 -> 0.958, 1 incident [drill-real-bad-release-1, incident e-1, 30.2 s]'
    """
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.failures)
    incident = f", incident {result.incident}" if result.incident else ""
    before, after, incidents = (result.facts.get(name) for name in ("pre_accuracy", "end_accuracy", "incidents"))
    end = f"; accuracy {before:.3f} -> {after:.3f}" if before is not None and after is not None else ""
    if incidents is not None:
        end += f"{',' if end else ';'} {incidents} incident{'' if incidents == 1 else 's'}"
    return (f"{result.scenario} #{result.iteration} (seed {result.seed}): {verdict}; detect {shown(result.detect_s)}, "
            f"mitigate {shown(result.mitigate_s)}, recover {shown(result.recover_s)}{end} [{result.model}{incident}, {result.wall_s:.1f} s]")


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear), None for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 95)
        (2.5, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


def summarize(results: list[DrillResult]) -> list[dict[str, Any]]:
    """Per scenario: runs, success rate, p50 / p95 / max of detect, mitigate and recover, the end state (mean accuracy
    before and after on fresh rows, the largest drop, fewest and most incidents per episode); failures with reasons."""
    rows = []
    for name in dict.fromkeys(result.scenario for result in results):
        mine = [result for result in results if result.scenario == name]
        row: dict[str, Any] = {"scenario": name, "runs": len(mine), "passed": sum(r.passed for r in mine),
                               "success_rate": round(sum(r.passed for r in mine) / len(mine), 3)}
        for measure in ("detect_s", "mitigate_s", "recover_s"):
            values = [getattr(r, measure) for r in mine if getattr(r, measure) is not None]
            row[f"{measure[:-2]}_p50_s"] = percentile(values, 50)
            row[f"{measure[:-2]}_p95_s"] = percentile(values, 95)
            row[f"{measure[:-2]}_max_s"] = max(values) if values else None
        before = [r.facts["pre_accuracy"] for r in mine if r.facts.get("pre_accuracy") is not None and r.facts.get("end_accuracy") is not None]
        after = [r.facts["end_accuracy"] for r in mine if r.facts.get("pre_accuracy") is not None and r.facts.get("end_accuracy") is not None]
        row["pre_accuracy"] = round(statistics.fmean(before), 4) if before else None
        row["end_accuracy"] = round(statistics.fmean(after), 4) if after else None
        row["accuracy_drop_max"] = round(max(b - a for b, a in zip(before, after)), 4) if before else None
        incidents = [r.facts["incidents"] for r in mine if r.facts.get("incidents") is not None]
        row["incidents_min"], row["incidents_max"] = (min(incidents), max(incidents)) if incidents else (None, None)
        row["failures"] = "; ".join(f"#{r.iteration}: {'; '.join(r.failures)}" for r in mine if not r.passed)
        rows.append(row)
    return rows


def plot_times(results: list[DrillResult]):
    """A PNG (bytes) of the detect / mitigate / recover times per scenario, each run a dot; or None without times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(result.scenario for result in results))
    measures = (("detect_s", "detect", "#1f77b4"), ("mitigate_s", "mitigate", "#ff7f0e"), ("recover_s", "recover", "#2ca02c"))
    if not any(getattr(r, m) is not None for r in results for m, _, _ in measures):
        return None
    figure, axes = plt.subplots(figsize=(9, 0.6 * len(names) + 1.6), dpi=100)
    for row, name in enumerate(names):
        for offset, (measure, label, colour) in zip((-0.22, 0.0, 0.22), measures):
            values = [getattr(r, measure) for r in results if r.scenario == name and getattr(r, measure) is not None]
            axes.scatter(values, [row + offset] * len(values), s=18, color=colour, alpha=0.7, label=label if row == 0 else None)
            if values:
                axes.plot([statistics.median(values)] * 2, [row + offset - 0.09, row + offset + 0.09], color="black", linewidth=1.5)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_xlabel("seconds from the fault (black tick: median)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncol=3, frameon=False)  # above the plot: never on a dot
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_report(results: list[DrillResult], folder: Path, stamp: str) -> tuple[Path, Path | None]:
    """The drill's JSON (every run, and the summary) and PNG under `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"drill-{stamp}.json"
    report.write_text(json.dumps({"summary": summarize(results), "runs": [asdict(result) for result in results]}, indent=2, default=str))
    png = plot_times(results)
    picture = None
    if png is not None:
        picture = folder / f"drill-{stamp}.png"
        picture.write_bytes(png)
    return report, picture


@flow(name="crisis-drill", log_prints=True)
def crisis_drill(scenarios: list[str] | None = None, iterations: int = 1, seed: int = 0) -> dict[str, Any]:
    """Run recovery drills against the running stack and report success rate and times per scenario.

    Args:
        scenarios: scenario names (see `SCENARIOS`); empty: all of them.
        iterations: runs per scenario, each on a fresh drill model, seeds `seed`, `seed + 1`, ...
        seed: the first iteration's seed.

    Raises:
        CrisisError: an unknown scenario, or iterations below 1 (a usage error).
    """
    names = scenario_names(scenarios)
    if iterations < 1:
        raise CrisisError(f"iterations must be at least 1, not {iterations}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = [
        run_iteration(SCENARIOS[name], iteration, seed + iteration)
        for name in names
        for iteration in range(iterations)
    ]
    summary = summarize(results)
    report, picture = write_report(results, crisis_home() / "drills", stamp)
    create_table_artifact(key=artifact_key("drill", "report"), table=summary, description=f"Recovery drills {stamp}: success rate and times (s)")
    lines = [f"# Recovery drills {stamp}", "", f"{sum(r.passed for r in results)} of {len(results)} runs passed. JSON: `{report.name}`", ""]
    if picture is not None:
        lines += ["![times](data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode() + ")", ""]
    lines += [f"- {describe(result)}" for result in results]
    create_markdown_artifact(key=artifact_key("drill", "times"), markdown="\n".join(lines), description="Recovery drills: every run")
    return {"summary": summary, "runs": [asdict(result) for result in results], "json": str(report), "png": str(picture) if picture else None}

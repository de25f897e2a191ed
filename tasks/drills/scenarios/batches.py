"""Batches a training would learn from, broken on the way: a synthetic batch with every kind of defect (5% broken is
quarantined row by row, 35% is rejected whole) and a real data set's next batch broken past its contract's limit.
A rejected batch may warn and never reaches serving."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.core.paths import default_storage
from prefect_crisis.core.vocabulary import CrisisEvent, Severity
from prefect_crisis.tasks.drills.datasets import LABEL
from prefect_crisis.tasks.drills.end_state import EndState, FreshRows
from prefect_crisis.tasks.drills.faults import FAR_OUT, corrupt, corrupt_real, keyed
from prefect_crisis.tasks.drills.injections import (
    DRILL_CONTRACT,
    lift_emergency,
    real_champion,
    real_stack,
    save_drill_contract,
    serve_and_label,
    synthetic_champion,
)
from prefect_crisis.tasks.drills.observe import champion_moves, first_event, ladder_runs
from prefect_crisis.tasks.drills.real_models import RealModelStack
from prefect_crisis.tasks.drills.scenario import ChampionState, Drill, Scenario, wait_until
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.training.stop_flag import read_stop_flag
from prefect_crisis.tasks.validation.quarantine import storage_uri, write_parquet

REAL_CONTRACT = "drill-real"
OVER_THE_LIMIT = 0.15  # the rejected batch's broken share above the contract's quarantine limit
WARNING_WAIT = 60.0  # seconds a rejected batch's warning response has to end before the drill judges what it left
REJECTED_WARNS = (
    "a rejected batch warns at most: the warning step's diagnosis, which acts on nothing; the batch's rows were all "
    "kept from training, so nothing else is needed"
)


def expect_rejected(drill: Drill[Any], report: Any, what: str) -> None:
    """A batch over the contract's quarantine limit is rejected: quarantined whole (`ml.data.rejected`), so training
    never sees a row of it; it may warn (the warning step diagnoses the model and acts on nothing) and never reaches
    serving: no emergency stop, no stop flag, no move of the champion. Detect and mitigate: the rejection reaching the
    server (the batch is kept from training from then on)."""
    drill.require(report.verdict.value == "reject" and report.kept == 0, f"{what}: {report.verdict.value}, kept {report.kept}")
    injected_at = drill.fault_injected_at
    rejected = wait_until(lambda: first_event(drill.model, [CrisisEvent.DATA_REJECTED], injected_at), 15)
    if drill.require(rejected, "no ml.data.rejected event reached the server"):
        drill.detect_s = drill.mitigate_s = drill.since(rejected.occurred)
    warned = wait_until(
        lambda: [run for run in ladder_runs(drill.model, injected_at) if run.state and run.state.is_final()],
        min(drill.limit, WARNING_WAIT),
        every=0.5,
    )
    drill.facts["warning"] = warned[0].state.name if warned else f"none within {min(drill.limit, WARNING_WAIT):g} s"
    for run in warned or []:
        drill.require(
            (run.parameters.get("severity"), run.parameters.get("diagnose_only")) == (Severity.WARNING.value, True),
            f"the rejected batch started a {run.parameters.get('severity')} response, not a diagnose-only warning",
        )
        drill.incident = drill.incident or run.parameters.get("incident_id")
    registry, good = drill.model_registry, drill.state.good
    stops = ladder_runs(drill.model, injected_at, "emergency-stop")
    drill.require(not stops, f"the rejected batch started {len(stops)} emergency stop(s): a rejected batch never reaches serving")
    moves = champion_moves(registry, injected_at)
    drill.require(not moves, "the rejected batch moved the champion: " + "; ".join(f"{m.action} v{m.from_version} -> v{m.to_version}" for m in moves))
    champion = registry.champion()
    drill.require(champion is not None and champion.version == good, f"the champion is v{champion.version if champion else None}, not v{good}")
    flag = read_stop_flag(drill.model)
    drill.require(flag is None, f"training's stop flag was raised over a rejected batch ({flag})")
    drill.facts.update(stop_flag=flag is not None, kept_for_training=report.kept)


# -- corrupted-batch ----------------------------------------------------------------------


@dataclass
class CorruptedBatches(ChampionState):
    """The two batches sent (rows per batch) and the validation's reports of them."""

    sent: dict[str, int] = field(default_factory=dict)
    light: Any = None
    heavy: Any = None


@dataclass(frozen=True)
class CorruptedBatch(Scenario[CorruptedBatches]):
    def new_state(self) -> CorruptedBatches:
        return CorruptedBatches()

    def setup(self, drill: Drill[CorruptedBatches]) -> None:
        synthetic_champion(drill)
        save_drill_contract(drill)

    def inject(self, drill: Drill[CorruptedBatches]) -> None:
        storage = default_storage()
        batches = {}
        for name, rows_broken, seed in (("light", 10, drill.seed + 1), ("heavy", 70, drill.seed + 2)):
            batch = corrupt(keyed(make_batch(200, seed=seed), start=seed * 1_000), rows_broken, seed)
            uri = storage_uri(storage, drill.model, f"drill-{name}-{drill.iteration}.parquet")
            write_parquet(batch, uri)
            batches[name] = (uri, len(batch))
        validate = drill.batch_validation
        state = drill.state
        state.light = validate(model_name=drill.model, contract_block=DRILL_CONTRACT, batch_path=batches["light"][0], storage=storage)
        drill.inject_now()  # the heavy batch: 35% broken, over the contract's 10%: rejected whole
        state.heavy = validate(model_name=drill.model, contract_block=DRILL_CONTRACT, batch_path=batches["heavy"][0], storage=storage)
        state.sent = {name: rows for name, (_, rows) in batches.items()}

    def expect(self, drill: Drill[CorruptedBatches]) -> None:
        light, heavy, sent = drill.state.light, drill.state.heavy, drill.state.sent
        for name, report in (("light", light), ("heavy", heavy)):
            drill.require(
                report.kept + report.quarantined == sent[name],
                f"{name} batch: kept {report.kept} + quarantined {report.quarantined} != {sent[name]} rows sent",
            )
        kinds = set(light.check_counts)
        wanted = {"null", "not_finite", "wrong_type", "duplicate_key"}
        drill.require(
            wanted <= kinds and kinds & FAR_OUT, f"light batch: quarantine reasons {sorted(kinds)} miss {sorted(wanted - kinds) or 'outlier'}"
        )
        drill.require(light.verdict.value != "reject" and light.kept >= 180, f"light batch (5% broken): {light.verdict.value}, kept {light.kept}")
        drill.facts.update(
            light_quarantined=light.quarantined,
            heavy_quarantined=heavy.quarantined,
            rows_lost=sum(sent[name] - report.kept - report.quarantined for name, report in (("light", light), ("heavy", heavy))),
        )
        expect_rejected(drill, heavy, "heavy batch (35% broken)")

    def clean_up(self, drill: Drill[CorruptedBatches]) -> None:
        lift_emergency(drill)


# -- real-rejected-batch ------------------------------------------------------------------


@dataclass
class RealRejected(ChampionState):
    """The real model, its contract's quarantine limit, and the batch sent (rows, rows broken, the validation's report)."""

    stack: RealModelStack | None = None
    limit: float = 0.0
    sent: int = 0
    broken: int = 0
    report: Any = None


@dataclass(frozen=True)
class RealRejectedBatch(Scenario[RealRejected]):
    dataset: str = "digits"

    def new_state(self) -> RealRejected:
        return RealRejected()

    def setup(self, drill: Drill[RealRejected]) -> None:
        """A real model on digits that serves (the window's rows, labelled: the monitor sees it healthy), and the contract
        learnt from its training rows (`DataContract.from_reference`, the label's classes included)."""
        stack = drill.state.stack = real_champion(drill, self.dataset)
        reference = stack.parts["train"]
        uri = storage_uri(default_storage(), drill.model, "reference.parquet")
        write_parquet(reference, uri)
        contract = DataContract.from_reference(reference, label_column=LABEL, reference_uri=uri)
        contract.save(REAL_CONTRACT, overwrite=True)
        drill.state.limit = contract.max_quarantine_ratio
        serve_and_label(drill, stack.window(), "serving")

    def inject(self, drill: Drill[RealRejected]) -> None:
        """The next training's batch (the retrain rows) arrives with NaN, text in a numeric column, a class never seen and
        values far out of range on OVER_THE_LIMIT more of its rows than the contract's quarantine limit."""
        state, stack = drill.state, real_stack(drill)
        batch = stack.parts["retrain"]
        broken = math.ceil(len(batch) * (state.limit + OVER_THE_LIMIT))
        uri = storage_uri(default_storage(), drill.model, f"drill-real-{drill.iteration}.parquet")
        write_parquet(corrupt_real(batch, broken, drill.seed, stack.data.classes), uri)
        drill.inject_now()
        state.report = drill.batch_validation(model_name=drill.model, contract_block=REAL_CONTRACT, batch_path=uri, storage=default_storage())
        state.sent, state.broken = len(batch), broken

    def expect(self, drill: Drill[RealRejected]) -> None:
        report, sent, broken, limit = drill.state.report, drill.state.sent, drill.state.broken, drill.state.limit
        drill.require(report.kept + report.quarantined == sent, f"kept {report.kept} + quarantined {report.quarantined} != {sent} rows sent")
        kinds, wanted = set(report.check_counts), {"null", "wrong_type", "unknown_category"}
        drill.require(wanted <= kinds, f"quarantine reasons {sorted(kinds)} miss {sorted(wanted - kinds)}")
        drill.facts.update(
            batch_rows=sent,
            broken_rows=broken,
            quarantined=report.quarantined,
            rows_lost=drill.facts.get("rows_lost", 0) + sent - report.kept - report.quarantined,
        )
        expect_rejected(drill, report, f"the batch ({broken / sent:.0%} broken, limit {limit:.0%})")

    def clean_up(self, drill: Drill[RealRejected]) -> None:
        lift_emergency(drill)


SCENARIOS = (
    CorruptedBatch(
        "corrupted-batch",
        "a batch with NaN, inf, out-of-range values, text in a numeric column and duplicate keys: "
        "5% broken is quarantined row by row, 35% is rejected whole; it may warn, and never reaches serving",
        limit=90,
        end=EndState(FreshRows.SYNTHETIC, incidents=(0, 1), warnings_only=True, why=REJECTED_WARNS),
    ),
    RealRejectedBatch(
        "real-rejected-batch",
        "digits, serving: the next training batch arrives with NaN, text, an unseen class and "
        "values far out of range on more rows than the contract allows: rejected whole, it may warn, never reaches serving",
        limit=90,
        end=EndState(FreshRows.REAL, incidents=(0, 1), warnings_only=True, why=REJECTED_WARNS),
    ),
)

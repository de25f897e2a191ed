"""The demo: the synthetic stream through validation, then training on the
local stack: a first model promoted, a stop, a resume from its checkpoint, and
a crisis: a retrain on poisoned labels is stopped at the promotion gate (the
champion collapses on the batch's own holdout but not on its golden set: a
label-quality finding), then an operator promotes it by hand past the gate, and
it serves live traffic into the inference log; labels arrive, the health
monitor breaches, the crisis response measures every version on the log's
labelled window and rolls back, and the next sweep finds the model healthy
again. Then a second, short story on a second model (`<model>-b`): trained once
(its champion and its fallback model), its only earlier version retired, a bad
release promoted by hand: with no version to return to, the fallback, measured
better on the window, serves as a stopgap.

Batches: clean, corrupted (2% of rows broken: quarantined), drifted
(reported), broken (30% of rows: rejected whole), clean. Each runs as a
`validate-batch` subflow; each training as a `continuous-training` subflow,
so the UI shows one run per step with its artifacts and events.

Every run trains its own model (`synthetic-<time>-<random>`), so a second demo
tells the same story as the first instead of meeting the first one's versions
and rollback cool-down; a run whose story does not happen (the poisoned
retrain promoted by the gate, the bad release not rolled back, or not replaced
by the fallback model) fails with a `DemoError`.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.registry import ModelRegistry, first_line
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.blocks.training_policy import TrainingPolicy
from prefect_crisis.core.errors import DemoError, IncidentError
from prefect_crisis.core.paths import artifact_key, default_storage, validate_model_name
from prefect_crisis.core.vocabulary import Severity
from prefect_crisis.flows.monitoring import health_monitor
from prefect_crisis.flows.response import crisis_response
from prefect_crisis.flows.training import continuous_training
from prefect_crisis.flows.validation import validate_batch
from prefect_crisis.tasks.drills.synthetic import check_demo_rows, demo_model_name, make_batch, synthetic_contract
from prefect_crisis.tasks.response.report import wait_for_incident_end
from prefect_crisis.tasks.run_logs import quiet_expected_errors
from prefect_crisis.tasks.serving.inference_log import open_inference_log, record_labels
from prefect_crisis.tasks.serving.router import FallbackRouter
from prefect_crisis.tasks.training.stop_flag import clear_stop_flag, set_stop_flag
from prefect_crisis.tasks.validation.quarantine import storage_uri, write_parquet

DEMO_CONTRACT = "synthetic-stream"
DEMO_POLICY = "synthetic-training"
DEMO_ROLLBACK = "synthetic-rollback"
DEMO_FALLBACK_ROLLBACK = "synthetic-rollback-hour"
STREAM = ("clean", "corrupted", "drifted", "broken", "clean")


def save_synthetic_contract(model_name: str, storage: str, rows: int) -> str:
    """Write a clean reference batch and save the synthetic contract pointing at it."""
    reference_uri = storage_uri(storage, model_name, "reference.parquet")
    write_parquet(make_batch(rows, seed=10_000), reference_uri)
    synthetic_contract(reference_uri=reference_uri, max_quarantine_ratio=0.1).save(DEMO_CONTRACT, overwrite=True)
    return reference_uri


def _validate_stream(model_name: str, rows: int, storage: str) -> list[dict]:
    summary = []
    for number, condition in enumerate(STREAM):
        report = validate_batch(
            model_name=model_name,
            contract_block=DEMO_CONTRACT,
            storage=storage,
            synthetic_condition=condition,
            synthetic_rows=rows,
            seed=number,
        )
        summary.append(
            {
                "step": f"validate batch {number}",
                "condition": condition,
                "outcome": report.verdict.value,
                "detail": f"kept {report.kept}, quarantined {report.quarantined}"
                + (f", drifted {', '.join(report.drifted_features)}" if report.drifted_features else ""),
            }
        )
        print(f"batch {number} ({condition}): {summary[-1]['outcome']}, {summary[-1]['detail']}")
    return summary


def _train(model_name: str, rows: int, storage: str, seed: int, step: str, condition: str = "clean") -> dict:
    state = continuous_training(
        model_name=model_name,
        contract_block=DEMO_CONTRACT,
        policy_block=DEMO_POLICY,
        synthetic_condition=condition,
        synthetic_rows=rows,
        seed=seed,
        storage=storage,
        return_state=True,
    )
    print(f"{step}: {state.name}: {state.message}")
    return {"step": step, "condition": f"{condition}, seed {seed}", "outcome": state.name, "detail": state.message}


def _champion_version(model_name: str) -> str | None:
    champion = ModelRegistry(model_name=model_name).champion()
    return champion.version if champion else None


def _respond(
    model_name: str,
    rows: int,
    storage: str,
    policy_block: str = DEMO_ROLLBACK,
    seed: int = 500,
    step: str = "crisis response (fresh labelled window)",
) -> dict:
    """A fresh labelled window (true labels) and the crisis response on it."""
    window = make_batch(rows, seed=seed)
    window["timestamp"] = [datetime.now(UTC) - timedelta(seconds=rows - i) for i in range(rows)]
    window_uri = storage_uri(storage, model_name, "labelled-window.parquet")
    write_parquet(window, window_uri)
    incident = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}-{seed}"
    state = crisis_response(
        model_name=model_name, window_path=window_uri, incident_id=incident, rollback_policy_block=policy_block, return_state=True
    )
    print(f"{step}: {state.name}: {state.message}")
    return {"step": step, "condition": incident, "outcome": state.name, "detail": state.message}


def _serve_and_label(model_name: str, rows: int, seed: int) -> int:
    """Serve a fresh batch through the champion (with its fallback behind it) into the inference log, then
    record its true labels, as a labelling pipeline would; returns the rows served. No `ml.labels.recorded`
    event: the demo runs the monitor itself, so a deployed automation does not start a second one."""
    log = InferenceLog()
    router = FallbackRouter(ModelRegistry(model_name=model_name), log=open_inference_log(log), close_log=True).start(refresh_in_background=False)
    try:
        batch = make_batch(rows, seed=seed)
        answer = router.predict(batch.drop(columns=["label"]))
    finally:
        router.close()
    record_labels(log, list(zip(answer["request_id"], answer["row_id"].astype(str), strict=True)), batch["label"].tolist(), emit=False)
    return len(answer)


def _sweep(model_name: str, step: str) -> tuple[dict, str | None]:
    """One health-monitor run for the model: (summary row, the worst breach's severity or None)."""
    state = health_monitor(model_name=model_name, return_state=True)
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    breaches: list[dict[str, Any]] = result.get("swept", {}).get(model_name, []) if isinstance(result, dict) else []
    order = [severity.value for severity in Severity]
    worst = max((breach["severity"] for breach in breaches), key=order.index, default=None)
    print(f"{step}: {state.name}: {state.message}")
    return {"step": step, "condition": worst or "healthy", "outcome": state.name, "detail": state.message}, worst


def _monitored_rollback(model_name: str, rows: int) -> list[dict]:
    """The closed loop in one process: serve live traffic through the poisoned champion, labels arrive, the
    health monitor breaches, the response reads the labelled window from the inference log and rolls back;
    fresh traffic after it, and the next sweep finds the model healthy (the dashboard's plot shows all of it)."""
    served = _serve_and_label(model_name, rows, seed=500)
    sweep, severity = _sweep(model_name, f"health monitor ({served:,} served rows labelled)")
    story = [sweep]
    if severity is None:
        raise DemoError(f"the demo's story did not happen: the monitor found the poisoned champion of {model_name!r} healthy ({sweep['detail']})")
    incident = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}-500"
    state = crisis_response(model_name=model_name, incident_id=incident, severity=severity, rollback_policy_block=DEMO_ROLLBACK, return_state=True)
    step = f"crisis response ({severity} breach, the inference log's labelled window)"
    print(f"{step}: {state.name}: {state.message}")
    story.append({"step": step, "condition": incident, "outcome": state.name, "detail": state.message})
    if state.name == "Recovered":
        served = _serve_and_label(model_name, rows, seed=503)
        story.append(_sweep(model_name, f"health monitor after the rollback ({served:,} rows)")[0])
    return story


def _promote_by_hand(model_name: str, why: str) -> str:
    """What an operator does past the gate: promote the challenger the gate held back. Returns its version.

    Raises:
        DemoError: the gate promoted it already, or left no challenger.
    """
    registry = ModelRegistry(model_name=model_name)
    challenger, champion = registry.version_by_alias(registry.challenger_alias), registry.champion()
    if challenger is None or (champion is not None and challenger.version == champion.version):
        raise DemoError(f"the demo's story did not happen: the gate promoted the poisoned retrain of {model_name!r} (or kept no challenger)")
    registry.promote(challenger.version, why)
    print(f"an operator promotes v{challenger.version} by hand past the gate: {why}")
    return challenger.version


def _fallback_story(model_name: str, rows: int, storage: str) -> list[dict]:
    """A second model, trained once (champion v1, its fallback model); v1 retired, a bad release promoted by hand:
    nothing to return to, so the fallback, measured better on the window, serves (a stopgap).

    Raises:
        DemoError: no fallback model, or the response did not move the champion to it.
    """
    story = [_train(model_name, rows, storage, seed=200, step="second model: train (registers its fallback model)")]
    registry = ModelRegistry(model_name=model_name)
    fallback = registry.version_by_alias(registry.fallback_alias)
    first = _champion_version(model_name)
    story.append(_train(model_name, rows, storage, seed=202, step="second model: retrain on a poisoned batch", condition="poisoned"))
    if fallback is None or first is None:
        raise DemoError(f"the demo's second story did not happen: {model_name!r} has no champion or no fallback model")
    registry.retire(first, "superseded: an operator retired it")
    poisoned = _promote_by_hand(model_name, "the earlier version is retired; the new one is shipped anyway")
    story.append(_respond(model_name, rows, storage, DEMO_FALLBACK_ROLLBACK, seed=501, step="second model: crisis response (nothing to return to)"))
    after = _champion_version(model_name)
    if story[-1]["outcome"] != "Recovered" or after != fallback.version:
        raise DemoError(
            f"the demo's second story did not happen: the poisoned v{poisoned} of {model_name!r} was not replaced by the fallback "
            f"v{fallback.version} (champion v{after}; {story[-1]['outcome']}: {story[-1]['detail']})"
        )
    return story


@flow(name="crisis-demo", log_prints=True)
def crisis_demo(model_name: str | None = None, rows: int = 5_000, storage: str | None = None) -> list[dict]:
    """Validate the synthetic stream, train and promote, stop and resume, then a poisoned retrain the gate holds back,
    promoted by hand and rolled back; then a second model (`<model_name>-b`) whose bad release, with nothing to return
    to, is replaced by its fallback model.

    Args:
        model_name: the model the demo trains; empty gives a fresh `demo_model_name()`,
            so every run tells the same story.
        rows: rows per batch, 1,000 to 1,000,000.
        storage: where batches go; defaults to `.crisis/data`.

    Raises:
        DataInputError: a bad model name or row count, before anything is written.
        DemoError: the story did not happen (the gate promoted the poisoned retrain, the bad release was not rolled
            back, or the second model's not replaced by its fallback model).
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    check_demo_rows(rows)
    model_name = validate_model_name(model_name) if model_name else demo_model_name()
    second_model = validate_model_name(f"{model_name}-b")  # the fallback story's model; a name too long fails here, before any write
    print(f"demo model: {model_name}")
    storage = storage or default_storage()
    reference_uri = save_synthetic_contract(model_name, storage, rows)
    # The smallest demo batch (1,000 rows, a few quarantined) leaves a holdout just under the
    # default 200 rows; 100 still judges a promotion on far more than a handful of rows.
    TrainingPolicy(epochs=5, batch_size=64, min_holdout_rows=100).save(DEMO_POLICY, overwrite=True)
    # The demo's versions live for seconds, so no stability window; production keeps the default hour.
    RollbackPolicy(stability_window_minutes=0).save(DEMO_ROLLBACK, overwrite=True)
    # The second story keeps the hour: its first version served seconds, so nothing is stable to roll back to.
    RollbackPolicy(stability_window_minutes=60).save(DEMO_FALLBACK_ROLLBACK, overwrite=True)
    print(f"saved DataContract {DEMO_CONTRACT!r} (reference {reference_uri}) and TrainingPolicy {DEMO_POLICY!r}")
    summary = _validate_stream(model_name, rows, storage)
    summary.append(_train(model_name, rows, storage, seed=100, step="train"))
    set_stop_flag(model_name, "demo: an operator halts training", by="crisis-demo")
    try:
        summary.append(_train(model_name, rows, storage, seed=101, step="train with the stop flag raised"))
    finally:
        clear_stop_flag(model_name)
    summary.append(_train(model_name, rows, storage, seed=101, step="train again: resumes from the checkpoint"))
    before_poison = _champion_version(model_name)
    summary.append(_train(model_name, rows, storage, seed=102, step="retrain on a poisoned batch (the gate holds it back)", condition="poisoned"))
    if _champion_version(model_name) != before_poison:
        raise DemoError(f"the demo's story did not happen: the gate promoted the poisoned retrain of {model_name!r}")
    poisoned = _promote_by_hand(model_name, "shipped by hand past the gate")
    summary.append(
        {
            "step": "an operator promotes the held-back retrain by hand",
            "condition": f"v{poisoned}",
            "outcome": "promoted",
            "detail": f"v{before_poison} -> v{poisoned} past the gate's label-quality finding",
        }
    )
    summary.extend(_monitored_rollback(model_name, rows))
    rollback_incident = next(row["condition"] for row in summary if row["step"].startswith("crisis response"))
    after = _champion_version(model_name)
    if after == poisoned:
        raise DemoError(f"the demo's story did not happen: the poisoned v{poisoned} of {model_name!r} is still champion after the response")
    summary.extend(_fallback_story(second_model, rows, storage))
    create_table_artifact(key=artifact_key("demo", model_name), table=summary, description="The demo, step by step")
    for incident in (rollback_incident, summary[-1]["condition"]):  # `crisis incident show` of the rollback, then of the fallback
        try:
            print("\n".join(wait_for_incident_end(incident).lines()))
        except IncidentError as error:  # the story happened (the summary says so); only its timeline is late on the server
            print(
                f"the timeline of incident {incident} is not on the server yet ({first_line(str(error))}): `crisis incident show {incident}` shows it once its events are stored"
            )
    return summary

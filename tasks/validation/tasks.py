"""The validation steps as Prefect tasks, and the Prefect and MLflow I/O around them:
the `load-batch`, `validate-data`, `persist-parts` and `publish-validation` tasks,
artifacts and the verdict's event on the model's timeline.

Everything else in this package is plain functions over plain data; this module
only wraps them (see `ADAPTERS` in the package's `__init__`).
"""

from __future__ import annotations

import hashlib

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.core.paths import artifact_key, default_storage, validate_model_name
from prefect_crisis.core.timeline import Timeline
from prefect_crisis.core.vocabulary import CrisisEvent
from prefect_crisis.tasks.drills.synthetic import make_batch
from prefect_crisis.tasks.validation.batches import CORRUPT_FRACTION, SyntheticCondition, load_frame
from prefect_crisis.tasks.validation.checks import validate_data
from prefect_crisis.tasks.validation.quarantine import PersistedBatch, persist_parts, render_markdown
from prefect_crisis.tasks.validation.references import load_reference
from prefect_crisis.tasks.validation.report import ValidationReport, ValidationResult, Verdict


def synthetic_batch(condition: SyntheticCondition, rows: int, seed: int) -> pd.DataFrame:
    """One batch of the synthetic stream in the given condition."""
    if condition in CORRUPT_FRACTION:
        return make_batch(rows, seed=seed, corrupt_fraction=CORRUPT_FRACTION[condition])
    if condition == "drifted":
        return make_batch(rows, seed=seed, drift_features=("f01", "f03"))
    batch = make_batch(rows, seed=seed)
    if condition == "poisoned":
        # Labels flipped upstream: every value is valid, so validation passes it.
        batch["label"] = 1 - batch["label"]
    return batch


@task(name="load-batch", cache_policy=NO_CACHE)
def load_batch(batch_path: str | None, synthetic_condition: SyntheticCondition = "clean", rows: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """Read `batch_path`, or make a synthetic batch when it is None."""
    if batch_path is None:
        return synthetic_batch(synthetic_condition, rows, seed)
    return load_frame(batch_path)


# Batches can be millions of rows: hashing them for a cache key would cost more than validating.
@task(name="validate-data", task_run_name="validate-data-{model}", cache_policy=NO_CACHE)
def validate_data_task(frame: pd.DataFrame, contract: DataContract, model: str, reference: pd.DataFrame | None = None) -> ValidationResult:
    """Run `validate_data` as a Prefect task (see it for arguments)."""
    return validate_data(frame, contract, reference)


@task(name="persist-parts", cache_policy=NO_CACHE)
def persist_parts_task(result: ValidationResult, storage: str, model: str, batch_id: str) -> PersistedBatch:
    """Write kept and quarantined rows as parquet; see `persist_parts`."""
    return persist_parts(result, storage, model, batch_id)


@task(name="publish-validation", cache_policy=NO_CACHE)
def publish_validation(report: ValidationReport, model: str, batch_id: str, persisted: PersistedBatch | None) -> str:
    """Publish the report as artifacts and an event; return the markdown artifact's key."""
    key = artifact_key("validation", model)
    create_markdown_artifact(
        key=key,
        markdown=render_markdown(report, model, batch_id, persisted),
        description=f"Validation of {model} batch {batch_id}: {report.verdict.value}",
    )
    if report.failures:
        create_table_artifact(
            key=artifact_key("validation-failures", model),
            table=[
                {"check": f.reason.value, "column": f.column or "(row)", "rows": f.rows, "examples": ", ".join(map(str, f.examples))}
                for f in report.failures
            ],
            description=f"Failed checks of {model} batch {batch_id}",
        )
    payload = {"batch": batch_id, **report.to_dict()}
    payload.pop("drift")  # per-feature figures stay in the artifact; the event names what drifted
    if persisted is not None:
        payload.update(kept_uri=persisted.kept_uri, quarantine_uri=persisted.quarantine_uri)
    event = CrisisEvent.DATA_REJECTED if report.verdict is Verdict.REJECT else CrisisEvent.DATA_VALIDATED
    Timeline().emit(event, model, payload)
    return key


def batch_id(frame: pd.DataFrame, fingerprint: str = "") -> str:
    """An id from the batch's content: validating the same batch again gives the same id (and files)."""
    if fingerprint:
        return fingerprint
    try:
        hashes = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    except TypeError:  # unhashable cells: fall back to the run, one id per validation
        return f"run-{(flow_run.get_id() or 'local')[:8]}"
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


def validate_and_publish(
    frame: pd.DataFrame, contract: DataContract, model_name: str, reference_path: str | None = None, storage: str | None = None
) -> ValidationResult:
    """Validate inside a flow run, persist both parts, publish report and event."""
    logger = get_run_logger()
    reference_uri = reference_path or contract.reference_uri
    validate_model_name(model_name)
    reference = load_reference(reference_uri) if reference_uri else None
    result = validate_data_task(frame, contract, model_name, reference)
    report = result.report
    identifier = batch_id(frame, report.fingerprint)
    persisted = persist_parts_task(result, storage or default_storage(), model_name, identifier)
    publish_validation(report, model_name, identifier, persisted)
    logger.info(
        "batch %s: %s, %d rows, %d kept, %d quarantined%s",
        identifier,
        report.verdict.value,
        report.rows,
        report.kept,
        report.quarantined,
        f", drifted: {report.drifted_features}" if report.drifted_features else "",
    )
    for finding in report.findings:
        logger.info("batch %s: %s", identifier, finding.message)
    return result

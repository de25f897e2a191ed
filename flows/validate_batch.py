"""The validate_batch flow: load a batch, validate it against the saved
contract and reference, persist kept and quarantined parts, publish the report."""

import hashlib

import pandas as pd

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.tasks.batches import SyntheticCondition, load_batch, load_frame
from prefect_crisis.tasks.errors import ContractError, ContractErrorReason, DataInputError, InputErrorReason
from prefect_crisis.tasks.paths import default_storage, validate_model_name
from prefect_crisis.tasks.stack_info import stack_summary
from prefect_crisis.tasks.references import MIN_REFERENCE_ROWS, load_reference  # noqa: F401 (re-exported)
from prefect_crisis.tasks.quarantine import persist_parts_task, publish_validation, validate_data_task
from prefect_crisis.tasks.validation import ValidationReport, ValidationResult


def load_contract(name: str) -> DataContract:
    """Load a saved DataContract block, with an error that says how to make one."""
    try:
        return DataContract.load(name)
    except ValueError as error:
        raise ContractError(
            ContractErrorReason.NOT_FOUND,
            f"no DataContract block named {name!r} on the Prefect server: save one with "
            f"DataContract(...).save({name!r}) or run `crisis demo` for the synthetic one",
        ) from error


def batch_id(frame: pd.DataFrame, fingerprint: str = "") -> str:
    """An id from the batch's content: validating the same batch again gives the same id (and files)."""
    if fingerprint:
        return fingerprint
    try:
        hashes = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    except TypeError:  # unhashable cells: fall back to the run, one id per validation
        return f"run-{(flow_run.get_id() or 'local')[:8]}"
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


@flow(name="validate-batch", log_prints=True)
def validate_batch(
    model_name: str = "synthetic",
    contract_block: str = "synthetic-stream",
    batch_path: str | None = None,
    reference_path: str | None = None,
    storage: str | None = None,
    synthetic_condition: SyntheticCondition = "clean",
    synthetic_rows: int = 5_000,
    seed: int = 0,
) -> ValidationReport:
    """Validate one batch for `model_name` and quarantine what fails.

    Args:
        model_name: the model the batch feeds; names the events' resource.
        contract_block: name of the saved DataContract block.
        batch_path: parquet or CSV file (path or fsspec URL); None makes a synthetic batch.
        reference_path: reference data for drift; defaults to the contract's `reference_uri`.
        storage: where kept and quarantined parts are written; defaults to `.crisis/data`.
        synthetic_condition: clean, corrupted or drifted, when no batch_path is given.
        synthetic_rows: rows of the synthetic batch.
        seed: seed of the synthetic batch.
    """
    validate_model_name(model_name)
    get_run_logger().info("using %s", stack_summary())
    contract = load_contract(contract_block)
    frame = load_batch(batch_path, synthetic_condition, synthetic_rows, seed)
    return validate_and_publish(frame, contract, model_name, reference_path, storage).report


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
    return result

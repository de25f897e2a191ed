"""The validate_batch flow: load a batch, validate it against the saved
contract and reference, persist kept and quarantined parts, publish the report."""

from prefect import flow, get_run_logger

from prefect_crisis.core.paths import validate_model_name
from prefect_crisis.tasks.loading import load_contract
from prefect_crisis.tasks.run_logs import quiet_expected_errors
from prefect_crisis.tasks.stack_info import stack_summary
from prefect_crisis.tasks.validation import SyntheticCondition, load_batch
from prefect_crisis.tasks.validation.report import ValidationReport
from prefect_crisis.tasks.validation.tasks import validate_and_publish


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
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    validate_model_name(model_name)
    get_run_logger().info("using %s", stack_summary())
    contract = load_contract(contract_block)
    frame = load_batch(batch_path, synthetic_condition, synthetic_rows, seed)
    return validate_and_publish(frame, contract, model_name, reference_path, storage).report

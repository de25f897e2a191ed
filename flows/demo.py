"""The demo: a stream of synthetic batches through validation on the local stack.

One batch of the stream is corrupted (2% of rows broken: quarantined), one has
drifted, one is broken (30% of rows: rejected whole); the others are clean.
Each batch runs as a `validate-batch` subflow, so the UI shows one run per batch
with its report artifact and its event.
"""

from prefect import flow
from prefect.artifacts import create_table_artifact

from prefect_crisis.flows.validate_batch import validate_batch
from prefect_crisis.tasks.paths import default_storage
from prefect_crisis.tasks.quarantine import storage_uri, artifact_key, write_parquet
from prefect_crisis.tasks.synthetic import make_batch, synthetic_contract

DEMO_CONTRACT = "synthetic-stream"
STREAM = ("clean", "corrupted", "drifted", "broken", "clean")


def save_synthetic_contract(model_name: str, storage: str, rows: int) -> str:
    """Write a clean reference batch and save the synthetic contract pointing at it."""
    reference_uri = storage_uri(storage, model_name, "reference.parquet")
    write_parquet(make_batch(rows, seed=10_000), reference_uri)
    synthetic_contract(reference_uri=reference_uri, max_quarantine_ratio=0.1).save(DEMO_CONTRACT, overwrite=True)
    return reference_uri


@flow(name="crisis-demo", log_prints=True)
def crisis_demo(model_name: str = "synthetic", rows: int = 5_000, storage: str | None = None) -> list[dict]:
    """Validate the synthetic stream: clean, corrupted, drifted, broken, clean."""
    storage = storage or default_storage()
    reference_uri = save_synthetic_contract(model_name, storage, rows)
    print(f"saved DataContract block {DEMO_CONTRACT!r} with reference {reference_uri}")
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
                "batch": number,
                "condition": condition,
                "verdict": report.verdict.value,
                "rows": report.rows,
                "kept": report.kept,
                "quarantined": report.quarantined,
                "drifted": ", ".join(report.drifted_features) or "-",
            }
        )
        print(f"batch {number} ({condition}): {summary[-1]['verdict']}, quarantined {report.quarantined}, drifted {summary[-1]['drifted']}")
    create_table_artifact(key=artifact_key("demo-stream", model_name), table=summary, description="The synthetic stream, batch by batch")
    return summary

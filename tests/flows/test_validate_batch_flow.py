"""The validate_batch flow against a real Prefect server: artifacts and events
are read back through the API, quarantine files from disk."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from prefect_crisis.core.errors import ContractError, ContractErrorReason
from prefect_crisis.deployments.inspect import read_artifacts_of_flow_run, read_crisis_events
from prefect_crisis.flows.validation import validate_batch
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.validation.quarantine import write_parquet
from prefect_crisis.tasks.validation.report import REASONS_COLUMN, Verdict
from tests.helpers import wait_for


@pytest.fixture
def model():
    return f"flow-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def contract_block(tmp_path, model):
    reference = tmp_path / "reference.parquet"
    write_parquet(make_batch(5_000, seed=100), str(reference))
    synthetic_contract(reference_uri=str(reference), max_quarantine_ratio=0.1).save(model, overwrite=True)
    return model


def test_validate_batch_quarantines_publishes_the_report_and_emits_validated(tmp_path, model, contract_block):
    batch = make_batch(4_000, seed=7, corrupt_fraction=0.03, drift_features=("f02",))
    batch_path = tmp_path / "batch.csv"
    batch.to_csv(batch_path, index=False)

    state = validate_batch(
        model_name=model, contract_block=contract_block, batch_path=str(batch_path), storage=str(tmp_path / "out"), return_state=True
    )
    report = state.result()
    assert report.verdict is Verdict.ACCEPT_WITH_QUARANTINE
    assert report.kept + report.quarantined == 4_000 and report.quarantined >= 120
    assert report.drifted_features == ["f02"]

    quarantine_files = list((tmp_path / "out" / model / "quarantine").glob("*.parquet"))
    kept_files = list((tmp_path / "out" / model / "kept").glob("*.parquet"))
    assert len(quarantine_files) == len(kept_files) == 1
    quarantined = pd.read_parquet(quarantine_files[0])
    assert len(quarantined) == report.quarantined
    # The corrupted rows, and a few outliers within the contract's 1% budget.
    assert quarantined[REASONS_COLUMN].str.contains("null:|out_of_range:|unknown_category:|outlier:").all()
    assert report.check_counts.get("outlier", 0) <= 0.01 * 4_000
    assert len(pd.read_parquet(kept_files[0])) == report.kept

    artifacts = read_artifacts_of_flow_run(state.state_details.flow_run_id)
    by_key = {artifact.key: artifact for artifact in artifacts}
    markdown = by_key[f"validation-{model}"]
    assert markdown.type == "markdown"
    assert "accept_with_quarantine" in markdown.data and quarantine_files[0].name in markdown.data
    assert by_key[f"validation-failures-{model}"].type == "table"

    events = wait_for(lambda: read_crisis_events(model), lambda found: len(found) >= 1)
    assert [event.event for event in events] == ["ml.data.validated"]
    payload = events[0].payload
    assert payload["rows"] == 4_000 and payload["quarantined"] == report.quarantined
    assert payload["drifted_features"] == ["f02"]
    assert set(payload["reasons"]) >= {"null", "out_of_range", "unknown_category"}
    related_roles = {related.role for related in events[0].related}
    assert "flow-run" in related_roles


def test_a_rejected_batch_emits_rejected_and_keeps_every_row_in_quarantine(tmp_path, model, contract_block):
    batch_path = tmp_path / "broken.parquet"
    make_batch(2_000, seed=8, corrupt_fraction=0.3).to_parquet(batch_path)

    report = validate_batch(model_name=model, contract_block=contract_block, batch_path=str(batch_path), storage=str(tmp_path / "out"))
    assert report.verdict is Verdict.REJECT
    (quarantine_file,) = (tmp_path / "out" / model / "quarantine").glob("*.parquet")
    assert len(pd.read_parquet(quarantine_file)) == 2_000

    events = wait_for(lambda: read_crisis_events(model), lambda found: len(found) >= 1)
    assert [event.event for event in events] == ["ml.data.rejected"]
    assert "quarantine ratio" in events[0].payload["rejection_reasons"][0]


def test_synthetic_batches_need_no_file(tmp_path, model, contract_block):
    report = validate_batch(model_name=model, contract_block=contract_block, synthetic_condition="drifted", storage=str(tmp_path))
    assert report.verdict is not Verdict.REJECT
    assert report.drifted_features == ["f01", "f03"]
    # Clean but for the shift: at most the outlier budget is quarantined.
    assert set(report.check_counts) <= {"outlier"}
    assert report.quarantined <= 0.01 * report.rows


def test_an_unknown_contract_block_is_a_contract_error(model):
    with pytest.raises(ContractError) as caught:
        validate_batch(model_name=model, contract_block=f"{model}-missing")
    assert caught.value.reason is ContractErrorReason.NOT_FOUND


def test_artifact_key_holds_the_latest_report(tmp_path, model, contract_block):
    for condition in ("clean", "corrupted"):
        validate_batch(model_name=model, contract_block=contract_block, synthetic_condition=condition, storage=str(tmp_path))
    with get_client(sync_client=True) as client:
        latest = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"validation-{model}"])))
    assert len(latest) == 1 and "accept_with_quarantine" in latest[0].data

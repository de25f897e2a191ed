"""Quarantined rows are written with their reasons and index; nothing is lost."""

from __future__ import annotations

import pandas as pd

from prefect_crisis.core.paths import artifact_key
from prefect_crisis.core.timeline import model_resource, related_resources
from prefect_crisis.tasks.drills.synthetic import make_batch, synthetic_contract
from prefect_crisis.tasks.validation import REASONS_COLUMN, validate_data
from prefect_crisis.tasks.validation.quarantine import persist_parts, render_markdown, write_parquet


def test_kept_and_quarantined_parts_round_trip_through_parquet(tmp_path):
    batch = make_batch(3_000, seed=5, corrupt_fraction=0.03)
    batch.index = batch.index + 1_000_000  # a non-default index must survive
    result = validate_data(batch, synthetic_contract())
    persisted = persist_parts(result, str(tmp_path), "churn", "batch-1")
    kept = pd.read_parquet(persisted.kept_uri)
    quarantined = pd.read_parquet(persisted.quarantine_uri)
    assert len(kept) + len(quarantined) == len(batch)
    assert sorted(kept.index.append(quarantined.index)) == sorted(batch.index)
    assert quarantined[REASONS_COLUMN].str.len().gt(0).all()
    pd.testing.assert_frame_equal(quarantined.drop(columns=REASONS_COLUMN), batch.loc[quarantined.index])


def test_clean_batch_writes_no_quarantine_file(tmp_path):
    result = validate_data(make_batch(500, seed=1), synthetic_contract())
    persisted = persist_parts(result, str(tmp_path), "churn", "b")
    assert persisted.quarantine_uri is None
    assert not (tmp_path / "churn" / "quarantine").exists()


def test_columns_arrow_cannot_type_are_written_as_text_not_dropped(tmp_path):
    frame = pd.DataFrame({"mixed": [1, "two", 3.0, None], "x": [1.0, 2.0, 3.0, 4.0], "plan": pd.array(["free", "pro", "pro", "free"], dtype="str")})
    path = tmp_path / "mixed.parquet"
    write_parquet(frame, str(path))
    back = pd.read_parquet(path)
    assert back["mixed"].tolist()[:3] == ["1", "two", "3.0"] and pd.isna(back["mixed"].iloc[3])  # strings as they were
    assert back["x"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert back["plan"].tolist() == ["free", "pro", "pro", "free"]  # a text column Arrow can type is not touched (was quoted)


def test_markdown_report_states_verdict_counts_and_file():
    batch = make_batch(2_000, seed=2, corrupt_fraction=0.02)
    result = validate_data(batch, synthetic_contract(), make_batch(2_000, seed=9))
    persisted_markdown = render_markdown(result.report, "churn", "b-7", None)
    assert "accept_with_quarantine" in persisted_markdown
    assert f"| {result.report.rows:,} | {result.report.kept:,} | {result.report.quarantined:,} |" in persisted_markdown
    assert "| null | f" in persisted_markdown and "## Drift against the reference" in persisted_markdown


def test_event_resources_follow_the_design_vocabulary():
    assert model_resource("churn") == {
        "prefect.resource.id": "ml.model.churn",
        "prefect.resource.name": "churn",
        "ml.model.name": "churn",
    }
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in related_resources("churn", 3, "inc-9")}
    assert roles == {"model-version": "ml.model-version.churn.3", "incident": "ml.incident.inc-9"}
    assert artifact_key("Validation", "Churn Model_v2") == "validation-churn-model-v2"

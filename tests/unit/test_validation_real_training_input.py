"""`training_input_findings` on real labelled batches: why a batch cannot train a sane
classifier, as findings with reasons, and nothing to say about a sane one."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.tasks.drills.datasets import DATASET_NAMES, LABEL, load_dataset
from prefect_crisis.tasks.validation import FindingReason, training_input_findings


def part(name: str, seed: int = 0, share: float = 0.5):
    return load_dataset(name).split(seed=seed, parts=(share, 1 - share))[0]


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_a_stratified_part_of_a_real_data_set_has_nothing_in_the_way(name):
    for seed in range(5):
        batch = part(name, seed)
        assert training_input_findings(batch, LABEL) == ()
        assert training_input_findings(batch, LABEL, classes=load_dataset(name).classes.tolist()) == ()


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_one_class_only_is_a_single_class_finding(name):
    batch = part(name)
    only = batch[batch[LABEL] == 1]
    (finding,) = training_input_findings(only, LABEL)
    assert (finding.reason, finding.column, finding.rows) == (FindingReason.SINGLE_CLASS, LABEL, len(only))
    assert finding.message == "label 'label' is constant: every labelled row is class 1; a classifier needs at least two classes"


def test_a_constant_label_column_is_found_even_when_the_features_vary():
    batch = part("breast-cancer").assign(**{LABEL: 0})
    (finding,) = training_input_findings(batch, LABEL)
    assert finding.reason is FindingReason.SINGLE_CLASS and "is constant" in finding.message


def test_missing_labels_are_counted_and_named_by_row():
    batch = part("digits").astype({LABEL: float})
    holes = batch.index[[3, 17, 40]]
    batch.loc[holes, LABEL] = np.nan
    (finding,) = training_input_findings(batch, LABEL)
    assert (finding.reason, finding.rows, finding.examples) == (FindingReason.NULL_LABEL, 3, tuple(holes))
    assert finding.message == f"label 'label' is missing in 3 of {len(batch)} rows: fill or drop them before training"


def test_every_class_with_fewer_rows_than_the_minimum_is_named():
    batch = part("wine")
    lone = batch[batch[LABEL] == 2].index[1:]
    thin = batch.drop(index=lone)  # class 2 keeps one row
    (finding,) = training_input_findings(thin, LABEL)
    assert (finding.reason, finding.rows) == (FindingReason.RARE_CLASS, 1)
    assert finding.message.startswith("class 2 of label 'label' has 1 row, fewer than 2")
    findings = training_input_findings(batch, LABEL, min_rows_per_class=40)  # a stricter minimum
    assert [(f.reason, f.rows) for f in findings] == [
        (FindingReason.RARE_CLASS, (batch[LABEL] == c).sum()) for c in (0, 1, 2) if (batch[LABEL] == c).sum() < 40
    ]


def test_expected_classes_the_batch_lacks_or_exceeds_are_findings():
    batch = part("wine")
    without_two = batch[batch[LABEL] != 2]
    (lacking,) = training_input_findings(without_two, LABEL, classes=[0, 1, 2])
    assert (lacking.reason, lacking.rows) == (FindingReason.RARE_CLASS, 0)
    assert lacking.message.startswith("class 2 of label 'label' has 0 rows")
    impossible = batch.copy()
    impossible.loc[impossible.index[0], LABEL] = 7
    findings = training_input_findings(impossible, LABEL, classes=[0, 1, 2])
    assert findings[0].reason is FindingReason.UNKNOWN_CLASS and findings[0].rows == 1
    assert "holds classes [7] beyond the expected [0, 1, 2]" in findings[0].message


def test_a_mistyped_label_column_is_named_with_the_closest_column():
    (finding,) = training_input_findings(part("wine"), "lable")
    assert finding.reason is FindingReason.MISSING_LABEL_COLUMN
    assert finding.message.startswith("the batch has no label column 'lable' (did you mean 'label'?)")


def test_findings_are_frozen_values_ready_for_an_event():
    batch = part("wine")
    batch = batch[batch[LABEL] == 0]
    (finding,) = training_input_findings(batch, LABEL)
    with pytest.raises(FrozenInstanceError):
        finding.rows = 0
    assert json.loads(json.dumps(finding.to_dict()))["reason"] == "single_class"


def test_input_that_is_not_a_batch_is_a_one_line_data_input_error():
    with pytest.raises(DataInputError) as caught:
        training_input_findings(part("wine").iloc[:0], LABEL)
    assert caught.value.reason is InputErrorReason.EMPTY_FRAME and "\n" not in str(caught.value)

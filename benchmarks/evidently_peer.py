"""Evidently 0.7 on the diagnostics benchmark's files, run in its own virtual
environment (Evidently 0.7 does not import with pandas 3). Prints one JSON line.

Usage: evidently_peer.py REFERENCE.parquet CURRENT.parquet
"""

import json
import sys
import time

import pandas as pd
from evidently import DataDefinition, Dataset, MulticlassClassification, Report
from evidently.presets import ClassificationPreset, DataDriftPreset


def main(reference_path: str, current_path: str) -> None:
    reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
    features = [c for c in current.columns if c.startswith("f")]
    definition = DataDefinition(
        numerical_columns=features,
        classification=[MulticlassClassification(target="target", prediction_labels="prediction")],
    )
    reference_data = Dataset.from_pandas(reference, data_definition=definition)
    current_data = Dataset.from_pandas(current, data_definition=definition)

    started = time.perf_counter()
    drift = Report([DataDriftPreset(columns=features)]).run(current_data, reference_data)
    drift_seconds = time.perf_counter() - started
    started = time.perf_counter()
    Report([ClassificationPreset()]).run(current_data, reference_data)
    classification_seconds = time.perf_counter() - started

    drifted = []
    for metric in drift.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        # Statistical tests report a p-value (drift below the threshold), distances a distance (drift above it).
        is_test = any(word in config["method"] for word in ("K-S", "chi-square", "Z-test", "p_value"))
        if (metric["value"] < config["threshold"]) if is_test else (metric["value"] >= config["threshold"]):
            drifted.append(config["column"])
    print(json.dumps({"drift_seconds": drift_seconds, "classification_seconds": classification_seconds, "drifted": sorted(set(drifted))}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

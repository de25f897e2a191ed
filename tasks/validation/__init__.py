"""Validation: the data contract's checks, fences, drift against a reference, the quarantine of rejected rows.

The domain is plain functions over plain data and imports neither Prefect nor MLflow:
`inputs` (can the batch be validated), `columns` (coercion), `column_checks` (row checks
and fences), `duplicates`, `drift`, `checks` (`validate_data`), `labels` (training input),
`report` (the verdict and report), `quarantine` (parquet parts, the markdown report),
`batches` and `references` (reading files). The modules in `ADAPTERS` wrap it in
Prefect tasks and publish artifacts and events.

Names are imported on first use (PEP 562), so importing one part does not load the rest."""

from prefect_crisis.core.lazy import lazy_exports

# The only modules of this package that may import Prefect or MLflow (directly or through
# other modules); every other module is domain.
ADAPTERS = frozenset({"tasks"})

_EXPORTS = {
    "CORRUPT_FRACTION": "batches",
    "SyntheticCondition": "batches",
    "load_batch": "tasks",
    "load_frame": "batches",
    "synthetic_batch": "tasks",
    "CheckFailure": "report",
    "Finding": "report",
    "FindingReason": "report",
    "REASONS_COLUMN": "report",
    "RowFinding": "column_checks",
    "ValidationReport": "report",
    "ValidationResult": "report",
    "Verdict": "report",
    "check_contract": "inputs",
    "check_input": "inputs",
    "checks_drift": "column_checks",
    "checks_outliers": "column_checks",
    "column_fences": "column_checks",
    "column_mismatches": "inputs",
    "outlier_rate": "column_checks",
    "training_input_findings": "labels",
    "validate_data": "checks",
    "CoercedColumn": "columns",
    "coerce_column": "columns",
    "DriftSettings": "drift",
    "FeatureDrift": "drift",
    "MIN_DRIFT_ROWS": "drift",
    "binned_homogeneity_pvalue": "drift_statistics",
    "categorical_drift": "drift",
    "dataframe_drift": "drift",
    "deterministic_sample": "drift_statistics",
    "feature_pvalue": "drift_statistics",
    "frame_drift": "drift",
    "holm_adjusted": "drift_statistics",
    "holm_drift": "drift",
    "homogeneity_pvalue": "drift_statistics",
    "ks_two_sample": "drift_statistics",
    "numeric_drift": "drift",
    "psi_categorical": "drift_statistics",
    "psi_numeric": "drift_statistics",
    "quantile_edges": "drift_statistics",
    "usable_bins": "drift_statistics",
    "PersistedBatch": "quarantine",
    "batch_id": "tasks",
    "persist_parts": "quarantine",
    "persist_parts_task": "tasks",
    "publish_validation": "tasks",
    "render_markdown": "quarantine",
    "storage_uri": "quarantine",
    "validate_and_publish": "tasks",
    "validate_data_task": "tasks",
    "write_parquet": "quarantine",
    "load_reference": "references",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

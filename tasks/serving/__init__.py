"""Serving: the router with its circuit breaker and fallback model, confidence routing, the MLflow pyfunc, the inference log.

Names are imported on first use (PEP 562), so importing one part does not load the rest.

The domain modules are plain functions and values, importing neither Prefect nor MLflow (not even through
project modules); the ADAPTERS below are the modules that do that I/O: MLflow (the router's loading, the
routing artifact, the pyfunc, the fallback's training) and Prefect (the tasks, events, the InferenceLog block)."""

from prefect_crisis.core.lazy import lazy_exports

ADAPTERS = frozenset(
    {
        "fallback_model",  # Prefect tasks, MLflow registration of the fallback
        "fallback_routing",  # the candidate's routing.json in its MLflow run, the calibrate-routing task
        "hot_swap",  # loads versions and their routing.json from MLflow
        "inference_log",  # opens the InferenceLog block's database; Prefect events and task
        "pyfunc",  # the router as an MLflow pyfunc
        "pyfunc_code",  # MLflow's model-from-code file
        "router",  # the registry block, Prefect events, hot swaps
        "routing_artifact",  # routing.json in an MLflow run
    }
)

_EXPORTS = {
    "CircuitBreaker": "breaker",
    "Listener": "breaker",
    "StateChange": "breaker",
    "ConfidenceMap": "confidence",
    "FORMAT": "routing_calibration",
    "METHODS": "confidence",
    "ROUTING_ARTIFACT": "routing_calibration",
    "RoutingCalibration": "routing_calibration",
    "RoutingPlan": "routing_plan",
    "available_scores": "confidence",
    "best_threshold": "confidence_routing",
    "expected_calibration_error": "confidence_routing",
    "fit_map": "confidence_routing",
    "fit_routing": "confidence_routing",
    "plan_routing": "routing_plan",
    "raw_confidence": "confidence",
    "score_output": "confidence",
    "top_two": "confidence",
    "BAR_TAG": "fallback_model",
    "FallbackModel": "fallback_fit",
    "FallbackResult": "fallback_fit",
    "MEETS_BAR_TAG": "fallback_model",
    "calibrate_candidate_routing": "fallback_routing",
    "calibrate_routing": "fallback_routing",
    "fallback_refusal": "fallback_fit",
    "feature_counts": "fallback_columns",
    "fit_fallback": "fallback_fit",
    "grow_fallback_features": "fallback_fit",
    "keep_fallback": "fallback_model",
    "keep_fallback_model": "fallback_model",
    "make_fallback_estimator": "fallback_fit",
    "rank_scores": "fallback_columns",
    "ranked_columns": "fallback_columns",
    "select_fallback_features": "fallback_columns",
    "LATENCY_COLUMN": "inference_log",
    "labelled_window": "inference_log",
    "latencies_of": "inference_log",
    "logged_models": "inference_log",
    "open_inference_log": "inference_log",
    "read_labelled_window": "inference_log",
    "read_window": "inference_log",
    "record_labels": "inference_log",
    "request_latency": "inference_log",
    "InferenceLogWriter": "log_writer",
    "LogStats": "log_writer",
    "PredictionBatch": "log_writer",
    "RequestError": "log_writer",
    "Spool": "log_spool",
    "add_missing_columns": "log_store",
    "load_routing": "routing_artifact",
    "log_routing": "routing_artifact",
    "LoadedVersions": "hot_swap",
    "RoutedRows": "row_routing",
    "answer_table": "row_routing",
    "route_reason_of": "row_routing",
    "route_rows": "row_routing",
    "engagement_change": "served",
    "CrisisModel": "pyfunc",
    "LOG_PASSWORD_ENV": "pyfunc",
    "PASSWORD_ENV": "pyfunc",
    "POLICY_FIELDS": "pyfunc",
    "SERVING_SUFFIX": "pyfunc",
    "config_digest": "pyfunc",
    "flush_on": "pyfunc",
    "register_serving_model": "pyfunc",
    "router_from_config": "pyfunc",
    "serving_config": "pyfunc",
    "serving_model_name": "pyfunc",
    "serving_version": "pyfunc",
    "FLOAT32_MAX": "row_features",
    "FallbackRouter": "router",
    "Features": "row_features",
    "INVALID": "row_features",
    "LOGS_REASONS": "router",
    "RESPONDERS": "row_features",
    "RESPONDER_DTYPE": "row_features",
    "ROUTING_WAIT_SECONDS": "hot_swap",
    "RoutedShare": "served",
    "ServedVersion": "served",
    "confidence_of": "answers",
    "fallback_outputs": "answers",
    "invalid_reasons": "row_features",
    "predicted": "answers",
    "primary_outputs": "answers",
    "read_features": "row_features",
    "version_dtype": "row_features",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

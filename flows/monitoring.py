"""The health-monitor flow: one sweep over one or many models.

Run on a schedule (every few minutes) and by an automation on
`ml.labels.recorded` with `model_name={{ event.resource['ml.model.name'] }}`,
so a poisoned champion is noticed seconds after its labels exist. Each model's
sweep emits `ml.breach.<severity>` per confirmed breach and `ml.health.reported`
(the dead man's switch listens for its absence); a model whose sweep fails is
named in the run's result and the others are still swept. Each model is judged
on the window of the version serving it since it took the champion alias; a
model whose champion is its fallback version is named as such in the result
(`on_fallback`) and in its report (`serving: "fallback"`).
"""

import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from prefect_crisis.blocks.contract import DataContract
from prefect_crisis.blocks.inference_log import InferenceLog
from prefect_crisis.blocks.monitoring_policy import MonitoringPolicy
from prefect_crisis.blocks.registry import ModelRegistry
from prefect_crisis.core.errors import CrisisError
from prefect_crisis.core.timeline import utc_now
from prefect_crisis.core.vocabulary import Serving
from prefect_crisis.tasks.loading import bind_policy, saved_block
from prefect_crisis.tasks.monitoring.dashboard import dashboard_due, refresh_dashboard
from prefect_crisis.tasks.monitoring.sweep import load_drift_reference, metric_history, models_to_sweep, sweep_model_task, system_metrics
from prefect_crisis.tasks.run_logs import quiet_expected_errors


@flow(name="health-monitor")
def health_monitor(
    model_names: list[str] | None = None,
    model_name: str | None = None,
    monitoring_policy_block: str | None = None,
    inference_log_block: str | None = None,
) -> State:
    """Sweep the health of models served through the inference log.

    Args:
        model_names: the models to sweep; empty: every model with records in the inference log
            within the policy's long window (a drill model, `drill-*`, only within its short window).
        model_name: one model (what an automation triggered by `ml.labels.recorded` passes);
            swept together with `model_names` when both are given.
        monitoring_policy_block: the MonitoringPolicy block for models without their own: each model's own binds
            first (`bind_policy`: named in its EscalationPolicy, else saved under its name), the defaults last.
        inference_log_block: the InferenceLog block; empty: the default log (`$CRISIS_HOME/inference.db`).
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    logger = get_run_logger()
    policy = saved_block(MonitoringPolicy, monitoring_policy_block) if monitoring_policy_block else MonitoringPolicy()
    log = saved_block(InferenceLog, inference_log_block) if inference_log_block else InferenceLog()
    now = utc_now()
    models = models_to_sweep(log, now, policy.long_window_minutes, model_names, model_name, drill_minutes=policy.short_window_minutes)
    if not models:
        logger.info("no model has records in %s within the last %g minutes: nothing to sweep", log.display_url, policy.long_window_minutes)
        return Completed(name="Nothing to sweep", message="no model in the inference log's long window")
    contract, reference = load_drift_reference(MonitoringPolicy())
    system = system_metrics()
    swept, failed, on_fallback = {}, {}, []
    references: dict[str | None, tuple[DataContract | None, pd.DataFrame | None]] = {None: (contract, reference)}
    for model in models:
        try:
            bound = bind_policy(MonitoringPolicy, model, monitoring_policy_block)
            if bound.block not in references:
                references[bound.block] = load_drift_reference(bound.policy)
            own_contract, own_reference = references[bound.block]
            health = sweep_model_task.with_options(task_run_name=f"sweep-{model}")(
                model, log, bound.policy, now=now, system=system, contract=own_contract, reference=own_reference
            )
        except (CrisisError, MlflowException, OSError) as error:
            failed[model] = f"{type(error).__name__}: {error}"
            logger.error("%s: sweep failed: %s", model, failed[model])
            continue
        swept[model] = [breach.payload() for breach in health.breaches]
        if health.serving is Serving.FALLBACK:
            on_fallback.append(model)
    for model in swept:  # after every breach event is out: the dashboards follow, they never delay a breach
        if dashboard_due(metric_history(model), policy.dashboard_every_minutes):
            refresh_dashboard(ModelRegistry(model_name=model), logger)
    summary = (
        f"swept {len(swept)} of {len(models)} models; breaches: "
        + (", ".join(f"{model} {[b['rule'] for b in found]}" for model, found in swept.items() if found) or "none")
        + (f"; served by their fallback: {', '.join(on_fallback)}" if on_fallback else "")
    )
    if failed:
        return Failed(
            name="Partly swept",
            message=summary + "; failed: " + "; ".join(f"{m} ({why})" for m, why in failed.items()),
            data={"swept": swept, "failed": failed, "on_fallback": on_fallback},
        )
    return Completed(message=summary, data={"swept": swept, "failed": failed, "on_fallback": on_fallback})

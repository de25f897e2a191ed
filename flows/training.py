"""The continuous_training flow: load batch -> validate -> train with stop hook
-> evaluate -> register -> promotion gate (on the holdout and the golden set)
-> keep a fallback model -> calibrate the candidate's routing to it.

A rejected batch trains nothing. A batch that cannot train a sane model (one
class, missing labels) trains nothing either: the run ends Failed (`Refused`)
with the finding in its message. A stopped training ends the run in a state
that says why: Cancelled for a cancel, `Stopped` (Completed) for the stop flag,
a stall or the time budget, Failed for a loss that blew up or diverged. The
partial model is never registered; its checkpoint is, as an MLflow artifact.
A completed training also registers the simple fallback model when the model
has none yet (or the policy says `replace_fallback`).
"""

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from prefect_crisis.core.errors import TrainingError
from prefect_crisis.core.paths import validate_model_name
from prefect_crisis.tasks.loading import load_contract, load_policy, load_registry
from prefect_crisis.tasks.monitoring.dashboard import refresh_dashboard
from prefect_crisis.tasks.run_logs import quiet_expected_errors
from prefect_crisis.tasks.serving.fallback_model import calibrate_routing, keep_fallback_model
from prefect_crisis.tasks.stack_info import stack_summary
from prefect_crisis.tasks.training.data import split_training_data
from prefect_crisis.tasks.training.tasks import register_and_gate, train_model
from prefect_crisis.tasks.validation import SyntheticCondition, load_batch
from prefect_crisis.tasks.validation.report import Verdict
from prefect_crisis.tasks.validation.tasks import validate_and_publish


@flow(name="continuous-training", log_prints=True)
def continuous_training(
    model_name: str = "synthetic",
    contract_block: str = "synthetic-stream",
    policy_block: str | None = None,
    registry_block: str | None = None,
    batch_path: str | None = None,
    synthetic_condition: SyntheticCondition = "clean",
    synthetic_rows: int = 5_000,
    seed: int = 0,
    resume: bool = True,
    storage: str | None = None,
) -> State:
    """Train `model_name` on one validated batch and promote it if it is better.

    Args:
        model_name: registered model name (when no registry block is named).
        contract_block: DataContract block the batch is validated against.
        policy_block: TrainingPolicy block; defaults apply when empty.
        registry_block: ModelRegistry block; empty uses `model_name` on the default MLflow store.
        batch_path: parquet or CSV batch; empty makes a synthetic batch.
        resume: continue from the model's latest checkpoint when data, estimator, its
            parameters and the batch layout match and it was not a failure stop; a refused
            resume trains from scratch and says why in the run's message.

    The message ends with `; fallback vN registered (logistic on f00, f01, f02)` when
    this run registered the fallback model.
    """
    quiet_expected_errors()  # expected errors are one log line wherever the flow runs
    logger = get_run_logger()
    validate_model_name(model_name)
    contract = load_contract(contract_block)
    policy = load_policy(policy_block)
    registry = load_registry(registry_block, model_name)
    logger.info("using %s", stack_summary(registry.display_tracking_uri))
    frame = load_batch(batch_path, synthetic_condition, synthetic_rows, seed)
    validation = validate_and_publish(frame, contract, registry.model_name, storage=storage)
    report = validation.report
    if report.verdict is Verdict.REJECT:
        return Completed(name="Skipped", message=f"batch rejected, nothing trained: {'; '.join(report.rejection_reasons)}")

    nullable = [spec.name for spec in contract.columns if spec.nullable]
    try:
        data = split_training_data(validation.kept, policy, report.fingerprint, nullable)
    except TrainingError as error:
        return Failed(name="Refused", message=str(error))
    training = train_model(data, policy, registry, resume)
    # A refused resume is news the person who asked for it must see in the run's message.
    refused = f"; {training.resume}" if training.resume.refusal else ""
    if (reason := training.outcome.stop_reason) is not None:  # not completed
        message = f"training stopped ({reason}); checkpoint {training.outcome.checkpoint_uri}; nothing registered{refused}"
        return Failed(name="Stopped", message=message) if reason.kind.is_failure else Completed(name="Stopped", message=message)

    candidate = register_and_gate(training, data, registry, policy, report.to_dict())
    verdict = "promoted to champion" if candidate.decision.promote else "registered as challenger, not promoted"
    logger.info("v%s %s: %s", candidate.version, verdict, candidate.decision.reason)
    fallback = keep_fallback_model(registry, data, policy, candidate)
    calibrate_routing(registry, training, data, fallback, policy)
    message = f"v{candidate.version} {verdict}: {candidate.decision.reason}{refused}{fallback.message()}"
    refresh_dashboard(registry, logger)  # a new champion or challenger is news for the dashboard
    return Completed(message=message, data=candidate)

"""The fallback model: which columns it picks on the shapes real tables have,
its two kinds, when training registers or keeps it, and that nothing but a
FALLBACK recovery ever puts it in front (not the promotion gate, not a rollback).
Over a real SQLite MLflow registry with an injected event sink: no Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from prefect_crisis.blocks import ModelRegistry, TrainingPolicy
from prefect_crisis.blocks.rollback_policy import RollbackPolicy
from prefect_crisis.core.errors import RegistryError, TrainingError
from prefect_crisis.core.timeline import ListSink, Timeline
from prefect_crisis.core.vocabulary import AliasAction, CrisisEvent, DecisionKind, TagKey, VersionRole
from prefect_crisis.tasks.drills.synthetic import COLUMN_SHAPES, customer_table, make_batch
from prefect_crisis.tasks.response.incident import predict_with
from prefect_crisis.tasks.response.reading import candidates_from_registry
from prefect_crisis.tasks.response.rollback import LiveWindow, decide_rollback
from prefect_crisis.tasks.serving.fallback_model import fit_fallback, keep_fallback, select_fallback_features
from prefect_crisis.tasks.training.checkpoints import training_experiment
from prefect_crisis.tasks.training.data import split_training_data
from prefect_crisis.tasks.training.gate import decide_promotion, evaluate
from prefect_crisis.tasks.training.promotion import champion_metrics_on, log_candidate

START = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


# -- picking columns ------------------------------------------------------------


def test_columns_are_picked_by_rank_on_skewed_heavy_tailed_and_discrete_shapes():
    rng = np.random.default_rng(7)
    table = customer_table(rng, 4_000)
    # The label moves with a heavy-tailed score, a Poisson count and a mostly-zero refund column;
    # a Pareto revenue with a few huge values carries no signal at all.
    signal = (table["score_2"] > 2).astype(int) + (table["visits_3"] > 3).astype(int) + (table["refunds_1"] > 0).astype(int)
    y = (signal + rng.random(4_000) > 1.8).astype(int).to_numpy()
    features = [name for name in table.columns if name not in ("customer_id", "plan")]
    chosen = select_fallback_features(table[features].to_numpy(float), y, features, 3)
    assert chosen == ["score_2", "visits_3", "refunds_1"]


@pytest.mark.parametrize("shape", sorted(COLUMN_SHAPES))
def test_a_shifted_column_of_each_shape_beats_noise_of_the_same_shape(shape):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2_000)
    draw = COLUMN_SHAPES[shape]
    informative = np.where(y == 1, draw(rng, 2_000) * 1.5 + 1, draw(rng, 2_000))  # stretched and moved for class 1
    X = np.column_stack([draw(rng, 2_000), informative, draw(rng, 2_000)])
    assert select_fallback_features(X, y, ["noise_a", "signal", "noise_b"], 1) == ["signal"]


def test_one_broken_row_does_not_hide_the_informative_column():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1_000)
    signal = rng.standard_normal(1_000) + 0.6 * y
    signal[np.flatnonzero(y == 1)[0]] = -1e9  # raw means and variances are ruled by this one row
    weak = rng.standard_normal(1_000) + 0.15 * y
    assert select_fallback_features(np.column_stack([weak, signal]), y, ["weak", "signal"], 1) == ["signal"]


def test_constant_columns_are_never_picked_and_all_constant_is_an_error():
    y = np.array([0, 1] * 50)
    X = np.column_stack([np.ones(100), np.arange(100) + 50 * y])
    assert select_fallback_features(X, y, ["constant", "useful"], 3) == ["useful"]
    with pytest.raises(TrainingError, match="fallback_model='prior'"):
        select_fallback_features(np.ones((100, 2)), y, ["a", "b"], 3)


# -- the two kinds ----------------------------------------------------------------


@pytest.fixture
def data():
    return split_training_data(make_batch(3_000, seed=11), TrainingPolicy(), "batch-11")


def test_the_logistic_fallback_reads_its_few_columns_and_is_useful(data):
    fallback = fit_fallback(data, TrainingPolicy())
    assert fallback.kind == "logistic" and isinstance(fallback.estimator, Pipeline)
    # the label is built from f00..f04 with falling weights: the strongest three are picked
    assert fallback.features == ("f00", "f01", "f02") and fallback.estimator.n_features_in_ == 3
    assert fallback.metrics["accuracy"] > 0.8 and set(fallback.metrics) == {"accuracy", "f1", "log_loss"}
    assert fallback.describe() == "logistic on f00, f01, f02"


def test_named_fallback_features_are_used_and_unknown_ones_refused(data):
    fallback = fit_fallback(data, TrainingPolicy(fallback_features=["f04", "f00"], fallback_max_features=1))
    assert fallback.features == ("f04", "f00")
    with pytest.raises(TrainingError, match="not feature columns"):
        fit_fallback(data, TrainingPolicy(fallback_features=["f00", "tenure"]))


def test_the_prior_fallback_predicts_the_label_shares_and_registers_every_column(data):
    fallback = fit_fallback(data, TrainingPolicy(fallback_model="prior"))
    assert isinstance(fallback.estimator, DummyClassifier) and fallback.features == tuple(data.features)
    share = float(np.mean(data.y_train == 1))
    assert np.allclose(fallback.estimator.predict_proba(data.X_holdout[:3])[:, 1], share)
    assert fallback.metrics["accuracy"] < 0.6 and fallback.describe() == "prior"


# -- registering, keeping, replacing ------------------------------------------------


@pytest.fixture
def sink():
    return ListSink()


@pytest.fixture
def clock():
    return [START]


@pytest.fixture
def registry(tmp_path, sink, clock):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = ModelRegistry(model_name="churn", tracking_uri=uri).use(
        client=MlflowClient(tracking_uri=uri, registry_uri=uri), clock=lambda: clock[0]
    )
    return registry.use(timeline=Timeline(clock=registry.now, sink=sink))


def register_candidate(registry: ModelRegistry, data, labels_flipped: bool = False) -> str:
    """An ordinary candidate on all columns (as the promotion gate registers one)."""
    from sklearn.linear_model import LogisticRegression

    y = 1 - data.y_train if labels_flipped else data.y_train
    model = LogisticRegression(max_iter=500).fit(data.X_train, y)
    client = registry.client
    run = client.create_run(training_experiment(client, registry.model_name))  # artifacts beside the store, not in ./mlruns
    client.log_metric(run.info.run_id, "accuracy", float(model.score(data.X_holdout, data.y_holdout)))
    info = log_candidate(model, data.X_holdout, run.info.run_id, client)
    return registry.register_version(info.model_uri, run.info.run_id, info.model_id, {TagKey.FEATURES: ",".join(data.features)}).version


def test_the_first_training_registers_the_fallback_with_its_tags_metrics_and_a_plain_move(registry, data, sink):
    result = keep_fallback(registry, data, TrainingPolicy(), flow_run_id="run-1")
    assert result.registered and result.message() == "; fallback v1 registered (logistic on f00, f01, f02)"
    fallback = registry.version_by_alias(registry.fallback_alias)
    assert fallback.version == "1" and fallback.is_fallback
    assert fallback.tags[TagKey.ROLE] == VersionRole.FALLBACK and fallback.tags[TagKey.FEATURES] == "f00,f01,f02"
    assert (fallback.tags[TagKey.FINGERPRINT], fallback.tags[TagKey.FLOW_RUN_ID]) == ("batch-11", "run-1")
    assert fallback.metrics["accuracy"] > 0.8 and "log_loss" in fallback.metrics
    run = registry.client.get_run(fallback.run_id)
    assert run.data.params["fallback_model"] == "logistic" and run.info.status == "FINISHED"
    assert registry.champion() is None and registry.version_by_alias(registry.challenger_alias) is None
    (move,) = registry.audit_trail(registry.fallback_alias)
    assert (move.action, move.to_version) == (AliasAction.MOVE, "1")
    # registered, and nothing that says serving switched to it
    assert [event.event for event in sink] == [CrisisEvent.MODEL_REGISTERED]
    # the crisis response scores it through its own columns
    window = make_batch(500, seed=12)
    predicted, probabilities = predict_with(registry, "1", window)
    assert np.mean(predicted == window["label"].to_numpy()) > 0.75 and probabilities.shape == (500, 2)


def test_an_ordinary_retrain_never_replaces_the_fallback(registry, data):
    keep_fallback(registry, data, TrainingPolicy())
    again = keep_fallback(registry, data, TrainingPolicy(fallback_model="prior"))
    assert (again.registered, again.version, again.message()) == (False, "1", "")
    assert [v.version for v in registry.versions()] == ["1"] and registry.version_by_alias(registry.fallback_alias).version == "1"


def test_replace_fallback_lets_the_next_training_replace_it(registry, data, clock):
    keep_fallback(registry, data, TrainingPolicy())
    clock[0] += timedelta(hours=1)
    replaced = keep_fallback(registry, data, TrainingPolicy(fallback_model="prior", replace_fallback=True))
    assert replaced.registered and replaced.version == "2" and replaced.message() == "; fallback v2 registered (prior)"
    assert registry.version_by_alias(registry.fallback_alias).version == "2"
    last = registry.audit_trail(registry.fallback_alias)[-1]
    assert (last.from_version, last.to_version) == ("1", "2") and "replaces v1" in last.reason


def test_a_users_own_fallback_is_kept(registry, data):
    own = register_candidate(registry, data)
    registry.move_alias(registry.fallback_alias, own, "our hand-built rules model")
    result = keep_fallback(registry, data, TrainingPolicy())
    assert (result.registered, result.version) == (False, own)
    assert [v.version for v in registry.versions()] == [own] and registry.version_by_alias(registry.fallback_alias).version == own


# -- never promoted, never a challenger, never a rollback target ----------------------


def test_the_fallback_is_never_promoted_nor_a_challenger(registry, data):
    version = keep_fallback(registry, data, TrainingPolicy()).version
    with pytest.raises(RegistryError, match="is the fallback model"):
        registry.promote(version, "looks good")
    with pytest.raises(RegistryError, match="is the fallback model"):
        registry.move_alias(registry.challenger_alias, version, "new candidate")
    assert registry.champion() is None and registry.version_by_alias(registry.challenger_alias) is None
    # a FALLBACK recovery may put it in front
    registry.move_alias(registry.champion_alias, version, "fallback: nowhere stable", "inc-1", action=AliasAction.FALLBACK)
    assert registry.champion().version == version


def test_the_fallback_is_never_a_rollback_target_even_after_serving_long(registry, data, clock):
    good = register_candidate(registry, data)
    fallback = keep_fallback(registry, data, TrainingPolicy()).version
    poisoned = register_candidate(registry, data, labels_flipped=True)
    registry.promote(good, "first")
    clock[0] += timedelta(minutes=5)  # too short to count as stable
    registry.move_alias(registry.champion_alias, fallback, "fallback: nowhere stable", "inc-0", action=AliasAction.FALLBACK)
    clock[0] += timedelta(days=2)  # the fallback served for days without incident
    registry.promote(poisoned, "retrained")
    clock[0] += timedelta(hours=4)

    champion, candidates, _ = candidates_from_registry(registry)
    by_version = {c.version: c for c in candidates}
    assert champion.version == poisoned and by_version[fallback].fallback and not by_version[good].fallback
    live = LiveWindow({"accuracy": 300}, {"accuracy": 1_000})
    decision = decide_rollback(live, champion, candidates, RollbackPolicy(stability_window_minutes=60), now=clock[0], baseline={"accuracy": 0.9})
    assert decision.kind is DecisionKind.FALLBACK and decision.target_version is None


def test_a_fallback_champion_is_found_and_judged_on_its_own_columns_so_a_retrain_can_beat_it(registry, data):
    from sklearn.linear_model import LogisticRegression

    fallback = keep_fallback(registry, data, TrainingPolicy()).version
    registry.move_alias(registry.champion_alias, fallback, "fallback", "inc-1", action=AliasAction.FALLBACK)
    champion, _, _ = candidates_from_registry(registry)
    assert champion is not None and champion.version == fallback  # judged like any champion

    later = split_training_data(make_batch(3_000, seed=12), TrainingPolicy(), "batch-12")  # the retrain's batch
    version, scored = champion_metrics_on(registry, later.X_holdout, later.y_holdout, later.classes, later.features)
    recorded = registry.version(fallback).metrics
    assert version == fallback and scored != recorded and scored["accuracy"] > 0.8  # scored on the retrain's holdout
    # without the column names a 20-column holdout cannot be fed to a 3-column model: only the record is left
    assert champion_metrics_on(registry, later.X_holdout, later.y_holdout, later.classes)[1] == recorded

    retrain = LogisticRegression(max_iter=500).fit(later.X_train, later.y_train)
    decision = decide_promotion(
        evaluate(retrain, later.X_holdout, later.y_holdout, later.classes), scored, TrainingPolicy(), holdout_rows=len(later.y_holdout)
    )
    assert decision.promote, decision.reason


def test_a_champion_reading_a_column_the_holdout_lacks_is_judged_by_its_record(registry, data):
    fallback = keep_fallback(registry, data, TrainingPolicy()).version
    registry.move_alias(registry.champion_alias, fallback, "fallback", "inc-1", action=AliasAction.FALLBACK)
    narrower = [name for name in data.features if name != "f01"]
    columns = [data.features.index(name) for name in narrower]
    _, metrics = champion_metrics_on(registry, data.X_holdout[:, columns], data.y_holdout, data.classes, narrower)
    assert metrics == registry.version(fallback).metrics


def test_the_window_used_to_score_a_fallback_needs_only_its_columns(registry, data):
    version = keep_fallback(registry, data, TrainingPolicy()).version
    window = pd.DataFrame({"f00": [0.5, -1.0], "f01": [0.1, -0.2], "f02": [0.0, 0.3]})
    predicted, _ = predict_with(registry, version, window)
    assert len(predicted) == 2


def test_a_holdout_too_small_to_judge_gives_no_fallback_and_keeps_the_one_there(registry, data):
    tiny = split_training_data(make_batch(60, seed=13), TrainingPolicy(), "batch-13")  # 30 holdout rows: half the batch, below 50
    nothing = keep_fallback(registry, tiny, TrainingPolicy())
    assert (nothing.registered, nothing.version) == (False, None) and registry.versions() == []
    assert nothing.message() == "; no fallback registered (holdout of 30 rows is below min_holdout_rows 50)"
    keep_fallback(registry, data, TrainingPolicy())
    kept = keep_fallback(registry, tiny, TrainingPolicy(replace_fallback=True))
    assert (kept.registered, kept.version, kept.message()) == (False, "1", "") and "not replaced" in kept.detail

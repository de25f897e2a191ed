"""The default models on real data (breast-cancer, digits, wine; bundled with scikit-learn), as a new user gets them:
the default primary trained the way continuous-training trains it (TrainingPolicy() defaults: the stratified holdout,
a scaled SGD in stoppable mini-batches), beside the reference a user would otherwise pick (a scaled logistic regression,
5-fold cross-validated on all rows); the default fallback (grown by importance to 0.85 x the primary); and what the
serving wrapper answers on fresh rows, with the routing calibration the training logs (on only where it wins) and
without it, against the primary's own `predict()`.

Run: `.venv/bin/python benchmarks/bench_real_models.py --seeds 10` (about a minute; `--primary raw-sgd` for the old
default, a weak primary, where routing has something to win); results in benchmarks/results/real_models.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results" / "real_models.json"


def one_seed(name: str, seed: int, primary_kind: str = "default") -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from prefect_crisis.blocks.fallback_policy import FallbackPolicy
    from prefect_crisis.blocks.registry import ModelRegistry
    from prefect_crisis.blocks.training_policy import TrainingPolicy
    from prefect_crisis.core.timeline import ListSink, Timeline
    from prefect_crisis.tasks.drills.datasets import LABEL, load_dataset
    from prefect_crisis.tasks.serving.confidence_routing import fit_routing
    from prefect_crisis.tasks.serving.fallback_model import fit_fallback
    from prefect_crisis.tasks.serving.router import FallbackRouter, ServedVersion
    from prefect_crisis.tasks.training.data import policy_estimator, split_training_data
    from prefect_crisis.tasks.training.family import choose_family
    from prefect_crisis.tasks.training.loop import make_estimator, train_with_stop_hook
    from prefect_crisis.tasks.training.stopping import stop_any

    data = load_dataset(name)
    features = list(data.features)
    batch, fresh = data.split(seed=seed, parts=(0.8, 0.2))
    policy = TrainingPolicy(seed=seed)
    training = split_training_data(batch, policy, fingerprint=f"{name}-{seed}")
    chosen_family = policy.estimator
    if primary_kind == "raw-sgd":  # the old default: SGD on raw features, a weak primary (routing has something to win)
        from sklearn.linear_model import SGDClassifier

        primary = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed).fit(training.X_train, training.y_train)
    else:
        estimator = policy_estimator(policy, training)
        if primary_kind == "auto":  # TrainingPolicy(estimator="auto"): the family chosen on the training part's folds
            choice = choose_family(
                training.X_train,
                training.y_train,
                training.classes,
                epochs=policy.epochs,
                batch_size=policy.batch_size,
                seed=seed,
                scale=policy.scale_features,
                impute=training.imputes,
                stop=stop_any(),
            )
            chosen_family = choice.family
            estimator = make_estimator(chosen_family, None, seed, scale=policy.scale_features, impute=training.imputes)
        primary = train_with_stop_hook(
            estimator,
            training.X_train,
            training.y_train,
            classes=training.classes,
            epochs=policy.epochs,
            batch_size=policy.batch_size,
            stop=stop_any(),
            seed=seed,
        ).estimator
    holdout_accuracy = float((primary.predict(training.X_holdout) == training.y_holdout).mean())
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3_000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    reference_cv = float(cross_val_score(reference, data.frame[features].to_numpy(float), data.frame[LABEL].to_numpy(), cv=folds).mean())
    fallback = fit_fallback(training, policy, primary_accuracy=holdout_accuracy)
    columns = [features.index(column) for column in fallback.features]
    routing = fit_routing(primary, fallback.estimator, training.X_holdout, training.X_holdout[:, columns], training.y_holdout, seed=seed)
    truth = fresh[LABEL].to_numpy()

    def served(calibration) -> tuple[float, float]:
        router = FallbackRouter(ModelRegistry(model_name=f"bench-{name}"), FallbackPolicy(), timeline=Timeline(sink=ListSink()))
        router.primary = ServedVersion("1", tuple(features), primary, calibration)
        router.fallback = ServedVersion("2", tuple(fallback.features), fallback.estimator)
        answer = router.predict(fresh[features])
        return float((answer["prediction"].to_numpy() == truth).mean()), float((answer["answered_by"] == "fallback").mean())

    on, routed = served(routing)
    off, _ = served(None)
    return {
        "data set": name,
        "seed": seed,
        "reference_cv": reference_cv,
        "primary_holdout": holdout_accuracy,
        "primary_fresh": float((primary.predict(fresh[features].to_numpy(float)) == truth).mean()),
        "fallback_holdout": fallback.metrics.get("accuracy"),
        "fallback_fresh": float((fallback.estimator.predict(fresh[list(fallback.features)].to_numpy(float)) == truth).mean()),
        "fallback_columns": len(fallback.features),
        "served_routing_off": off,
        "served_routing_on": on,
        "routed_share": routed,
        "routing_on": routing.threshold is not None,
        "family": chosen_family if primary_kind != "raw-sgd" else "raw-sgd",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--primary",
        choices=("default", "auto", "raw-sgd"),
        default="default",
        help="the primary: the default policy's, the family estimator='auto' chooses, or an SGD on raw features (the old default, weak)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = [one_seed(name, seed, args.primary) for name in ("breast-cancer", "digits", "wine") for seed in range(args.seeds)]
    frame = pd.DataFrame(rows)
    table = frame.groupby("data set", sort=False).agg(
        reference_cv=("reference_cv", "mean"),
        primary_fresh=("primary_fresh", "mean"),
        primary_worst_gap=("primary_fresh", "min"),
        fallback_fresh=("fallback_fresh", "mean"),
        fallback_columns=("fallback_columns", "mean"),
        served_off=("served_routing_off", "mean"),
        served_on=("served_routing_on", "mean"),
        routing_on=("routing_on", "sum"),
        routed=("routed_share", "mean"),
    )
    gaps = frame.assign(gap=frame.reference_cv - frame.primary_fresh, served_gap=frame.served_routing_on - frame.primary_fresh)
    table["primary_worst_gap"] = gaps.groupby("data set", sort=False)["gap"].max()
    table["served_on_minus_own_worst"] = gaps.groupby("data set", sort=False)["served_gap"].min()
    families = frame.groupby("data set", sort=False)["family"].agg(lambda chosen: ", ".join(f"{f} {n}" for f, n in chosen.value_counts().items()))
    print(f"{args.seeds} seeds per data set; primary: {args.primary}; 80 % batch (TrainingPolicy() defaults) / 20 % fresh rows")
    print(
        "| data set | scaled logistic (5-fold CV) | primary, fresh | worst gap | family (seeds) | fallback, fresh (columns) | served, routing off | served, routing on (on in) | worst served - own |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for name, row in table.iterrows():
        print(
            f"| {name} | {row.reference_cv:.3f} | {row.primary_fresh:.3f} | {row.primary_worst_gap:+.3f} | {families[name]} | {row.fallback_fresh:.3f} ({row.fallback_columns:.1f}) | "
            f"{row.served_off:.3f} | {row.served_on:.3f} ({int(row.routing_on)}/{args.seeds}) | {row.served_on_minus_own_worst:+.3f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rows": rows}, indent=2, default=float))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()

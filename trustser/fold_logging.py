"""A fold's evaluation written to MLflow: its metrics and training curve, warnings (tagged and printed), and the
artifacts behind the numbers (predictions, confusion matrix, fairness rates, calibration, attack and corruption
records, speakers and fold assignment). Kept apart from ``trustser.evaluation``, which measures and logs nothing,
so that the measurements are tested without a tracking store and the logging is one readable function.
"""

from __future__ import annotations

from typing import Any

from trustser import EMOTIONS, tracking
from trustser.corpora import CorpusIndex, Fold
from trustser.evaluation import FoldEvaluation, training_warnings
from trustser.run_config import RunConfig


def log_fold_evaluation(
    ev: FoldEvaluation,
    index: CorpusIndex,
    fold: Fold,
    config: RunConfig,
    sustainability: dict[str, float] | None = None,
) -> None:
    """Everything of ``ev`` into the active (fold) run; ``sustainability`` (the backbone's cost) beside it."""
    import mlflow

    from trustser.plots import confusion_figure

    for h in ev.train.history:
        mlflow.log_metrics({"train_loss": h["train_loss"], "val_uar": h["val_uar"]}, step=int(h["epoch"]))
    mlflow.log_metrics({**ev.metrics, **(sustainability or {})})
    perf, fair = ev.performance, ev.fairness
    warnings = training_warnings(ev, fold.name)
    if warnings:
        mlflow.set_tag("trustser.warning", " | ".join(warnings)[:5000])
        import click

        for w in warnings:  # printed, not only logged: nobody should read this profile without being told
            click.echo(f"trustser: warning: {w}", err=True)
    if fair.reason:
        mlflow.set_tag("fairness_undefined", fair.reason[:5000])
    for name, probe in ev.probes.items():
        if probe.reason:
            mlflow.set_tag(f"privacy_{name}_undefined", probe.reason)
    log_attack_artifacts(ev.attacks, config, fold)
    log_robustness_artifacts(ev.robustness)
    tracking.log_figure(
        confusion_figure(perf.confusion, EMOTIONS, f"{config.backbone} {fold.name}"), "confusion_matrix.png"
    )
    tracking.log_json(
        {
            "classes": list(EMOTIONS),
            "rows": "true class",
            "columns": "predicted class",
            "counts": perf.confusion.tolist(),
        },
        "confusion_matrix.json",
    )
    rows = [
        (cid, index.clips[cid].speaker, index.clips[cid].gender or "", EMOTIONS[t], EMOTIONS[p])
        for cid, t, p in zip(ev.test_ids, ev.y_true, ev.y_pred)
    ]
    mlflow.log_text(tracking.csv_text(("clip_id", "speaker", "gender", "true", "predicted"), rows), "predictions.csv")
    mlflow.log_text(fair.rates_frame().to_csv(index=False), "fairness_rates.csv")
    log_calibration(ev.calibration, f"{config.backbone} {fold.name}")
    tracking.log_json({part: index.speakers(ids) for part, ids in fold.partitions().items()}, "speakers.json")
    tracking.log_json(fold.partitions(), "fold_assignment.json")


def log_calibration(calibration: Any, title: str) -> None:
    """The reliability diagram and its table, beside the fold's ECE / Brier metrics."""
    from trustser.metrics.calibration import reliability_figure

    fig = reliability_figure(calibration.table, f"{title}: reliability (ECE {calibration.ece:.3f})")
    tracking.log_figure(fig, "calibration/reliability.png")
    tracking.log_json(
        {
            "ece": calibration.ece,
            "brier": calibration.brier,
            "n_bins": calibration.n_bins,
            "bins": [b.__dict__ for b in calibration.table],
        },
        "calibration/reliability.json",
    )


def log_robustness_artifacts(run: Any) -> None:
    """Each corruption's parameters (params ``robustness.<name>``), why one was skipped or left clips out (tags),
    and every clip's clean and corrupted prediction (``robustness/clips.csv``)."""
    import json

    import mlflow

    if run is None:
        return
    tracking.log_params_safely({f"robustness.{c.name}": json.dumps(c.as_params()) for c in run.corruptions})
    for name, why in run.skipped.items():
        mlflow.set_tag(f"robustness_{name}_skipped", why[:5000])
    for name, note in run.notes.items():
        mlflow.set_tag(f"robustness_{name}_note", note[:5000])
    mlflow.log_text(run.clips_frame().to_csv(index=False), "robustness/clips.csv")


def log_attack_artifacts(attacks: dict[str, Any], config: RunConfig, fold: Fold) -> None:
    import mlflow

    if not attacks:
        return
    import pandas as pd

    from trustser.metrics.safety import SweepResult, sweep_figure

    for attack, by_snr in attacks.items():
        primary = by_snr[float(config.trust.snr_db)]
        if primary.reason:
            mlflow.set_tag(f"safety_{attack}_note", primary.reason[:5000])
        frames = [r.records_frame().assign(target_snr_db=snr) for snr, r in by_snr.items()]
        mlflow.log_text(pd.concat(frames).to_csv(index=False), f"safety/{attack}_clips.csv")
    if all(len(by_snr) < 2 for by_snr in attacks.values()):
        return  # no attack was swept (trust.sweep_attacks): a curve of one point per attack says nothing
    sweep = SweepResult(attacks)
    mlflow.log_text(sweep.table().to_csv(index=False), "safety/snr_sweep.csv")
    tracking.log_figure(sweep_figure(sweep, f"{config.backbone} {fold.name}"), "safety/snr_sweep.png")

"""One experiment: a backbone over a corpus's folds, each fold trained, evaluated and logged as a nested MLflow run.

``run_experiment(config)`` is a plain function returning the results, so the CLI, ``mlflow run`` and the study all
compose it the same way.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import trustser
from trustser import EMOTIONS, MAX_SECONDS
from trustser.backbones.loading import load_backbone
from trustser.corpora import CorpusIndex, Fold, load_corpus
from trustser.errors import ConfigError
from trustser.features import ExtractionStats, FeatureStore, extract_features
from trustser.metrics.fairness import fairness_report
from trustser.metrics.performance import performance_report
from trustser.metrics.privacy import PROBE_CONFIG, gender_probe, speaker_probe
from trustser.training import TrainConfig, TrainResult, predict, train_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    backbone: str = "whisper_base"
    dataset: str = "emodb"
    data_root: str | None = None
    corpus_options: tuple[tuple[str, str], ...] = ()  # loader options, e.g. (("merge_excited", "false"),)
    folds: str = "all"  # "all", or fold numbers "1,3", 1-based
    weights: str | None = None
    random_init: bool = False
    cache_dir: str | None = None
    max_seconds: float = MAX_SECONDS
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: str | None = None
    progress: bool = True


@dataclass
class FoldResult:
    fold: str
    run_id: str | None
    metrics: dict[str, float]
    train: TrainResult


@dataclass
class ExperimentResult:
    parent_run_id: str | None
    folds: list[FoldResult]
    summary: dict[str, float]


def select_folds(folds: list[Fold], spec: str) -> list[Fold]:
    if spec in ("all", "", None):
        return folds
    try:
        wanted = [int(x) for x in str(spec).split(",")]
    except ValueError:
        raise ConfigError(f"folds must be 'all' or comma-separated fold numbers, got '{spec}'") from None
    bad = [n for n in wanted if not 1 <= n <= len(folds)]
    if bad:
        raise ConfigError(f"folds {bad} out of range: this corpus has folds 1..{len(folds)}")
    return [folds[n - 1] for n in wanted]


def evaluate_fold(index: CorpusIndex, features: FeatureStore, fold: Fold, config: TrainConfig,
                  progress: bool = False) -> tuple[dict[str, float], TrainResult, dict[str, Any]]:
    """Train on the fold's train part, select on validation, evaluate on test; pure of any logging."""
    labels = {c: index.clips[c].label for c in index.clips}
    result = train_head(features, labels, list(fold.train), list(fold.validation), len(EMOTIONS), config,
                        progress=progress, desc=f"{fold.name} train")
    test_ids = list(fold.test)
    y_true = np.array([labels[c] for c in test_ids])
    y_pred = predict(result.head, features, test_ids, config.batch_size)
    perf = performance_report(y_true, y_pred, len(EMOTIONS))
    genders = [index.clips[c].gender for c in test_ids]
    fair = fairness_report(y_true, y_pred, genders, len(EMOTIONS))
    metrics = {f"test_{k}": v for k, v in perf.to_dict().items()}
    metrics.update({f"fairness_{k}": v for k, v in fair.to_dict().items()})
    probe_config = TrainConfig(**{**config.as_params(), "epochs": PROBE_CONFIG.epochs})
    gender = gender_probe(features, index.clips, fold.train, fold.validation, fold.test, probe_config)
    speaker = speaker_probe(features, index.clips, fold.train, probe_config)
    metrics.update(gender.to_dict("privacy_gender"))
    metrics.update(speaker.to_dict("privacy_speaker"))
    metrics["best_epoch"] = float(result.best_epoch)
    metrics["best_val_uar"] = result.best_val_uar
    details = {"performance": perf, "fairness": fair, "test_ids": test_ids, "y_true": y_true, "y_pred": y_pred,
               "probes": {"gender": gender, "speaker": speaker}}
    return metrics, result, details


def run_experiment(config: RunConfig) -> ExperimentResult:
    import mlflow

    from trustser import tracking

    started = time.perf_counter()
    index = load_corpus(config.dataset, config.data_root, dict(config.corpus_options))
    folds = select_folds(index.folds, config.folds)
    backbone, source = load_backbone(config.backbone, config.weights, config.random_init, config.train.seed)
    tracking.setup_tracking(config.experiment)
    tags = {
        "backbone": config.backbone, "dataset": config.dataset,
        "weights": "random" if source.is_random else "pretrained", "weights_source": source.kind,
        "trustser_version": trustser.__version__,
    }
    with mlflow.start_run(run_name=f"{config.backbone}/{config.dataset}", tags=tags) as parent:
        mlflow.set_tags(tags)
        tracking.log_params_safely(parent_params(config, source, index, backbone.num_parameters()))
        t0 = time.perf_counter()
        features, stats = extract_features(index, backbone, source, config.cache_dir, config.max_seconds,
                                           progress=config.progress)
        mlflow.log_metric("time_extract_s", time.perf_counter() - t0)
        folds = select_folds(index.folds, config.folds)  # audio skips may have dropped clips from the folds
        log_corpus_artifacts(index, stats)
        results = []
        for fold in folds:
            results.append(run_fold(index, features, fold, config, tags, source.identity))
        summary = aggregate([r.metrics for r in results])
        summary["wall_time_s"] = time.perf_counter() - started
        mlflow.log_metrics({k: v for k, v in summary.items() if np.isfinite(v)})
        tracking.log_json({"folds": [r.fold for r in results], "summary": summary}, "summary.json")
        return ExperimentResult(parent.info.run_id, results, summary)


def run_fold(index: CorpusIndex, features: FeatureStore, fold: Fold, config: RunConfig, tags: dict[str, str],
             weights_identity: str) -> FoldResult:
    import mlflow

    from trustser import tracking
    from trustser.plots import confusion_figure

    with mlflow.start_run(run_name=fold.name, nested=True, tags={**tags, "fold": fold.name}) as run:
        mlflow.log_params({
            "backbone": config.backbone, "dataset": config.dataset, "fold": fold.name,
            "weights_identity": weights_identity[:64], **{f"head.{k}": v for k, v in config.train.as_params().items()},
            "n_train": len(fold.train), "n_validation": len(fold.validation), "n_test": len(fold.test),
        })
        t0 = time.perf_counter()
        metrics, result, details = evaluate_fold(index, features, fold, config.train, config.progress)
        metrics["time_train_s"] = time.perf_counter() - t0
        for h in result.history:
            mlflow.log_metrics({"train_loss": h["train_loss"], "val_uar": h["val_uar"]}, step=int(h["epoch"]))
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        perf, fair = details["performance"], details["fairness"]
        if fair.reason:
            mlflow.set_tag("fairness_undefined", fair.reason[:5000])
        for name, probe in details["probes"].items():
            if probe.reason:
                mlflow.set_tag(f"privacy_{name}_undefined", probe.reason)
        mlflow.log_figure(confusion_figure(perf.confusion, EMOTIONS, f"{config.backbone} {fold.name}"),
                          "confusion_matrix.png")
        rows = ["clip_id,speaker,gender,true,predicted"]
        for cid, t, p in zip(details["test_ids"], details["y_true"], details["y_pred"]):
            clip = index.clips[cid]
            rows.append(f"{cid},{clip.speaker},{clip.gender or ''},{EMOTIONS[t]},{EMOTIONS[p]}")
        mlflow.log_text("\n".join(rows) + "\n", "predictions.csv")
        mlflow.log_text(fair.rates_frame().to_csv(index=False), "fairness_rates.csv")
        tracking.log_json({part: index.speakers(ids) for part, ids in fold.partitions().items()}, "speakers.json")
        tracking.log_json(fold.partitions(), "fold_assignment.json")
        return FoldResult(fold.name, run.info.run_id, metrics, result)


def parent_params(config: RunConfig, source, index: CorpusIndex, num_params: int) -> dict[str, Any]:
    return {
        "backbone": config.backbone, "dataset": config.dataset, "data_root": str(index.root),
        "folds": config.folds, "weights": str(source.path) if source.path else source.kind,
        "weights_source": source.kind, "weights_identity": source.identity[:64], "random_init": config.random_init,
        "max_seconds": config.max_seconds, "backbone_params": num_params,
        **{f"head.{k}": v for k, v in config.train.as_params().items()},
        "epochs": config.train.epochs, "batch_size": config.train.batch_size, "lr": config.train.lr,
        "seed": config.train.seed, "python": platform.python_version(),
    }


def log_corpus_artifacts(index: CorpusIndex, stats: ExtractionStats) -> None:
    import mlflow

    from trustser import tracking

    mlflow.log_metrics({**stats.as_metrics(), "n_clips": len(index.clips), "n_skipped": len(index.skipped)})
    lines = ["item,reason,detail"] + [f"\"{s.item}\",{s.reason},\"{s.detail}\"" for s in index.skipped]
    mlflow.log_text("\n".join(lines) + "\n", "skipped.csv")
    tracking.log_json({f.name: f.partitions() for f in index.folds}, "folds.json")


def aggregate(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean and std across folds of every metric (NaN folds excluded from that metric's mean)."""
    out: dict[str, float] = {}
    keys = sorted({k for m in fold_metrics for k in m})
    for key in keys:
        values = np.array([m.get(key, np.nan) for m in fold_metrics], dtype=float)
        finite = values[np.isfinite(values)]
        out[f"{key}_mean"] = float(finite.mean()) if finite.size else float("nan")
        out[f"{key}_std"] = float(finite.std()) if finite.size else float("nan")
    return out


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    train_fields = set(TrainConfig.__dataclass_fields__)
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    rest = {k: v for k, v in values.items() if k not in train_fields}
    return RunConfig(train=train, **rest)



"""One experiment: a backbone over a corpus's folds, each fold trained, evaluated and logged as a nested MLflow run.

``run_experiment(config)`` is a plain function returning the results, so the CLI, ``mlflow run`` and the study all
compose it the same way.

The run configuration and results are in ``trustser.run_config``; one fold's measurements in
``trustser.evaluation`` and their logging in ``trustser.fold_logging``; the corpus as MLflow dataset inputs in
``trustser.run_datasets``; resuming an interrupted run in ``trustser.run_resume`` (their docstrings say how).
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import numpy as np

import trustser
from trustser import EMOTIONS, tracking
from trustser.backbones.loading import load_backbone
from trustser.corpora import CorpusIndex, Fold, load_corpus
from trustser.cross_corpus import CrossCorpus, check_distinct
from trustser.devices import resolve_device
from trustser.errors import ConfigError
from trustser.evaluation import (  # noqa: F401 (re-exported: evaluate_fold is patched here by the resume tests)
    FoldEvaluation,
    attack_subset,
    evaluate_fold,
    probe_train_config,
)
from trustser.fold_logging import log_fold_evaluation
from trustser.features import ExtractionStats, FeatureStore, drop_unusable, extract_features, resident_budget
from trustser.metrics.headline import headline_metrics, pool
from trustser.metrics.verdicts import pooled_fairness_verdicts
from trustser.run_config import ExperimentResult, FoldResult, RunConfig, TrustConfig, config_hash  # noqa: F401 (re-exported)
from trustser.run_datasets import CorpusTable, corpus_table, log_corpus_input, log_fold_inputs  # noqa: F401
from trustser.run_resume import (  # noqa: F401 (re-exported)
    CONFIG_HASH_TAG,
    KIND_TAG,
    RESUMABLE_TAG,
    RESUME_KEY_TAG,
    load_fold_state,
    log_fold_state,
    mark_dead_runs,
    resume_folds,
    resume_key,
)

log = logging.getLogger(__name__)


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


def run_experiment(config: RunConfig) -> ExperimentResult:
    """Extract (or reuse) the features, then train, evaluate and log every selected fold under one parent run.

    A top-level run (``trustser run``, ``mlflow run``) resumes an interrupted one of the same configuration (see
    ``resume_folds``): dead runs are marked KILLED and folds that finished are reused, not computed again. Inside a
    study trial the study's workers mark a dead trial's runs KILLED (``trial_queue.mark_dead_trial_runs``) and
    retry its configuration; the retry reuses the dead trial's finished folds the same way.
    """
    import mlflow

    started = time.perf_counter()
    config.trust.check_sweep()
    index = load_corpus(config.dataset, config.data_root, dict(config.corpus_options))
    test_index = None
    if config.test_dataset:  # loaded before anything runs: a missing corpus fails now, not after training
        check_distinct(config.dataset, config.test_dataset)
        test_index = load_corpus(config.test_dataset, config.test_data_root)
    folds = select_folds(index.folds, config.folds)
    backbone, source = load_backbone(
        config.backbone, config.weights, config.random_init, config.train.seed, offline=config.offline
    )
    device = resolve_device(config.device)  # a missing GPU fails here, before the run exists
    backbone.to(device)
    tracking.setup_tracking(config.experiment)
    nested = mlflow.active_run() is not None  # inside a study trial: this run nests under the trial's run
    chash = config_hash(config)
    tags = {
        "backbone": config.backbone,
        "dataset": config.dataset,
        "weights": "random" if source.is_random else "pretrained",
        "weights_source": source.kind,
        "trustser_version": trustser.__version__,
        CONFIG_HASH_TAG: chash,
        RESUMABLE_TAG: "false" if nested else "true",
    }
    parent_tags = {**tags, KIND_TAG: "experiment", **tracking.process_tags()}
    with mlflow.start_run(run_name=f"{config.backbone}/{config.dataset}", tags=parent_tags, nested=nested) as parent:
        mlflow.set_tags(parent_tags)
        parent_id = parent.info.run_id
        if not nested:  # before extraction, which may take hours: a dead run shows as dead from now on
            try:
                mark_dead_runs(chash, parent_id)
            except Exception as exc:  # bookkeeping of earlier runs (the tracking server away a moment) costs no run
                log.warning("could not look for dead runs of this configuration: %s", exc)
        tracking.log_params_safely(
            {
                **parent_params(config, source, index, backbone.num_parameters()),
                "device": config.device,
                "device_used": str(device),
            }
        )
        t0 = time.perf_counter()
        features, stats = extract_features(
            index,
            backbone,
            source,
            config.cache_dir,
            config.max_seconds,
            progress=config.progress,
            precision=config.precision,
            budget_bytes=resident_budget(config.feature_memory),
        )
        mlflow.log_metric("time_extract_s", time.perf_counter() - t0)
        drop_unusable(index, stats)
        folds = select_folds(index.folds, config.folds)  # audio skips may have dropped clips from the folds
        features = features.in_float32()
        if config.unfreeze_top and features.out_of_core:  # finetune.live_features holds every clip's live states
            log.warning("fine-tuning holds the live top-layer features of every clip in memory (not out of core)")
        log_corpus_artifacts(index, stats)
        cross = None
        if test_index is not None:
            test_features, test_stats = extract_features(
                test_index,
                backbone,
                source,
                config.cache_dir,
                config.max_seconds,
                progress=config.progress,
                precision=config.precision,
                budget_bytes=resident_budget(config.feature_memory),
            )
            drop_unusable(test_index, test_stats)
            cross = CrossCorpus(config.test_dataset, test_index, test_features.in_float32())
            mlflow.log_params(
                {
                    "test_dataset": config.test_dataset,
                    "test_data_root": str(test_index.root),
                    "test_n_clips": len(test_index.clips),
                }
            )
        corpus = corpus_table(index, config)
        log_corpus_input(corpus)
        tags[RESUME_KEY_TAG] = resume_key(chash, corpus.digest, source.identity)
        mlflow.set_tag(RESUME_KEY_TAG, tags[RESUME_KEY_TAG])
        reused: dict[str, FoldResult] = {}
        try:
            reused = resume_folds(tags[RESUME_KEY_TAG], [f.name for f in folds], config, backbone, parent_id)
        except Exception as exc:
            log.warning("could not look for finished folds to reuse; computing every fold: %s", exc)
        sustainability = sustainability_metrics(config)  # one count and measurement, logged on every fold run
        results = []
        for fold in folds:
            results.append(
                reused.get(fold.name)
                or run_fold(index, features, fold, config, tags, source, backbone, sustainability, corpus, cross)
            )
        if config.log_model and results:
            log_deployable_model(results, config, backbone, source)
        summary = aggregate([r.metrics for r in results])
        summary.update(pooled_metrics(results, config))
        summary.update(sustainability)
        summary["wall_time_s"] = time.perf_counter() - started
        summary["folds_reused"] = float(len(reused))
        mlflow.log_metrics(summary)  # NaN is kept: an undefined metric shows as NaN, not as missing
        tracking.log_json({"folds": [r.fold for r in results], "summary": summary}, "summary.json")
        tracking.log_json(trust_profile(summary, len(results)), "trust_profile.json")
        return ExperimentResult(parent_id, results, summary)


def log_deployable_model(results: list[FoldResult], config: RunConfig, backbone: Any, source: Any) -> str:
    """The run's deployable model (``trustser.deploy``): the chosen fold's head on the backbone it was trained
    with (fine-tuned top layers installed), logged as ``model/`` of the parent run."""
    import tempfile
    from pathlib import Path

    import mlflow

    from trustser import deploy

    chosen = results[
        deploy.choose_fold([r.fold for r in results], [r.train.best_val_uar for r in results], config.model_from)
    ]
    head, deployed_backbone = chosen.train.head, backbone
    if hasattr(head, "top"):  # fine-tuned: the top layers live in the backbone of the deployed model
        from trustser.finetune import with_trained_top

        deployed_backbone, head = with_trained_top(backbone, head.top), head.head
    spec = backbone.spec
    card = deploy.ModelCard(
        backbone=spec.name,
        num_layers=spec.num_hidden_states,
        hidden_size=spec.hidden_size,
        width=config.train.width,
        pooling=config.train.pooling,
        classes=tuple(EMOTIONS),
        max_seconds=config.max_seconds,
        sample_rate=trustser.SAMPLE_RATE,
        weights_source=source.kind,
        weights_identity=source.identity,
        random_weights=source.is_random,
        unfreeze_top=config.unfreeze_top,
        model_from=config.model_from,
        model_fold=chosen.fold,
        validation_uar=chosen.train.best_val_uar,
        dataset=config.dataset,
    )
    with tempfile.TemporaryDirectory(prefix="trustser-model-") as tmp:
        uri = deploy.log_model(deployed_backbone, head, card, Path(tmp))
    mlflow.log_params({"model_from": config.model_from, "model_fold": chosen.fold})
    mlflow.set_tag("trustser.model_uri", uri)
    return uri


def pooled_metrics(results: list[FoldResult], config: RunConfig) -> dict[str, float]:
    """Intervals over the pooled test clips of all folds (every test speaker of the corpus): ``test_uar_ci_low``
    etc. on the parent; the pooled point values are logged as ``*_pooled`` beside the fold means."""
    outcomes = [r.outcomes for r in results if r.outcomes is not None]
    if not outcomes:
        return {}
    pooled, calibration = headline_metrics(
        pool(outcomes), len(EMOTIONS), config.trust.bootstrap_resamples, config.train.seed
    )
    pooled["test_uar_pooled"] = pooled.pop("test_uar")
    for key in ("test_ece", "test_brier"):
        pooled[f"{key}_pooled"] = pooled.pop(key)
    everything = pool(outcomes)
    pooled.update(
        pooled_fairness_verdicts(everything.y_true, everything.y_pred, everything.genders, len(EMOTIONS), pooled)
    )
    if config.trust.corruptions:
        from trustser.metrics.corruptions import resolve
        from trustser.metrics.robustness import pooled_robustness_metrics

        names = [c.name for c in resolve(config.trust.corruptions)]
        pooled.update(
            pooled_robustness_metrics(
                everything, names, len(EMOTIONS), config.trust.bootstrap_resamples, config.train.seed
            )
        )
    return pooled


def trust_profile(summary: dict[str, float], n_folds: int) -> dict[str, Any]:
    """The five trust axes of one (backbone, dataset) run: the metric behind each axis, its mean and std over the
    folds, the direction, and its radar score (``trustser.axes``' fixed normalisation, 1 = most
    trustworthy), so that a reader compares runs without re-deriving which number is which."""
    from trustser.axes import OBJECTIVES, OPTIONAL_OBJECTIVES, radar_score

    axes = {}
    measured = {a: o for a, o in OPTIONAL_OBJECTIVES.items() if o.key in summary}  # robustness: when it ran
    for axis, objective in {**OBJECTIVES, **measured}.items():
        value = summary.get(objective.key)
        std_key = objective.key[: -len("_mean")] + "_std" if objective.key.endswith("_mean") else None
        std = summary.get(std_key) if std_key else 0.0  # FLOPs are counted once, not per fold
        finite = value is not None and np.isfinite(value)
        axes[axis] = {
            "metric": objective.key,
            "label": objective.label,
            "direction": objective.direction,
            "value": float(value) if finite else None,
            "std": float(std) if std is not None and np.isfinite(std) else None,
            "radar_score": radar_score(axis, value) if finite else None,
        }
    return {
        "folds": n_folds,
        "axes": axes,
        "normalisation": "radar_score in [0, 1], 1 = most trustworthy: performance (UAR - 0.25) / 0.75; "
        "privacy (1 - gender accuracy) / 0.5; safety 1 - FGSM ASR; fairness 1 - equality-of-odds "
        "gap; sustainability 1 - log10(GFLOPs) / 2; robustness (when measured) 1 - mean "
        "corruption flip rate",
    }


def run_fold(
    index: CorpusIndex,
    features: FeatureStore,
    fold: Fold,
    config: RunConfig,
    tags: dict[str, str],
    source: Any,
    backbone: Any = None,
    sustainability: dict[str, float] | None = None,
    corpus: CorpusTable | None = None,
    cross: CrossCorpus | None = None,
) -> FoldResult:
    """Train, evaluate and log one fold as a nested run; ``sustainability`` (the backbone's cost, the same for
    every fold) is logged on it too so that each fold run carries all five trust families. ``corpus``: its train /
    validation / test subsets are logged as the run's dataset inputs. What a resumed run needs to reuse the fold
    (``resume/``) is logged last."""
    import mlflow

    fold_tags = {**tags, "fold": fold.name, KIND_TAG: "fold", **tracking.process_tags()}
    with mlflow.start_run(run_name=fold.name, nested=True, tags=fold_tags) as run:
        if corpus is not None:
            log_fold_inputs(corpus, fold)
        mlflow.log_params(
            {
                "backbone": config.backbone,
                "dataset": config.dataset,
                "fold": fold.name,
                "weights_source": source.kind,
                "weights_identity": source.identity[:64],
                **{f"head.{k}": v for k, v in config.train.as_params().items()},
                "unfreeze_top": config.unfreeze_top,
                "n_train": len(fold.train),
                "n_validation": len(fold.validation),
                "n_test": len(fold.test),
            }
        )
        t0 = time.perf_counter()
        ev = evaluate_fold(
            index,
            features,
            fold,
            config.train,
            config.progress,
            backbone,
            config.trust,
            config.max_seconds,
            config.unfreeze_top,
            config.seeds,
            cross,
        )
        ev.metrics["time_train_s"] = time.perf_counter() - t0
        log_fold_evaluation(ev, index, fold, config, sustainability)
        folded = FoldResult(fold.name, run.info.run_id, ev.metrics, ev.train, ev.outcomes)
        log_fold_state(folded)
        return folded


def sustainability_metrics(config: RunConfig) -> dict[str, float]:
    """FLOPs of one 6 s inference (counted on the architecture, so weights do not matter; cached on disk) and,
    when asked, measured latency and peak memory on this machine."""
    from trustser.metrics import sustainability as sus

    report = sus.count_flops(config.backbone)
    out = {
        "sustainability_gflops": report.flops / 1e9,
        "sustainability_gmacs": report.macs / 1e9,
        "sustainability_paper_gmacs": report.paper_gmacs,
        "sustainability_params": float(report.params),
        "sustainability_backbone_gflops": report.backbone_flops / 1e9,
        "sustainability_front_end_gflops": report.front_end_flops / 1e9,
        "sustainability_head_gflops": report.head_flops / 1e9,
        "sustainability_front_end_gmacs": report.front_end_macs / 1e9,
        "sustainability_backbone_gmacs": report.backbone_macs / 1e9,
        "sustainability_head_gmacs": report.head_macs / 1e9,
    }
    if config.trust.measure_cost:
        latency = sus.measure_latency(config.backbone, repeats=3)
        memory = sus.measure_peak_memory(config.backbone)
        out["sustainability_latency_s"] = latency.median_s
        out["sustainability_peak_memory_mb"] = memory.peak_rss_bytes / 2**20
        out["sustainability_inference_memory_mb"] = memory.inference_peak_bytes / 2**20
    return out


def parent_params(config: RunConfig, source, index: CorpusIndex, num_params: int) -> dict[str, Any]:
    return {
        "backbone": config.backbone,
        "dataset": config.dataset,
        "data_root": str(index.root),
        "folds": config.folds,
        "weights": str(source.path) if source.path else source.kind,
        "weights_source": source.kind,
        "weights_identity": source.identity[:64],
        "random_init": config.random_init,
        "max_seconds": config.max_seconds,
        "precision": config.precision,
        "backbone_params": num_params,
        "feature_memory": config.feature_memory,
        **{f"head.{k}": v for k, v in config.train.as_params().items()},
        **config.trust.as_params(),
        "unfreeze_top": config.unfreeze_top,
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "lr": config.train.lr,
        "seed": config.train.seed,
        "python": platform.python_version(),
    }


def log_corpus_artifacts(index: CorpusIndex, stats: ExtractionStats) -> None:
    import mlflow

    caveats = {f"kept_with_{reason}": float(n) for reason, n in index.caveat_counts().items()}
    mlflow.log_metrics(
        {
            **stats.as_metrics(),
            "n_clips": len(index.clips),
            "n_skipped": len(index.skipped),
            "n_kept_with_caveats": len(index.caveats),
            **caveats,
        }
    )
    mlflow.log_text(skips_csv(index.skipped), "skipped.csv")
    if index.caveats:  # kept clips whose metadata is incomplete (e.g. gender unknown: left out of gender metrics)
        mlflow.log_text(skips_csv(index.caveats), "caveats.csv")
    tracking.log_json({f.name: f.partitions() for f in index.folds}, "folds.json")


def skips_csv(skips: list[Any]) -> str:
    """Skipped clips, or clips kept with caveats, as a CSV artifact: one row per item with its reason."""

    return tracking.csv_text(("item", "reason", "detail"), [(s.item, s.reason, s.detail) for s in skips])


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

"""One experiment: a backbone over a corpus's folds, each fold trained, evaluated and logged as a nested MLflow run.

``run_experiment(config)`` is a plain function returning the results, so the CLI, ``mlflow run`` and the study all
compose it the same way.

The run configuration and results are in ``trustser.run_config``; the corpus as MLflow dataset inputs in
``trustser.run_datasets``; resuming an interrupted run in ``trustser.run_resume`` (their docstrings say how).
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

import trustser
from trustser import EMOTIONS, MAX_SECONDS, tracking
from trustser.backbones.loading import load_backbone
from trustser.corpora import CorpusIndex, Fold, load_corpus
from trustser.cross_corpus import CrossCorpus, check_distinct, cross_metrics
from trustser.devices import module_device, resolve_device
from trustser.errors import ConfigError
from trustser.features import ExtractionStats, FeatureStore, extract_features, resident_budget
from trustser.metrics.fairness import fairness_report
from trustser.metrics.performance import performance_report
from trustser.metrics.headline import TestOutcomes, headline_metrics, pool
from trustser.probes import PROBE_CONFIG, gender_probe, speaker_probe
from trustser.metrics.reference import linear_reference, reference_warning
from trustser.metrics.verdicts import fairness_verdicts, pooled_fairness_verdicts
from trustser.training import TrainConfig, TrainResult, predict, predict_logits, train_head
from trustser.run_config import ExperimentResult, FoldResult, RunConfig, TrustConfig, config_hash  # noqa: F401 (re-exported)
from trustser.run_datasets import CorpusTable, corpus_table, log_corpus_input, log_fold_inputs  # noqa: F401
from trustser.run_resume import (  # noqa: F401 (re-exported)
    CONFIG_HASH_TAG, KIND_TAG, RESUMABLE_TAG, RESUME_KEY_TAG, load_fold_state, log_fold_state, mark_dead_runs,
    resume_folds, resume_key,
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


def evaluate_fold(index: CorpusIndex, features: FeatureStore, fold: Fold, config: TrainConfig,
                  progress: bool = False, backbone: Any = None, trust: TrustConfig = TrustConfig(),
                  max_seconds: float = MAX_SECONDS, unfreeze_top: int = 0, seeds: int = 1,
                  cross: CrossCorpus | None = None) -> tuple[dict[str, float], TrainResult, dict[str, Any]]:
    """Train on the fold's train part, select on validation, evaluate every trust metric on test; no logging.

    With ``unfreeze_top`` = k > 0 the top k encoder layers are trained with the head, run live on the cached
    input state of those layers (the frozen ones are never recomputed); the probes then read the fine-tuned
    embeddings and the attacks go through the backbone with the trained top layers.
    """
    labels = {c: index.clips[c].label for c in index.clips}
    device = module_device(backbone) if backbone is not None else None  # where the run's models live
    model_factory = None  # builds a fresh fine-tuning model (top layers + head) per training seed
    if unfreeze_top:
        from functools import partial

        from trustser.finetune import build_finetune_model

        model_factory = partial(build_finetune_model, backbone, unfreeze_top, len(EMOTIONS), config.width,
                                config.pooling)
    model = model_factory() if model_factory else None
    result = train_head(features, labels, list(fold.train), list(fold.validation), len(EMOTIONS), config,
                        progress=progress, desc=f"{fold.name} train", model=model, device=device)
    head, attacked_backbone, cached = result.head, backbone, features
    if unfreeze_top:
        from trustser.finetune import live_features, with_trained_top

        features = live_features(result.head, features, list(index.clips), config.batch_size)
        attacked_backbone = with_trained_top(backbone, result.head.top)
        head = result.head.head
    test_ids = list(fold.test)
    y_true = np.array([labels[c] for c in test_ids])
    probs = torch.softmax(predict_logits(head, features, test_ids, config.batch_size).double(), -1).numpy()
    y_pred = probs.argmax(-1)
    perf = performance_report(y_true, y_pred, len(EMOTIONS))
    genders = [index.clips[c].gender for c in test_ids]
    fair = fairness_report(y_true, y_pred, genders, len(EMOTIONS))
    metrics = {f"test_{k}": v for k, v in perf.to_dict().items()}
    metrics.update({f"fairness_{k}": v for k, v in fair.to_dict().items()})
    details: dict[str, Any] = {"performance": perf, "fairness": fair, "test_ids": test_ids, "y_true": y_true,
                               "y_pred": y_pred, "probs": probs, "probes": {}, "attacks": {},
                               "snr_db": float(trust.snr_db)}
    metrics.update(result.summary())
    if seeds > 1:
        # the cached features, not the first seed's live ones: each seed trains its own top layers on them
        metrics.update(seed_spread(cached, labels, fold, config, seeds, metrics["test_uar"], model_factory, device))
    if cross is not None:  # the same model on all of another corpus (trustser.cross_corpus)
        cross_features = cross.features
        if unfreeze_top:
            cross_features = live_features(result.head, cross.features, cross.clip_ids, config.batch_size)
        metrics.update(cross_metrics(cross, head, cross_features, config.batch_size, trust.bootstrap_resamples,
                                     config.seed))
    if trust.reference:
        reference = linear_reference(features, labels, [*fold.train, *fold.validation], test_ids, len(EMOTIONS),
                                     seed=config.seed)
        metrics.update(reference.to_dict())
        details["warning"] = reference_warning(metrics["test_uar"], reference.uar)
    if trust.probes:
        probe_config = probe_train_config(config, trust)
        gender = gender_probe(features, index.clips, fold.train, fold.validation, fold.test, probe_config, device)
        speaker = speaker_probe(features, index.clips, fold.train, probe_config, device)
        metrics.update(gender.to_dict("privacy_gender"))
        metrics.update(speaker.to_dict("privacy_speaker"))
        details["probes"] = {"gender": gender, "speaker": speaker}
    if trust.safety and backbone is not None:
        t0 = time.perf_counter()
        details["attacks"] = evaluate_safety(index, attacked_backbone, head, test_ids, y_true, y_pred, trust,
                                             max_seconds, progress)
        for attack, by_snr in details["attacks"].items():
            primary = by_snr[float(trust.snr_db)]
            metrics.update({f"safety_{attack}_{k}": v for k, v in primary.to_dict().items()})
            metrics.update({f"safety_{attack}_asr_snr{snr:g}": r.asr for snr, r in by_snr.items()})
        metrics["time_attack_s"] = time.perf_counter() - t0
    if trust.corruptions and backbone is not None:
        t0 = time.perf_counter()
        details["robustness"] = evaluate_robustness(index, attacked_backbone, head, test_ids, y_true, y_pred, trust,
                                                    max_seconds, progress)
        metrics.update(details["robustness"].metrics(len(EMOTIONS), trust.bootstrap_resamples, config.seed))
        metrics["time_robustness_s"] = time.perf_counter() - t0
    outcomes = test_outcomes(index, test_ids, y_true, y_pred, probs, details)
    headline, calibration = headline_metrics(outcomes, len(EMOTIONS), trust.bootstrap_resamples, config.seed)
    headline.pop("test_uar")  # the same number as test_uar above
    metrics.update(headline)
    metrics.update(fairness_verdicts(metrics))  # each gap against the random models' (trustser.metrics.verdicts)
    details.update(outcomes=outcomes, calibration=calibration)
    return metrics, result, details


def test_outcomes(index: CorpusIndex, test_ids: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                  probs: np.ndarray, details: dict[str, Any]) -> TestOutcomes:
    """The fold's per-clip outcomes that intervals are computed from (speakers as the resampling unit)."""
    def speakers(ids) -> np.ndarray:
        return np.array([index.clips[c].speaker for c in ids], dtype=object)

    outcomes = TestOutcomes(speakers(test_ids), np.array([index.clips[c].gender for c in test_ids], dtype=object),
                            y_true, y_pred, probs)
    gender = details["probes"].get("gender")
    if gender is not None and gender.test_ids:
        outcomes.probe_speakers, outcomes.probe_correct = speakers(gender.test_ids), np.array(gender.correct)
    fgsm = details["attacks"].get("fgsm")
    if fgsm:
        primary = fgsm[details["snr_db"]]
        attacked = [r for r in primary.records if r.status == "attacked"]
        outcomes.attack_speakers = speakers([r.clip_id for r in attacked])
        outcomes.attack_success = np.array([bool(r.flipped) for r in attacked], dtype=bool)
    if details.get("robustness") is not None:
        from trustser.metrics.robustness import outcome_arrays

        for name, values in outcome_arrays(details["robustness"]).items():
            setattr(outcomes, name, values)
    return outcomes


def seed_spread(features: FeatureStore, labels: dict[str, int], fold: Fold, config: TrainConfig, seeds: int,
                first_uar: float, model_factory: Any, device: Any = None) -> dict[str, float]:
    """Test UAR of the same recipe trained with seeds seed+1 .. seed+N-1 beside the first seed's: how much of a
    difference between two configurations the training noise alone can make. Trust metrics use the first seed."""
    values = [first_uar]
    for offset in range(1, seeds):
        seeded = replace(config, seed=config.seed + offset)
        result = train_head(features, labels, list(fold.train), list(fold.validation), len(EMOTIONS), seeded,
                            model=model_factory() if model_factory else None, device=device)
        head = result.head.head if hasattr(result.head, "top") else result.head
        test_features = features
        if hasattr(result.head, "top"):
            from trustser.finetune import live_features

            test_features = live_features(result.head, features, list(fold.test), config.batch_size)
        y_true = np.array([labels[c] for c in fold.test])
        values.append(uar_of(head, test_features, list(fold.test), y_true, config.batch_size))
    arr = np.array(values)
    return {"test_uar_seed_mean": float(arr.mean()), "test_uar_seed_std": float(arr.std(ddof=1)),
            "test_uar_seed_min": float(arr.min()), "test_uar_seed_max": float(arr.max()), "seeds": float(seeds)}


def uar_of(head: Any, features: FeatureStore, ids: list[str], y_true: np.ndarray, batch_size: int) -> float:
    from trustser.metrics.performance import uar

    return uar(y_true, predict(head, features, ids, batch_size), len(EMOTIONS))


def probe_train_config(run: TrainConfig, trust: TrustConfig) -> TrainConfig:
    """The privacy probes' training: the method's probe (default head, lr 5e-4, weighted sum of all layers) for
    every run, whatever head width, learning rate or pooling the emotion model was trained with, so that probe
    accuracies of different trials measure the embeddings and not the probe. They train the way the run trains
    (schedule, step floor, patience, standardisation), so they are as converged as the emotion head; the seed and
    batch size follow the run, and the ``paper`` schedule's epoch count is ``trust.probe_epochs`` (10)."""
    return replace(PROBE_CONFIG, seed=run.seed, batch_size=run.batch_size, epochs=trust.probe_epochs,
                   min_steps=run.min_steps, schedule=run.schedule, max_epochs=run.max_epochs, patience=run.patience,
                   standardize=run.standardize)


def attack_subset(test_ids: list[str], max_clips: int | None) -> list[int]:
    """Positions of the test clips to attack: all, or a deterministic hash-ordered subset."""
    import hashlib

    order = sorted(range(len(test_ids)), key=lambda i: hashlib.sha1(test_ids[i].encode()).hexdigest())
    return sorted(order[:max_clips]) if max_clips else list(range(len(test_ids)))


def evaluate_safety(index: CorpusIndex, backbone: Any, head: Any, test_ids: list[str], y_true: np.ndarray,
                    y_pred: np.ndarray, trust: TrustConfig, max_seconds: float, progress: bool) -> dict[str, Any]:
    """Attacks on the raw waveform through backbone + trained head, over the correctly classified test clips."""
    from trustser.metrics.safety import AttackSettings, ClipWaves, WaveformClassifier, run_attack

    chosen = attack_subset(test_ids, trust.max_attack_clips)
    classifier = WaveformClassifier(backbone, head)
    waves = ClipWaves([index.clips[test_ids[i]].path for i in chosen], max_seconds=max_seconds)
    settings = AttackSettings(pgd_steps=trust.pgd_steps, train_mode=trust.attack_train_mode)
    snrs = tuple(dict.fromkeys((float(trust.snr_db), *map(float, trust.sweep_snrs))))
    return {attack: run_attack(classifier, waves, [int(y_true[i]) for i in chosen], attack, snrs,
                               clip_ids=[test_ids[i] for i in chosen], clean_predictions=[int(y_pred[i]) for i in chosen],
                               settings=settings, progress=progress)
            for attack in trust.attacks}


def evaluate_robustness(index: CorpusIndex, backbone: Any, head: Any, test_ids: list[str], y_true: np.ndarray,
                        y_pred: np.ndarray, trust: TrustConfig, max_seconds: float, progress: bool) -> Any:
    """Every test clip, clean and under each corruption of ``trust.corruptions``, through backbone + trained head
    (``trustser.metrics.robustness``); babble talkers come from the fold's other test speakers. Seed 0 always: every
    configuration meets the same corrupted clips."""
    from trustser.metrics.corruptions import resolve
    from trustser.metrics.robustness import evaluate_corruptions
    from trustser.metrics.safety import ClipWaves, WaveformClassifier

    waves = ClipWaves([index.clips[c].path for c in test_ids], max_seconds=max_seconds)
    return evaluate_corruptions(WaveformClassifier(backbone, head), waves, [int(t) for t in y_true],
                                [index.clips[c].speaker for c in test_ids], resolve(trust.corruptions),
                                clip_ids=test_ids, clean_predictions=[int(p) for p in y_pred], progress=progress)


def run_experiment(config: RunConfig) -> ExperimentResult:
    """Extract (or reuse) the features, then train, evaluate and log every selected fold under one parent run.

    A top-level run (``trustser run``, ``mlflow run``) resumes an interrupted one of the same configuration (see
    ``resume_folds``): dead runs are marked KILLED and folds that finished are reused, not computed again. Inside a
    study trial the study's workers mark a dead trial's runs KILLED (``trial_queue.mark_dead_trial_runs``) and
    retry its configuration; the retry reuses the dead trial's finished folds the same way.
    """
    import mlflow

    started = time.perf_counter()
    index = load_corpus(config.dataset, config.data_root, dict(config.corpus_options))
    test_index = None
    if config.test_dataset:  # loaded before anything runs: a missing corpus fails now, not after training
        check_distinct(config.dataset, config.test_dataset)
        test_index = load_corpus(config.test_dataset, config.test_data_root)
    folds = select_folds(index.folds, config.folds)
    backbone, source = load_backbone(config.backbone, config.weights, config.random_init, config.train.seed,
                                     offline=config.offline)
    device = resolve_device(config.device)  # a missing GPU fails here, before the run exists
    backbone.to(device)
    tracking.setup_tracking(config.experiment)
    nested = mlflow.active_run() is not None  # inside a study trial: this run nests under the trial's run
    chash = config_hash(config)
    tags = {
        "backbone": config.backbone, "dataset": config.dataset,
        "weights": "random" if source.is_random else "pretrained", "weights_source": source.kind,
        "trustser_version": trustser.__version__, CONFIG_HASH_TAG: chash,
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
        tracking.log_params_safely({**parent_params(config, source, index, backbone.num_parameters()),
                                    "device": config.device, "device_used": str(device)})
        t0 = time.perf_counter()
        features, stats = extract_features(index, backbone, source, config.cache_dir, config.max_seconds,
                                           progress=config.progress, precision=config.precision,
                                           budget_bytes=resident_budget(config.feature_memory))
        mlflow.log_metric("time_extract_s", time.perf_counter() - t0)
        folds = select_folds(index.folds, config.folds)  # audio skips may have dropped clips from the folds
        features = features.in_float32()
        if config.unfreeze_top and features.out_of_core:  # finetune.live_features holds every clip's live states
            log.warning("fine-tuning holds the live top-layer features of every clip in memory (not out of core)")
        log_corpus_artifacts(index, stats)
        cross = None
        if test_index is not None:
            test_features, _ = extract_features(test_index, backbone, source, config.cache_dir, config.max_seconds,
                                                progress=config.progress, precision=config.precision,
                                                budget_bytes=resident_budget(config.feature_memory))
            cross = CrossCorpus(config.test_dataset, test_index, test_features.in_float32())
            mlflow.log_params({"test_dataset": config.test_dataset, "test_data_root": str(test_index.root),
                               "test_n_clips": len(test_index.clips)})
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
            results.append(reused.get(fold.name)
                           or run_fold(index, features, fold, config, tags, source, backbone, sustainability, corpus,
                                       cross))
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

    chosen = results[deploy.choose_fold([r.fold for r in results], [r.train.best_val_uar for r in results],
                                        config.model_from)]
    head, deployed_backbone = chosen.train.head, backbone
    if hasattr(head, "top"):  # fine-tuned: the top layers live in the backbone of the deployed model
        from trustser.finetune import with_trained_top

        deployed_backbone, head = with_trained_top(backbone, head.top), head.head
    spec = backbone.spec
    card = deploy.ModelCard(
        backbone=spec.name, num_layers=spec.num_hidden_states, hidden_size=spec.hidden_size, width=config.train.width,
        pooling=config.train.pooling, classes=tuple(EMOTIONS), max_seconds=config.max_seconds,
        sample_rate=trustser.SAMPLE_RATE, weights_source=source.kind, weights_identity=source.identity,
        random_weights=source.is_random, unfreeze_top=config.unfreeze_top, model_from=config.model_from,
        model_fold=chosen.fold, validation_uar=chosen.train.best_val_uar, dataset=config.dataset)
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
    pooled, calibration = headline_metrics(pool(outcomes), len(EMOTIONS), config.trust.bootstrap_resamples,
                                           config.train.seed)
    pooled["test_uar_pooled"] = pooled.pop("test_uar")
    for key in ("test_ece", "test_brier"):
        pooled[f"{key}_pooled"] = pooled.pop(key)
    everything = pool(outcomes)
    pooled.update(pooled_fairness_verdicts(everything.y_true, everything.y_pred, everything.genders, len(EMOTIONS),
                                           pooled))
    if config.trust.corruptions:
        from trustser.metrics.corruptions import resolve
        from trustser.metrics.robustness import pooled_robustness_metrics

        names = [c.name for c in resolve(config.trust.corruptions)]
        pooled.update(pooled_robustness_metrics(everything, names, len(EMOTIONS), config.trust.bootstrap_resamples,
                                                config.train.seed))
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
        axes[axis] = {"metric": objective.key, "label": objective.label, "direction": objective.direction,
                      "value": float(value) if finite else None,
                      "std": float(std) if std is not None and np.isfinite(std) else None,
                      "radar_score": radar_score(axis, value) if finite else None}
    return {"folds": n_folds, "axes": axes,
            "normalisation": "radar_score in [0, 1], 1 = most trustworthy: performance (UAR - 0.25) / 0.75; "
                             "privacy (1 - gender accuracy) / 0.5; safety 1 - FGSM ASR; fairness 1 - equality-of-odds "
                             "gap; sustainability 1 - log10(GFLOPs) / 2; robustness (when measured) 1 - mean "
                             "corruption flip rate"}


def run_fold(index: CorpusIndex, features: FeatureStore, fold: Fold, config: RunConfig, tags: dict[str, str],
             source: Any, backbone: Any = None, sustainability: dict[str, float] | None = None,
             corpus: CorpusTable | None = None, cross: CrossCorpus | None = None) -> FoldResult:
    """Train, evaluate and log one fold as a nested run; ``sustainability`` (the backbone's cost, the same for
    every fold) is logged on it too so that each fold run carries all five trust families. ``corpus``: its train /
    validation / test subsets are logged as the run's dataset inputs. What a resumed run needs to reuse the fold
    (``resume/``) is logged last."""
    import mlflow

    from trustser.plots import confusion_figure

    fold_tags = {**tags, "fold": fold.name, KIND_TAG: "fold", **tracking.process_tags()}
    with mlflow.start_run(run_name=fold.name, nested=True, tags=fold_tags) as run:
        if corpus is not None:
            log_fold_inputs(corpus, fold)
        mlflow.log_params({
            "backbone": config.backbone, "dataset": config.dataset, "fold": fold.name,
            "weights_source": source.kind, "weights_identity": source.identity[:64],
            **{f"head.{k}": v for k, v in config.train.as_params().items()}, "unfreeze_top": config.unfreeze_top,
            "n_train": len(fold.train), "n_validation": len(fold.validation), "n_test": len(fold.test),
        })
        t0 = time.perf_counter()
        metrics, result, details = evaluate_fold(index, features, fold, config.train, config.progress, backbone,
                                                 config.trust, config.max_seconds, config.unfreeze_top, config.seeds,
                                                 cross)
        metrics["time_train_s"] = time.perf_counter() - t0
        for h in result.history:
            mlflow.log_metrics({"train_loss": h["train_loss"], "val_uar": h["val_uar"]}, step=int(h["epoch"]))
        mlflow.log_metrics({**metrics, **(sustainability or {})})
        perf, fair = details["performance"], details["fairness"]
        warnings = training_warnings(metrics, details, fold.name)
        if warnings:
            mlflow.set_tag("trustser.warning", " | ".join(warnings)[:5000])
            import click

            for w in warnings:  # printed, not only logged: nobody should read this profile without being told
                click.echo(f"trustser: warning: {w}", err=True)
        if fair.reason:
            mlflow.set_tag("fairness_undefined", fair.reason[:5000])
        for name, probe in details["probes"].items():
            if probe.reason:
                mlflow.set_tag(f"privacy_{name}_undefined", probe.reason)
        log_attack_artifacts(details["attacks"], config, fold)
        log_robustness_artifacts(details.get("robustness"))
        tracking.log_figure(confusion_figure(perf.confusion, EMOTIONS, f"{config.backbone} {fold.name}"),
                            "confusion_matrix.png")
        tracking.log_json({"classes": list(EMOTIONS), "rows": "true class", "columns": "predicted class",
                           "counts": perf.confusion.tolist()}, "confusion_matrix.json")
        rows = [(cid, index.clips[cid].speaker, index.clips[cid].gender or "", EMOTIONS[t], EMOTIONS[p])
                for cid, t, p in zip(details["test_ids"], details["y_true"], details["y_pred"])]
        mlflow.log_text(tracking.csv_text(("clip_id", "speaker", "gender", "true", "predicted"), rows),
                        "predictions.csv")
        mlflow.log_text(fair.rates_frame().to_csv(index=False), "fairness_rates.csv")
        log_calibration(details["calibration"], f"{config.backbone} {fold.name}")
        tracking.log_json({part: index.speakers(ids) for part, ids in fold.partitions().items()}, "speakers.json")
        tracking.log_json(fold.partitions(), "fold_assignment.json")
        folded = FoldResult(fold.name, run.info.run_id, metrics, result, details["outcomes"])
        log_fold_state(folded)
        return folded


def training_warnings(metrics: dict[str, float], details: dict[str, Any], fold: str) -> list[str]:
    """What a reader of this fold's trust profile must be told: a head below the linear reference, a head that
    learned nothing (test UAR interval not above chance), training that was still improving when it stopped."""
    out = []
    if details.get("warning"):
        out.append(f"{fold}: {details['warning']}")
    chance = 1.0 / len(EMOTIONS)
    low = metrics.get("test_uar_ci_low", float("nan"))
    uar = metrics.get("test_uar", float("nan"))
    if (np.isfinite(low) and low <= chance) or (not np.isfinite(low) and uar <= chance + 0.02):
        out.append(f"{fold}: test UAR {uar:.3f} is not shown to be above chance {chance:.2f}"
                   + (f" (its 95 % interval reaches {low:.3f})" if np.isfinite(low) else "")
                   + ": the model may have learned nothing usable; its safety and fairness figures may not be "
                     "meaningful")
    if metrics.get("best_at_last_epoch") == 1.0 and metrics.get("stopped_early") == 0.0:
        out.append(f"{fold}: the best validation epoch was the last one trained ({int(metrics['best_epoch'])}): "
                   "training was still improving; use the converge schedule or more epochs")
    return out


def log_calibration(calibration: Any, title: str) -> None:
    """The reliability diagram and its table, beside the fold's ECE / Brier metrics."""
    from trustser.metrics.calibration import reliability_figure

    fig = reliability_figure(calibration.table, f"{title}: reliability (ECE {calibration.ece:.3f})")
    tracking.log_figure(fig, "calibration/reliability.png")
    tracking.log_json({"ece": calibration.ece, "brier": calibration.brier, "n_bins": calibration.n_bins,
                       "bins": [b.__dict__ for b in calibration.table]}, "calibration/reliability.json")


def sustainability_metrics(config: RunConfig) -> dict[str, float]:
    """FLOPs of one 6 s inference (counted on the architecture, so weights do not matter; cached on disk) and,
    when asked, measured latency and peak memory on this machine."""
    from trustser.metrics import sustainability as sus

    report = sus.count_flops(config.backbone)
    out = {"sustainability_gflops": report.flops / 1e9, "sustainability_gmacs": report.macs / 1e9,
           "sustainability_paper_gmacs": report.paper_gmacs, "sustainability_params": float(report.params),
           "sustainability_backbone_gflops": report.backbone_flops / 1e9,
           "sustainability_front_end_gflops": report.front_end_flops / 1e9,
           "sustainability_head_gflops": report.head_flops / 1e9,
           "sustainability_front_end_gmacs": report.front_end_macs / 1e9,
           "sustainability_backbone_gmacs": report.backbone_macs / 1e9,
           "sustainability_head_gmacs": report.head_macs / 1e9}
    if config.trust.measure_cost:
        latency = sus.measure_latency(config.backbone, repeats=3)
        memory = sus.measure_peak_memory(config.backbone)
        out["sustainability_latency_s"] = latency.median_s
        out["sustainability_peak_memory_mb"] = memory.peak_rss_bytes / 2**20
        out["sustainability_inference_memory_mb"] = memory.inference_peak_bytes / 2**20
    return out


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
    sweep = SweepResult(attacks)
    mlflow.log_text(sweep.table().to_csv(index=False), "safety/snr_sweep.csv")
    tracking.log_figure(sweep_figure(sweep, f"{config.backbone} {fold.name}"), "safety/snr_sweep.png")


def parent_params(config: RunConfig, source, index: CorpusIndex, num_params: int) -> dict[str, Any]:
    return {
        "backbone": config.backbone, "dataset": config.dataset, "data_root": str(index.root),
        "folds": config.folds, "weights": str(source.path) if source.path else source.kind,
        "weights_source": source.kind, "weights_identity": source.identity[:64], "random_init": config.random_init,
        "max_seconds": config.max_seconds, "precision": config.precision, "backbone_params": num_params,
        "feature_memory": config.feature_memory,
        **{f"head.{k}": v for k, v in config.train.as_params().items()}, **config.trust.as_params(),
        "unfreeze_top": config.unfreeze_top, "epochs": config.train.epochs, "batch_size": config.train.batch_size, "lr": config.train.lr,
        "seed": config.train.seed, "python": platform.python_version(),
    }


def log_corpus_artifacts(index: CorpusIndex, stats: ExtractionStats) -> None:
    import mlflow


    caveats = {f"kept_with_{reason}": float(n) for reason, n in index.caveat_counts().items()}
    mlflow.log_metrics({**stats.as_metrics(), "n_clips": len(index.clips), "n_skipped": len(index.skipped),
                        "n_kept_with_caveats": len(index.caveats), **caveats})
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

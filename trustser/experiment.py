"""One experiment: a backbone over a corpus's folds, each fold trained, evaluated and logged as a nested MLflow run.

``run_experiment(config)`` is a plain function returning the results, so the CLI, ``mlflow run`` and the study all
compose it the same way.

Datasets. Every run logs the corpus it used as an MLflow dataset input (the UI's Dataset column): the parent run the
whole corpus (context ``corpus``), each fold run its ``train`` / ``validation`` / ``test`` subsets. A dataset is the
clip table (clip id, path, speaker, gender, emotion, content hash; on the parent also each clip's partition in every
fold), named after the corpus (``emodb``, ``emodb/fold1/train``; a manifest corpus: ``manifest:<file name>``), with
the data root or manifest file as its source and a digest over each clip's id, content hash (sha1 of the file) and
labels: two runs on different versions of a corpus show different digests. The parent also keeps the table as
``dataset/clips.csv``. The content hashes are computed once more after feature extraction (the cache already hashes
every clip but does not hand the hashes out; the files are then in the page cache).

Resume. Runs carry ``trustser.config_hash`` (``config_hash`` of the RunConfig), ``trustser.resume_key`` (that hash,
the corpus digest, the weights identity and the trustser version), ``trustser.kind`` (``experiment`` / ``fold``) and
the identity of the process logging them (``tracking.process_tags``: host, pid, process start). A top-level run (not
inside a study trial: tag ``trustser.resumable``) first marks KILLED the RUNNING runs of its configuration whose
process is dead (on this host: pid gone, a zombie, or reused by a later process; ``trustser.killed`` says why),
keeping their FINISHED folds; then, once its corpus digest is known, it reuses every FINISHED fold run with its resume
key whose parent is KILLED or FAILED: the fold run is moved under the new parent (tag ``mlflow.parentRunId`` rewritten;
``trustser.reparented_from`` on the fold, ``trustser.reused_folds`` and ``trustser.resumes_run`` on the new parent,
``trustser.resumed_by`` on the old one), and its metrics, per-clip test outcomes and trained head come back from its
``resume/`` artifacts (``fold_result.json``, ``head.safetensors``), so the summary, the pooled intervals and the
deployable model are those of a run that was never interrupted. So the store keeps one FINISHED run per (backbone,
dataset, fold, configuration) across kills: should two copies of a fold qualify, the newest is reused and the other
marked KILLED (superseded), as is one whose artifacts cannot be read (that fold is then computed again).

Not resumed: a run whose parent FINISHED (running a finished configuration again measures it again, as a new parent:
the same command is how one re-measures latency or checks determinism); RUNNING runs whose process lives or whose
host is another machine (no heartbeat tells a dead remote process from a live one: they are left RUNNING, with a
warning, and their folds are not reused); runs under a study trial; runs deleted in MLflow (delete a dead run to have
its folds computed again). One resume of a configuration at a time: two started together would both reuse the folds.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import trustser
from trustser import EMOTIONS, MAX_SECONDS
from trustser.backbones.loading import load_backbone
from trustser.corpora import CorpusIndex, Fold, load_corpus
from trustser.errors import ConfigError
from trustser.features import ExtractionStats, FeatureStore, extract_features
from trustser.metrics.fairness import fairness_report
from trustser.metrics.performance import performance_report
from trustser.metrics.headline import DEFAULT_RESAMPLES, TestOutcomes, headline_metrics, pool
from trustser.metrics.privacy import PROBE_CONFIG, gender_probe, speaker_probe
from trustser.metrics.reference import linear_reference, reference_warning
from trustser.training import TrainConfig, TrainResult, predict, predict_logits, train_head

log = logging.getLogger(__name__)

CONFIG_HASH_TAG = "trustser.config_hash"
RESUME_KEY_TAG = "trustser.resume_key"
RESUMABLE_TAG = "trustser.resumable"
KIND_TAG = "trustser.kind"
RESUME_DIR = "resume"  # artifacts of a fold run that a resumed run reads back
RESUME_FORMAT = 1
CLIP_COLUMNS = ("clip_id", "path", "speaker", "gender", "emotion", "sha1")


@dataclass(frozen=True)
class TrustConfig:
    """Which trust measurements a fold runs, and their settings (all logged as params).

    PGD is opt-in: at 10 steps it costs about ten FGSM attacks. FGSM and Gaussian noise take one gradient / noise
    draw per clip for every SNR, so the sweep costs little beyond the 45 dB point.
    """

    safety: bool = True
    snr_db: float = 45.0
    attacks: tuple[str, ...] = ("fgsm", "gaussian")
    sweep_snrs: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)
    pgd_steps: int = 10
    attack_train_mode: bool = False
    max_attack_clips: int | None = None  # attack at most this many test clips (deterministic subset), for speed
    probes: bool = True
    probe_epochs: int = PROBE_CONFIG.epochs  # the `paper` schedule's probe epochs; `converge` probes converge
    measure_cost: bool = True  # latency (median of 3) and peak memory of one 6 s inference, on this machine
    reference: bool = True  # the linear reference probe (reference_linear_uar) on every fold
    bootstrap_resamples: int = DEFAULT_RESAMPLES  # speaker-level bootstrap resamples per interval (0 = none)

    def as_params(self) -> dict[str, object]:
        return {f"trust.{k}": v for k, v in asdict(self).items()}


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
    precision: str = "fp32"  # feature extraction: fp32 or bf16 autocast
    train: TrainConfig = field(default_factory=TrainConfig)
    unfreeze_top: int = 0  # fine-tuning: number of top encoder layers trained (0 = frozen backbone)
    seeds: int = 1  # training seeds per fold (seed, seed+1, ...): the spread of test UAR over them is logged
    log_model: bool = True  # log the deployable pyfunc model (trustser.deploy) on the parent run
    model_from: str = "best_validation"  # which fold's head the deployable model uses (trustser.deploy.MODEL_FROM)
    trust: TrustConfig = field(default_factory=TrustConfig)
    experiment: str | None = None
    progress: bool = True
    offline: bool | None = None  # download no weights (None: HF_HUB_OFFLINE decides); not part of what is computed


@dataclass
class FoldResult:
    fold: str
    run_id: str | None
    metrics: dict[str, float]
    train: TrainResult
    outcomes: TestOutcomes | None = None  # per-clip test outcomes, pooled over folds on the parent


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
                  progress: bool = False, backbone: Any = None, trust: TrustConfig = TrustConfig(),
                  max_seconds: float = MAX_SECONDS, unfreeze_top: int = 0, seeds: int = 1,
                  ) -> tuple[dict[str, float], TrainResult, dict[str, Any]]:
    """Train on the fold's train part, select on validation, evaluate every trust metric on test; no logging.

    With ``unfreeze_top`` = k > 0 the top k encoder layers are trained with the head, run live on the cached
    input state of those layers (the frozen ones are never recomputed); the probes then read the fine-tuned
    embeddings and the attacks go through the backbone with the trained top layers.
    """
    labels = {c: index.clips[c].label for c in index.clips}
    model_factory = None
    if unfreeze_top:
        from trustser.finetune import build_finetune_model

        def model_factory():
            return build_finetune_model(backbone, unfreeze_top, len(EMOTIONS), config.width, config.pooling)
    model = model_factory() if model_factory else None
    result = train_head(features, labels, list(fold.train), list(fold.validation), len(EMOTIONS), config,
                        progress=progress, desc=f"{fold.name} train", model=model)
    head, attacked_backbone = result.head, backbone
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
        metrics.update(seed_spread(features, labels, fold, config, seeds, metrics["test_uar"], model_factory))
    if trust.reference:
        reference = linear_reference(features, labels, [*fold.train, *fold.validation], test_ids, len(EMOTIONS),
                                     seed=config.seed)
        metrics.update(reference.to_dict())
        details["warning"] = reference_warning(metrics["test_uar"], reference.uar)
    if trust.probes:
        probe_config = probe_train_config(config, trust)
        gender = gender_probe(features, index.clips, fold.train, fold.validation, fold.test, probe_config)
        speaker = speaker_probe(features, index.clips, fold.train, probe_config)
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
    outcomes = test_outcomes(index, test_ids, y_true, y_pred, probs, details)
    headline, calibration = headline_metrics(outcomes, len(EMOTIONS), trust.bootstrap_resamples, config.seed)
    headline.pop("test_uar")  # the same number as test_uar above
    metrics.update(headline)
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
    return outcomes


def seed_spread(features: FeatureStore, labels: dict[str, int], fold: Fold, config: TrainConfig, seeds: int,
                first_uar: float, model_factory: Any) -> dict[str, float]:
    """Test UAR of the same recipe trained with seeds seed+1 .. seed+N-1 beside the first seed's: how much of a
    difference between two configurations the training noise alone can make. Trust metrics use the first seed."""
    values = [first_uar]
    for offset in range(1, seeds):
        seeded = replace(config, seed=config.seed + offset)
        result = train_head(features, labels, list(fold.train), list(fold.validation), len(EMOTIONS), seeded,
                            model=model_factory() if model_factory else None)
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


def run_experiment(config: RunConfig) -> ExperimentResult:
    """Extract (or reuse) the features, then train, evaluate and log every selected fold under one parent run.

    A top-level run (``trustser run``, ``mlflow run``) resumes an interrupted one of the same configuration (see
    ``resume_folds``): dead runs are marked KILLED and folds that finished are reused, not computed again. Inside a
    study trial the study's workers own that bookkeeping (a dead trial's runs are KILLED and its configuration
    evaluated again), so nothing is reused there.
    """
    import mlflow

    from trustser import tracking
    from trustser.study.space import config_hash

    started = time.perf_counter()
    index = load_corpus(config.dataset, config.data_root, dict(config.corpus_options))
    folds = select_folds(index.folds, config.folds)
    backbone, source = load_backbone(config.backbone, config.weights, config.random_init, config.train.seed,
                                     offline=config.offline)
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
        tracking.log_params_safely(parent_params(config, source, index, backbone.num_parameters()))
        t0 = time.perf_counter()
        features, stats = extract_features(index, backbone, source, config.cache_dir, config.max_seconds,
                                           progress=config.progress, precision=config.precision)
        mlflow.log_metric("time_extract_s", time.perf_counter() - t0)
        folds = select_folds(index.folds, config.folds)  # audio skips may have dropped clips from the folds
        features = features.in_float32()
        log_corpus_artifacts(index, stats)
        corpus = corpus_table(index, config)
        log_corpus_input(corpus)
        tags[RESUME_KEY_TAG] = resume_key(chash, corpus.digest, source.identity)
        mlflow.set_tag(RESUME_KEY_TAG, tags[RESUME_KEY_TAG])
        reused: dict[str, FoldResult] = {}
        if not nested:
            try:
                reused = resume_folds(tags[RESUME_KEY_TAG], [f.name for f in folds], config, backbone, parent_id)
            except Exception as exc:
                log.warning("could not look for finished folds to reuse; computing every fold: %s", exc)
        sustainability = sustainability_metrics(config)  # one count and measurement, logged on every fold run
        results = []
        for fold in folds:
            results.append(reused.get(fold.name)
                           or run_fold(index, features, fold, config, tags, source, backbone, sustainability, corpus))
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
    return pooled


def trust_profile(summary: dict[str, float], n_folds: int) -> dict[str, Any]:
    """The five trust axes of one (backbone, dataset) run: the metric behind each axis, its mean and std over the
    folds, the direction, and its radar score (``trustser.study.radar``'s fixed normalisation, 1 = most
    trustworthy), so that a reader compares runs without re-deriving which number is which."""
    from trustser.study.radar import radar_score
    from trustser.study.space import OBJECTIVES

    axes = {}
    for axis, objective in OBJECTIVES.items():
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
                             "gap; sustainability 1 - log10(GFLOPs) / 2"}


def run_fold(index: CorpusIndex, features: FeatureStore, fold: Fold, config: RunConfig, tags: dict[str, str],
             source: Any, backbone: Any = None, sustainability: dict[str, float] | None = None,
             corpus: CorpusTable | None = None) -> FoldResult:
    """Train, evaluate and log one fold as a nested run; ``sustainability`` (the backbone's cost, the same for
    every fold) is logged on it too so that each fold run carries all five trust families. ``corpus``: its train /
    validation / test subsets are logged as the run's dataset inputs. What a resumed run needs to reuse the fold
    (``resume/``) is logged last."""
    import mlflow

    from trustser import tracking
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
                                                 config.trust, config.max_seconds, config.unfreeze_top, config.seeds)
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
        mlflow.log_figure(confusion_figure(perf.confusion, EMOTIONS, f"{config.backbone} {fold.name}"),
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
    import matplotlib.pyplot as plt
    import mlflow

    from trustser import tracking
    from trustser.metrics.calibration import reliability_figure

    fig = reliability_figure(calibration.table, f"{title}: reliability (ECE {calibration.ece:.3f})")
    mlflow.log_figure(fig, "calibration/reliability.png")
    plt.close(fig)
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
    mlflow.log_figure(sweep_figure(sweep, f"{config.backbone} {fold.name}"), "safety/snr_sweep.png")


def parent_params(config: RunConfig, source, index: CorpusIndex, num_params: int) -> dict[str, Any]:
    return {
        "backbone": config.backbone, "dataset": config.dataset, "data_root": str(index.root),
        "folds": config.folds, "weights": str(source.path) if source.path else source.kind,
        "weights_source": source.kind, "weights_identity": source.identity[:64], "random_init": config.random_init,
        "max_seconds": config.max_seconds, "precision": config.precision, "backbone_params": num_params,
        **{f"head.{k}": v for k, v in config.train.as_params().items()}, **config.trust.as_params(),
        "unfreeze_top": config.unfreeze_top, "epochs": config.train.epochs, "batch_size": config.train.batch_size, "lr": config.train.lr,
        "seed": config.train.seed, "python": platform.python_version(),
    }


def log_corpus_artifacts(index: CorpusIndex, stats: ExtractionStats) -> None:
    import mlflow

    from trustser import tracking

    caveats = {f"kept_with_{reason}": float(n) for reason, n in index.caveat_counts().items()}
    mlflow.log_metrics({**stats.as_metrics(), "n_clips": len(index.clips), "n_skipped": len(index.skipped),
                        "n_kept_with_caveats": len(index.caveats), **caveats})
    mlflow.log_text(skips_csv(index.skipped), "skipped.csv")
    if index.caveats:  # kept clips whose metadata is incomplete (e.g. gender unknown: left out of gender metrics)
        mlflow.log_text(skips_csv(index.caveats), "caveats.csv")
    tracking.log_json({f.name: f.partitions() for f in index.folds}, "folds.json")


def skips_csv(skips: list[Any]) -> str:
    """Skipped clips, or clips kept with caveats, as a CSV artifact: one row per item with its reason."""
    from trustser import tracking

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


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    train_fields = set(TrainConfig.__dataclass_fields__)
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    rest = {k: v for k, v in values.items() if k not in train_fields}
    return RunConfig(train=train, **rest)




@dataclass(frozen=True)
class CorpusTable:
    """The clips a run used, as its MLflow dataset input: one row per clip (``CLIP_COLUMNS``, then the clip's
    partition in every fold of the corpus, "" where a fold leaves it out), with the dataset's name, source and
    digest."""

    name: str
    source: str
    frame: Any  # pandas.DataFrame
    digest: str

    def subset(self, clip_ids: tuple[str, ...] | list[str], partition: str):
        wanted = set(clip_ids)
        return self.frame.loc[self.frame["clip_id"].isin(wanted), list(CLIP_COLUMNS)].assign(partition=partition)


def corpus_table(index: CorpusIndex, config: RunConfig) -> CorpusTable:
    """The corpus as loaded and extracted (clips with unusable audio are gone), each file hashed once more."""
    import pandas as pd

    from trustser.features import clip_digest

    rows = [(cid, str(clip.path), clip.speaker, clip.gender or "", clip.emotion, clip_digest(clip.path))
            for cid, clip in sorted(index.clips.items())]
    frame = pd.DataFrame(rows, columns=list(CLIP_COLUMNS))
    for fold in index.folds:
        where = {cid: part for part, ids in fold.partitions().items() for cid in ids}
        frame[fold.name] = [where.get(cid, "") for cid in frame["clip_id"]]
    source = corpus_source(index, config)
    name = f"manifest:{Path(source).name}" if index.name == "manifest" else index.name
    return CorpusTable(name, source, frame, table_digest(frame))


def corpus_source(index: CorpusIndex, config: RunConfig) -> str:
    """Where the corpus came from: the manifest file for a manifest corpus, else its data root."""
    if index.name == "manifest" and config.data_root:
        from trustser.corpora.manifest import manifest_path

        try:
            return str(manifest_path(Path(config.data_root).expanduser().resolve(), dict(config.corpus_options)))
        except Exception:  # it was found a moment ago; should it be gone now, the data root still says where
            pass
    return str(index.root)


def table_digest(frame: Any) -> str:
    """Digest of a clip table: its clips' ids, content hashes and labels, in clip-id order (MLflow keeps up to 36
    characters)."""
    import hashlib

    h = hashlib.sha256()
    for row in sorted(frame[["clip_id", "sha1", "speaker", "gender", "emotion"]].itertuples(index=False)):
        h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()[:16]


def mlflow_dataset(frame: Any, name: str, source: str, digest: str) -> Any:
    import warnings

    import mlflow

    with warnings.catch_warnings():  # MLflow registers local paths twice ("" and file schemes), to the same class
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)


def log_corpus_input(corpus: CorpusTable) -> None:
    """The whole corpus on the parent run (context ``corpus``), its table as ``dataset/clips.csv``."""
    import mlflow

    mlflow.log_input(mlflow_dataset(corpus.frame, corpus.name, corpus.source, corpus.digest), context="corpus")
    mlflow.log_text(corpus.frame.to_csv(index=False), "dataset/clips.csv")


def log_fold_inputs(corpus: CorpusTable, fold: Fold) -> None:
    """A fold run's three dataset inputs: its train, validation and test clips (contexts of those names)."""
    import mlflow

    parts = fold.partitions()
    datasets = []
    for part, ids in parts.items():
        frame = corpus.subset(ids, part)
        datasets.append(mlflow_dataset(frame, f"{corpus.name}/{fold.name}/{part}", corpus.source,
                                       table_digest(frame)))
    mlflow.log_inputs(datasets, contexts=list(parts), tags_list=[None] * len(parts))


def resume_key(chash: str, corpus_digest: str, weights_identity: str) -> str:
    """What a fold run must share with a new run to be reused by it: configuration, corpus, weights and code."""
    import hashlib

    text = json.dumps([chash, corpus_digest, weights_identity, trustser.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mark_dead_runs(chash: str, current_id: str) -> list[str]:
    """Mark KILLED the RUNNING top-level runs of configuration ``chash`` (parents and folds) whose process is dead,
    leaving their FINISHED folds as they are; returns the ids marked. Runs whose process lives, or runs on another
    host, are left RUNNING (the latter with a warning)."""
    import mlflow

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(current_id).info.experiment_id
    running = client.search_runs([experiment_id], filter_string=(
        f"tags.`{CONFIG_HASH_TAG}` = '{chash}' and tags.`{RESUMABLE_TAG}` = 'true' and attributes.status = 'RUNNING'"),
        max_results=1000)
    marked: list[str] = []
    for run in sorted(running, key=lambda r: r.data.tags.get(KIND_TAG) != "experiment"):  # parents: whole trees
        tags = run.data.tags
        if run.info.run_id == current_id or run.info.run_id in marked:
            continue
        state = tracking.process_state(tags)
        if state == "dead":
            reason = (f"its process (pid {tags.get(tracking.PID_TAG)} on {tags.get(tracking.HOST_TAG)}) died; run "
                      f"{current_id} of the same configuration ({chash}) resumes it and reuses its finished folds")
            marked += tracking.kill_run_tree(client, run, experiment_id, reason, finished_too=False)
        elif state == "unknown":
            log.warning("run %s of this configuration is RUNNING on host %s, which cannot be checked from here: left "
                        "as it is, and its folds are not reused", run.info.run_id, tags.get(tracking.HOST_TAG, "?"))
    if marked:
        log.warning("marked %d MLflow run(s) of a dead run of this configuration KILLED: %s", len(marked),
                    ", ".join(marked))
    return marked


def resume_folds(key: str, fold_names: list[str], config: RunConfig, backbone: Any,
                 parent_id: str) -> dict[str, FoldResult]:
    """The finished folds of an interrupted run with resume key ``key``, moved under ``parent_id`` and read back
    (see the module docstring); fold name → FoldResult."""
    import mlflow

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    found = client.search_runs([experiment_id], filter_string=(
        f"tags.`{RESUME_KEY_TAG}` = '{key}' and tags.`{KIND_TAG}` = 'fold' and tags.`{RESUMABLE_TAG}` = 'true' "
        "and attributes.status = 'FINISHED'"), order_by=["attributes.end_time DESC"], max_results=1000)
    parents: dict[str, Any] = {}

    def interrupted(old: str) -> bool:
        if old and old not in parents:
            try:
                parents[old] = client.get_run(old)
            except Exception:  # the parent is gone from the store
                parents[old] = None
        parent = parents.get(old)
        return (old != parent_id and parent is not None and parent.info.lifecycle_stage == "active"
                and parent.info.status in ("KILLED", "FAILED"))

    out: dict[str, FoldResult] = {}
    moved_from: dict[str, str] = {}  # fold name → the interrupted parent it is reused from
    for run in found:  # newest first
        name, old = run.data.tags.get("fold", ""), run.data.tags.get("mlflow.parentRunId", "")
        if name not in fold_names or not interrupted(old):
            continue
        if name in out:
            reason = f"superseded: run {out[name].run_id} is the finished {name} of this configuration"
        else:
            try:
                out[name], moved_from[name] = load_fold_state(client, run, config, backbone), old
                continue
            except Exception as exc:
                log.warning("cannot reuse finished %s (run %s): %s; computing it again", name, run.info.run_id, exc)
                reason = (f"its resume artifacts could not be read ({type(exc).__name__}: {exc}); run {parent_id} "
                          f"computes {name} again")
        tracking.kill_run_tree(client, run, experiment_id, reason)
    for name, result in out.items():
        client.set_tag(result.run_id, "trustser.reparented_from", moved_from[name])
        client.set_tag(result.run_id, "mlflow.parentRunId", parent_id)
    old_parents = sorted(set(moved_from.values()))
    for old in old_parents:
        client.set_tag(old, "trustser.resumed_by", parent_id)
    if out:
        mlflow.set_tags({"trustser.reused_folds": ", ".join(f"{n}={r.run_id}" for n, r in sorted(out.items())),
                         "trustser.resumes_run": ", ".join(old_parents)})
        log.warning("resuming run(s) %s: reusing finished %s", ", ".join(old_parents), ", ".join(sorted(out)))
    return out


def log_fold_state(result: FoldResult) -> None:
    """``resume/fold_result.json`` (the fold's metrics, training summary and per-clip test outcomes) and
    ``resume/head.safetensors`` (the trained head's state dict): what a resumed run needs to reuse this fold."""
    import mlflow
    from safetensors.torch import save_file

    from trustser import tracking

    train = result.train
    state = {"format": RESUME_FORMAT, "fold": result.fold,
             "metrics": {k: float(v) for k, v in result.metrics.items()},
             "train": {"best_epoch": int(train.best_epoch), "best_val_uar": float(train.best_val_uar),
                       "history": [{k: float(v) for k, v in h.items()} for h in train.history],
                       "steps": int(train.steps), "stop_reason": train.stop_reason},
             "outcomes": outcomes_to_json(result.outcomes) if result.outcomes is not None else None}
    tracking.log_json(state, f"{RESUME_DIR}/fold_result.json")
    with tracking.artifact_dir() as tmp:
        path = tmp / "head.safetensors"
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in train.head.state_dict().items()}, str(path))
        mlflow.log_artifact(str(path), RESUME_DIR)


def load_fold_state(client: Any, run: Any, config: RunConfig, backbone: Any) -> FoldResult:
    """A finished fold run as a FoldResult, from its ``resume/`` artifacts (the head rebuilt and loaded)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="trustser-resume-") as tmp:
        local = Path(client.download_artifacts(run.info.run_id, RESUME_DIR, tmp))
        state = json.loads((local / "fold_result.json").read_text())
        weights = load_file(str(local / "head.safetensors"))
    if state.get("format") != RESUME_FORMAT:
        raise ValueError(f"resume format {state.get('format')}, this trustser reads {RESUME_FORMAT}")
    if config.unfreeze_top:
        from trustser.finetune import build_finetune_model

        head = build_finetune_model(backbone, config.unfreeze_top, len(EMOTIONS), config.train.width,
                                    config.train.pooling)
    else:  # sized from the stored statistics, as train_head sizes it from the features
        from trustser.head import EmotionHead

        head = EmotionHead(*weights["feat_mean"].shape, len(EMOTIONS), config.train.width, config.train.pooling)
    head.load_state_dict(weights)
    head.eval()
    t = state["train"]
    train = TrainResult(head, t["best_epoch"], t["best_val_uar"], t["history"], t["steps"], t["stop_reason"])
    outcomes = outcomes_from_json(state["outcomes"]) if state["outcomes"] is not None else None
    return FoldResult(state["fold"], run.info.run_id, state["metrics"], train, outcomes)


def outcomes_to_json(outcomes: TestOutcomes) -> dict[str, Any]:
    """Every array of the outcomes with its dtype and shape, exactly (floats round-trip through JSON)."""
    out = {}
    for name in TestOutcomes.__dataclass_fields__:
        array = np.asarray(getattr(outcomes, name))
        out[name] = {"dtype": "object" if array.dtype == object else array.dtype.str, "shape": list(array.shape),
                     "values": array.ravel().tolist()}
    return out


def outcomes_from_json(data: dict[str, Any]) -> TestOutcomes:
    arrays = {}
    for name, item in data.items():
        values = np.empty(len(item["values"]), dtype=object) if item["dtype"] == "object" else None
        if values is not None:
            values[:] = item["values"]  # element by element: a list of strings must not become a 2-D array
        else:
            values = np.array(item["values"], dtype=item["dtype"])
        arrays[name] = values.reshape(item["shape"])
    return TestOutcomes(**arrays)

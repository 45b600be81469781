"""One fold evaluated: train on its train part, select on validation, measure every trust metric on its test part.

``evaluate_fold`` returns a ``FoldEvaluation``: the metrics to log and the objects behind them (reports, per-clip
predictions, probes, attacks, corruptions, outcomes for intervals). It logs nothing: ``trustser.fold_logging``
writes one to MLflow, and ``trustser.experiment`` runs the folds. Tests call it directly on cached features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from trustser import EMOTIONS, MAX_SECONDS
from trustser.axes import CHANCE_MARGIN, CHANCE_UAR
from trustser.corpora import CorpusIndex, Fold
from trustser.cross_corpus import CrossCorpus, cross_metrics
from trustser.devices import module_device
from trustser.features import FeatureStore
from trustser.metrics.calibration import CalibrationReport
from trustser.metrics.fairness import FairnessReport, fairness_report
from trustser.metrics.headline import TestOutcomes, headline_metrics
from trustser.metrics.performance import PerformanceReport, performance_report
from trustser.metrics.reference import linear_reference, reference_warning
from trustser.metrics.verdicts import fairness_verdicts
from trustser.probes import PROBE_CONFIG, ProbeResult, gender_probe, speaker_probe
from trustser.run_config import TrainConfig, TrustConfig
from trustser.training import TrainResult, predict, predict_logits, train_head


@dataclass
class FoldEvaluation:
    """What ``evaluate_fold`` measured on one fold (typed, so the logger and the tests read fields, not keys)."""

    metrics: dict[str, float]  # every scalar logged on the fold run
    train: TrainResult  # the selected model (head, or top layers + head) and its training history
    performance: PerformanceReport
    fairness: FairnessReport
    test_ids: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray  # [clips, classes] softmax
    snr_db: float  # the attacks' primary SNR
    probes: dict[str, ProbeResult] = field(default_factory=dict)  # "gender", "speaker" (when run)
    attacks: dict[str, dict[float, Any]] = field(default_factory=dict)  # attack → SNR → AttackReport
    robustness: Any = None  # metrics.robustness.RobustnessRun, when corruptions ran
    reference_warning: str | None = None  # the head below the linear reference, in words
    outcomes: TestOutcomes | None = None  # per-clip outcomes, for intervals here and pooled on the parent
    calibration: CalibrationReport | None = None


def evaluate_fold(
    index: CorpusIndex,
    features: FeatureStore,
    fold: Fold,
    config: TrainConfig,
    progress: bool = False,
    backbone: Any = None,
    trust: TrustConfig = TrustConfig(),
    max_seconds: float = MAX_SECONDS,
    unfreeze_top: int = 0,
    seeds: int = 1,
    cross: CrossCorpus | None = None,
) -> FoldEvaluation:
    """Train on the fold's train part, select on validation, evaluate every trust metric on test; no logging
    (``trustser.fold_logging`` writes the result to MLflow).

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

        model_factory = partial(
            build_finetune_model, backbone, unfreeze_top, len(EMOTIONS), config.width, config.pooling
        )
    model = model_factory() if model_factory else None
    result = train_head(
        features,
        labels,
        list(fold.train),
        list(fold.validation),
        len(EMOTIONS),
        config,
        progress=progress,
        desc=f"{fold.name} train",
        model=model,
        device=device,
    )
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
    ev = FoldEvaluation(metrics, result, perf, fair, test_ids, y_true, y_pred, probs, float(trust.snr_db))
    metrics.update(result.summary())
    if seeds > 1:
        # the cached features, not the first seed's live ones: each seed trains its own top layers on them
        metrics.update(seed_spread(cached, labels, fold, config, seeds, metrics["test_uar"], model_factory, device))
    if cross is not None:  # the same model on all of another corpus (trustser.cross_corpus)
        cross_features = cross.features
        if unfreeze_top:
            cross_features = live_features(result.head, cross.features, cross.clip_ids, config.batch_size)
        metrics.update(
            cross_metrics(cross, head, cross_features, config.batch_size, trust.bootstrap_resamples, config.seed)
        )
    if trust.reference:
        reference = linear_reference(
            features, labels, [*fold.train, *fold.validation], test_ids, len(EMOTIONS), seed=config.seed
        )
        metrics.update(reference.to_dict())
        ev.reference_warning = reference_warning(metrics["test_uar"], reference.uar)
    if trust.probes:
        probe_config = probe_train_config(config, trust)
        gender = gender_probe(features, index.clips, fold.train, fold.validation, fold.test, probe_config, device)
        speaker = speaker_probe(features, index.clips, fold.train, probe_config, device)
        metrics.update(gender.to_dict("privacy_gender"))
        metrics.update(speaker.to_dict("privacy_speaker"))
        ev.probes = {"gender": gender, "speaker": speaker}
    if trust.safety and backbone is not None:
        t0 = time.perf_counter()
        ev.attacks = evaluate_safety(
            index, attacked_backbone, head, test_ids, y_true, y_pred, trust, max_seconds, progress
        )
        for attack, by_snr in ev.attacks.items():
            primary = by_snr[float(trust.snr_db)]
            metrics.update({f"safety_{attack}_{k}": v for k, v in primary.to_dict().items()})
            metrics.update({f"safety_{attack}_asr_snr{snr:g}": r.asr for snr, r in by_snr.items()})
        metrics["time_attack_s"] = time.perf_counter() - t0
    if trust.corruptions and backbone is not None:
        t0 = time.perf_counter()
        ev.robustness = evaluate_robustness(
            index, attacked_backbone, head, test_ids, y_true, y_pred, trust, max_seconds, progress
        )
        metrics.update(ev.robustness.metrics(len(EMOTIONS), trust.bootstrap_resamples, config.seed))
        metrics["time_robustness_s"] = time.perf_counter() - t0
    ev.outcomes = test_outcomes(index, ev)
    headline, calibration = headline_metrics(ev.outcomes, len(EMOTIONS), trust.bootstrap_resamples, config.seed)
    headline.pop("test_uar")  # the same number as test_uar above
    metrics.update(headline)
    metrics.update(fairness_verdicts(metrics))  # each gap against the random models' (trustser.metrics.verdicts)
    ev.calibration = calibration
    return ev


def test_outcomes(index: CorpusIndex, ev: FoldEvaluation) -> TestOutcomes:
    """The fold's per-clip outcomes that intervals are computed from (speakers as the resampling unit)."""

    def speakers(ids) -> np.ndarray:
        return np.array([index.clips[c].speaker for c in ids], dtype=object)

    outcomes = TestOutcomes(
        speakers(ev.test_ids),
        np.array([index.clips[c].gender for c in ev.test_ids], dtype=object),
        ev.y_true,
        ev.y_pred,
        ev.probs,
    )
    gender = ev.probes.get("gender")
    if gender is not None and gender.test_ids:
        outcomes.probe_speakers, outcomes.probe_correct = speakers(gender.test_ids), np.array(gender.correct)
    fgsm = ev.attacks.get("fgsm")
    if fgsm:
        primary = fgsm[ev.snr_db]
        attacked = [r for r in primary.records if r.status == "attacked"]
        outcomes.attack_speakers = speakers([r.clip_id for r in attacked])
        outcomes.attack_success = np.array([bool(r.flipped) for r in attacked], dtype=bool)
    if ev.robustness is not None:
        from trustser.metrics.robustness import outcome_arrays

        for name, values in outcome_arrays(ev.robustness).items():
            setattr(outcomes, name, values)
    return outcomes


def seed_spread(
    features: FeatureStore,
    labels: dict[str, int],
    fold: Fold,
    config: TrainConfig,
    seeds: int,
    first_uar: float,
    model_factory: Any,
    device: Any = None,
) -> dict[str, float]:
    """Test UAR of the same recipe trained with seeds seed+1 .. seed+N-1 beside the first seed's: how much of a
    difference between two configurations the training noise alone can make. Trust metrics use the first seed."""
    values = [first_uar]
    for offset in range(1, seeds):
        seeded = replace(config, seed=config.seed + offset)
        result = train_head(
            features,
            labels,
            list(fold.train),
            list(fold.validation),
            len(EMOTIONS),
            seeded,
            model=model_factory() if model_factory else None,
            device=device,
        )
        head = result.head.head if hasattr(result.head, "top") else result.head
        test_features = features
        if hasattr(result.head, "top"):
            from trustser.finetune import live_features

            test_features = live_features(result.head, features, list(fold.test), config.batch_size)
        y_true = np.array([labels[c] for c in fold.test])
        values.append(uar_of(head, test_features, list(fold.test), y_true, config.batch_size))
    arr = np.array(values)
    return {
        "test_uar_seed_mean": float(arr.mean()),
        "test_uar_seed_std": float(arr.std(ddof=1)),
        "test_uar_seed_min": float(arr.min()),
        "test_uar_seed_max": float(arr.max()),
        "seeds": float(seeds),
    }


def uar_of(head: Any, features: FeatureStore, ids: list[str], y_true: np.ndarray, batch_size: int) -> float:
    from trustser.metrics.performance import uar

    return uar(y_true, predict(head, features, ids, batch_size), len(EMOTIONS))


def probe_train_config(run: TrainConfig, trust: TrustConfig) -> TrainConfig:
    """The privacy probes' training: the method's probe (default head, lr 5e-4, weighted sum of all layers) for
    every run, whatever head width, learning rate or pooling the emotion model was trained with, so that probe
    accuracies of different trials measure the embeddings and not the probe. They train the way the run trains
    (schedule, step floor, patience, standardisation), so they are as converged as the emotion head; the seed and
    batch size follow the run, and the ``paper`` schedule's epoch count is ``trust.probe_epochs`` (10)."""
    return replace(
        PROBE_CONFIG,
        seed=run.seed,
        batch_size=run.batch_size,
        epochs=trust.probe_epochs,
        min_steps=run.min_steps,
        schedule=run.schedule,
        max_epochs=run.max_epochs,
        patience=run.patience,
        standardize=run.standardize,
    )


def attack_subset(test_ids: list[str], max_clips: int | None) -> list[int]:
    """Positions of the test clips to attack: all, or a deterministic hash-ordered subset."""
    import hashlib

    order = sorted(range(len(test_ids)), key=lambda i: hashlib.sha1(test_ids[i].encode()).hexdigest())
    return sorted(order[:max_clips]) if max_clips else list(range(len(test_ids)))


def evaluate_safety(
    index: CorpusIndex,
    backbone: Any,
    head: Any,
    test_ids: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    trust: TrustConfig,
    max_seconds: float,
    progress: bool,
) -> dict[str, Any]:
    """Attacks on the raw waveform through backbone + trained head, over the correctly classified test clips, each
    at ``trust.attack_snrs``. The first attack's clean predictions on the waveform path are reused by the next
    (Gaussian noise then needs no clean forward), so every attack is measured on the same clips."""
    from trustser.metrics.safety import AttackSettings, ClipWaves, WaveformClassifier, run_attack

    chosen = attack_subset(test_ids, trust.max_attack_clips)
    classifier = WaveformClassifier(backbone, head)
    waves = ClipWaves([index.clips[test_ids[i]].path for i in chosen], max_seconds=max_seconds)
    settings = AttackSettings(pgd_steps=trust.pgd_steps, train_mode=trust.attack_train_mode)
    reports: dict[str, Any] = {}
    known: list[int | None] | None = None  # the waveform path's clean predictions, shared by the attacks
    for attack in trust.attacks:
        reports[attack] = run_attack(
            classifier,
            waves,
            [int(y_true[i]) for i in chosen],
            attack,
            trust.attack_snrs(attack),
            clip_ids=[test_ids[i] for i in chosen],
            clean_predictions=[int(y_pred[i]) for i in chosen],
            settings=settings,
            progress=progress,
            waveform_predictions=known,
        )
        made = reports[attack][float(trust.snr_db)].waveform_predictions()
        known = made if known is None else [k if k is not None else m for k, m in zip(known, made)]
    return reports


def evaluate_robustness(
    index: CorpusIndex,
    backbone: Any,
    head: Any,
    test_ids: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    trust: TrustConfig,
    max_seconds: float,
    progress: bool,
) -> Any:
    """Every test clip, clean and under each corruption of ``trust.corruptions``, through backbone + trained head
    (``trustser.metrics.robustness``); babble talkers come from the fold's other test speakers. Seed 0 always: every
    configuration meets the same corrupted clips."""
    from trustser.metrics.corruptions import resolve
    from trustser.metrics.robustness import evaluate_corruptions
    from trustser.metrics.safety import ClipWaves, WaveformClassifier

    waves = ClipWaves([index.clips[c].path for c in test_ids], max_seconds=max_seconds)
    return evaluate_corruptions(
        WaveformClassifier(backbone, head),
        waves,
        [int(t) for t in y_true],
        [index.clips[c].speaker for c in test_ids],
        resolve(trust.corruptions),
        clip_ids=test_ids,
        clean_predictions=[int(p) for p in y_pred],
        progress=progress,
    )


def training_warnings(ev: FoldEvaluation, fold: str) -> list[str]:
    """What a reader of this fold's trust profile must be told: a head below the linear reference, a head that
    learned nothing (test UAR interval not above chance), training that was still improving when it stopped."""
    out = []
    metrics = ev.metrics
    if ev.reference_warning:
        out.append(f"{fold}: {ev.reference_warning}")
    chance = CHANCE_UAR
    low = metrics.get("test_uar_ci_low", float("nan"))
    uar = metrics.get("test_uar", float("nan"))
    if (np.isfinite(low) and low <= chance) or (not np.isfinite(low) and uar <= chance + CHANCE_MARGIN):
        out.append(
            f"{fold}: test UAR {uar:.3f} is not shown to be above chance {chance:.2f}"
            + (f" (its 95 % interval reaches {low:.3f})" if np.isfinite(low) else "")
            + ": the model may have learned nothing usable; its safety and fairness figures may not be "
            "meaningful"
        )
    if metrics.get("best_at_last_epoch") == 1.0 and metrics.get("stopped_early") == 0.0:
        out.append(
            f"{fold}: the best validation epoch was the last one trained ({int(metrics['best_epoch'])}): "
            "training was still improving; use the converge schedule or more epochs"
        )
    return out

"""The headline metrics of one test set with their uncertainty: intervals, fairness against chance, calibration.

``TestOutcomes`` holds what a fold's test set produced, clip by clip (emotion predictions and probabilities, the
gender probe's correctness, the FGSM attack's successes, the predictions under each corruption of the suite), so the same pure function scores one fold run or the
pooled test clips of every fold (``pool``) for the parent run: the parent's interval is then over all test
speakers of the corpus, not an average of per-fold intervals.

Keys (``headline_metrics``), each a speaker-level bootstrap 95 % interval (``trustser.metrics.uncertainty``):
``test_uar[_ci_low|_ci_high]``, ``privacy_gender_accuracy_ci_*``, ``safety_fgsm_asr_ci_*``,
``fairness_equality_of_odds_ci_*``, ``fairness_statistical_parity_ci_*``; fairness against chance:
``fairness_equality_of_odds_null_p95`` / ``_p_value`` (gender permuted over speakers),
``fairness_equality_of_odds_random_p95`` (a random classifier with the test set's class priors), likewise for
statistical parity; calibration: ``test_ece`` (15 bins) with its interval, ``test_brier``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import numpy as np

from trustser.metrics import uncertainty as unc
from trustser.metrics.calibration import CalibrationReport, calibration_report, expected_calibration_error

from trustser.run_config import DEFAULT_RESAMPLES


@dataclass
class TestOutcomes:
    """Per-clip outcomes of one test set; arrays are aligned within each group."""

    speakers: np.ndarray  # [N] emotion test clips' speakers
    genders: np.ndarray  # [N] "female" / "male" / None (unknown)
    y_true: np.ndarray  # [N]
    y_pred: np.ndarray  # [N]
    probs: np.ndarray  # [N, K] softmax of the head's logits
    probe_speakers: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))  # gender-probe test
    probe_correct: np.ndarray = field(default_factory=lambda: np.array([], dtype=bool))
    attack_speakers: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))  # FGSM attacked clips
    attack_success: np.ndarray = field(default_factory=lambda: np.array([], dtype=bool))
    # the corruption suite (trustser.metrics.robustness): clips evaluated, clean and per-corruption predictions
    robustness_speakers: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    robustness_y_true: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    robustness_clean: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    robustness_pred: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))  # clips x corruptions


def pool(outcomes: Sequence[TestOutcomes]) -> TestOutcomes:
    """All folds' test clips as one test set (speaker ids must identify a speaker across folds)."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(o, name) for o in outcomes])

    return TestOutcomes(*(cat(name) for name in TestOutcomes.__dataclass_fields__))


def _ece_stat(probs: np.ndarray, y_true: np.ndarray) -> float:
    return expected_calibration_error(probs, y_true)


def _nan_interval(prefix: str) -> dict[str, float]:
    nan = float("nan")
    return {f"{prefix}_ci_low": nan, f"{prefix}_ci_high": nan}


def headline_metrics(
    o: TestOutcomes, n_classes: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[dict[str, float], CalibrationReport]:
    """Intervals, fairness references and calibration of one test set (see the module docstring for the keys)."""
    out: dict[str, float] = {}
    boot = partial(unc.cluster_bootstrap, n_resamples=n_resamples, seed=seed)
    uar = boot(partial(unc.uar_stat, n_classes=n_classes), {"y_true": o.y_true, "y_pred": o.y_pred}, o.speakers)
    out.update(uar.to_dict("test_uar"))
    known = np.array([g in (unc.FEMALE, unc.MALE) for g in o.genders], dtype=bool)
    fair = {"y_true": o.y_true[known], "y_pred": o.y_pred[known], "gender": unc.gender_codes(o.genders[known])}
    for name, stat in (
        ("equality_of_odds", unc.equality_of_odds_stat),
        ("statistical_parity", unc.statistical_parity_stat),
    ):
        prefix = f"fairness_{name}"
        if known.any():
            interval = boot(partial(stat, n_classes=n_classes), fair, o.speakers[known])
            out.update({f"{prefix}_ci_low": interval.low, f"{prefix}_ci_high": interval.high})
        else:
            out.update(_nan_interval(prefix))
    out.update(_fairness_references(o, known, n_classes, n_resamples, seed))
    if o.probe_correct.size:
        probe = boot(unc.asr_stat, {"success": o.probe_correct}, o.probe_speakers)  # a mean of booleans
        out.update({"privacy_gender_accuracy_ci_low": probe.low, "privacy_gender_accuracy_ci_high": probe.high})
    else:
        out.update(_nan_interval("privacy_gender_accuracy"))
    if o.attack_success.size:
        asr = boot(unc.asr_stat, {"success": o.attack_success}, o.attack_speakers)
        out.update({"safety_fgsm_asr_ci_low": asr.low, "safety_fgsm_asr_ci_high": asr.high})
    else:
        out.update(_nan_interval("safety_fgsm_asr"))
    calibration = calibration_report(o.probs, o.y_true)
    out.update({f"test_{k}": v for k, v in calibration.to_dict().items()})
    ece = boot(_ece_stat, {"probs": o.probs, "y_true": o.y_true}, o.speakers)
    out.update({"test_ece_ci_low": ece.low, "test_ece_ci_high": ece.high})
    return out, calibration


def _fairness_references(
    o: TestOutcomes, known: np.ndarray, n_classes: int, n_resamples: int, seed: int
) -> dict[str, float]:
    """What chance gives on this test set: the speaker-permutation null and the random classifier."""
    keys = (
        "fairness_equality_of_odds_null_p95",
        "fairness_equality_of_odds_p_value",
        "fairness_statistical_parity_null_p95",
        "fairness_statistical_parity_p_value",
        "fairness_equality_of_odds_random_p95",
        "fairness_statistical_parity_random_p95",
    )
    genders = set(o.genders[known])
    if len(genders) < 2 or n_resamples == 0:
        return {k: float("nan") for k in keys}
    y_true, y_pred, spk = o.y_true[known], o.y_pred[known], o.speakers[known]
    gender = unc.gender_codes(o.genders[known])
    null = unc.fairness_null(y_true, y_pred, gender, spk, n_classes, n_permutations=n_resamples, seed=seed)
    chance = unc.fairness_chance(y_true, gender, None, n_classes, n_sim=n_resamples, seed=seed)
    return {
        f"fairness_{k}": v for k, v in {**null.to_dict(), **chance.to_dict()}.items() if f"fairness_{k}" in keys
    } | {"fairness_null_exact": float(null.exact)}

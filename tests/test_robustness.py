"""Robustness under the corruption suite (``trustser.metrics.robustness``): UAR, UAR drop and flip rate on a
hand-made classifier whose answers are worked out by hand, the random-model references and verdicts, babble and
codec bookkeeping, and a small fold run that logs it all."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from trustser.metrics import corruptions as C
from trustser.metrics.corruptions import resolve
from trustser.metrics.robustness import (
    NOT_EVALUATED,
    chance_reference,
    evaluate_corruptions,
    mean_flip_stat,
    robustness_metrics,
)
from trustser.metrics.verdicts import FLIP_SHARE_OF_CHANCE, fairness_verdicts

SR = 16_000


class LoudnessClassifier(nn.Module):
    """Emotion by loudness: class = floor((RMS dB + 40) / 10), clipped to 0..3 (−35 dB → 0, −25 → 1, −15 → 2,
    −5 → 3). A 20 dB quieter clip drops two classes (0 stays 0); 20 dB SNR noise moves the RMS by 0.04 dB."""

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rms = waves.double().square().mean(dim=1).sqrt()
        level = torch.clamp(torch.floor((20 * torch.log10(rms) + 40) / 10), 0, 3).long()
        return nn.functional.one_hot(level, 4).float()


def clip_at(db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.sin(2 * np.pi * 200 * np.arange(SR) / SR + rng.uniform(0, 6)) + 0.3 * rng.standard_normal(SR)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (db / 20)).astype(np.float32)


LEVELS = [-35.0, -25.0, -15.0, -5.0] * 2  # two clips per class
WAVES = [clip_at(db, i) for i, db in enumerate(LEVELS)]
LABELS = [0, 1, 2, 3] * 2  # the classifier is right on every clean clip
SPEAKERS = ["s1"] * 4 + ["s2"] * 4  # clip i of s1 and clip i of s2 have the same class


def run(names, **kwargs):
    return evaluate_corruptions(
        LoudnessClassifier(),
        WAVES,
        LABELS,
        SPEAKERS,
        resolve(names),
        clip_ids=[f"c{i}" for i in range(len(WAVES))],
        **kwargs,
    )


def test_flip_rate_and_uar_drop_of_a_hand_made_classifier():
    r = run(["gain_minus20db", "white_snr20"])
    m = r.metrics(n_classes=4, n_resamples=200)
    # clean: every clip right, UAR 1. 20 dB quieter: classes 0, 1, 2, 3 → 0, 0, 0, 1: three of four clips change,
    # class 0 keeps its recall (1), the others lose theirs (0) → UAR 0.25, drop 0.75
    assert r.clean.tolist() == LABELS and m["robustness_clean_uar"] == 1.0
    assert r.pred[:, 0].tolist() == [0, 0, 0, 1] * 2
    assert m["robustness_gain_minus20db_flip_rate"] == pytest.approx(0.75)
    assert m["robustness_gain_minus20db_uar"] == pytest.approx(0.25)
    assert m["robustness_gain_minus20db_uar_drop"] == pytest.approx(0.75)
    # white noise at 20 dB SNR raises the RMS by 10·log10(1.01) = 0.04 dB: nobody changes class
    assert m["robustness_white_snr20_flip_rate"] == 0.0 and m["robustness_white_snr20_uar_drop"] == 0.0
    assert m["robustness_white_snr20_achieved_snr_db_min"] == pytest.approx(20.0, abs=0.01)
    # the axis: the mean flip rate over the corruptions
    assert m["robustness"] == pytest.approx((0.75 + 0.0) / 2)
    # two speakers with the same answers: every resample gives the same figures, the interval is the value
    assert m["robustness_gain_minus20db_flip_rate_ci_low"] == m["robustness_gain_minus20db_flip_rate_ci_high"] == 0.75


def test_the_clean_prediction_is_the_waveform_paths_and_a_disagreement_with_the_given_one_is_counted():
    given = list(LABELS)
    given[3] = 0
    m = run(["white_snr20"], clean_predictions=given).metrics(4, 0)
    assert m["robustness_clean_mismatch"] == 1.0


def test_random_models_flip_one_minus_the_sum_of_squared_priors_and_the_verdicts_use_it():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3] * 5)
    chance = chance_reference(y, 4, n_sim=500, seed=0)
    assert chance.flip_rate == pytest.approx(0.75)  # 1 − 4 × (1/4)²
    assert 0.05 < chance.uar_drop_p95 < 0.4  # two random UARs on 40 clips differ by chance
    skewed = chance_reference(np.array([0] * 30 + [1] * 10), 4, n_sim=10)
    assert skewed.flip_rate == pytest.approx(1 - 0.75**2 - 0.25**2)

    m = run(["gain_minus20db", "white_snr20"]).metrics(4, 200)
    assert m["robustness_white_snr20_flip_rate_random"] == pytest.approx(0.75)
    assert m["robustness_white_snr20_pass"] == 1.0  # no flips, no drop
    assert m["robustness_gain_minus20db_flip_rate_pass"] == 0.0  # 0.75 > 0.25 × 0.75
    assert m["robustness_gain_minus20db_pass"] == 0.0 and m["robustness_pass"] == 0.0
    assert m["robustness_n_pass"] == 1.0 and m["robustness_n_corruptions"] == 2.0


def test_a_model_that_answers_at_random_fails_the_flip_rate_verdict():
    class Dice(nn.Module):
        def forward(self, waves, lengths):
            return torch.randn(waves.shape[0], 4)

    torch.manual_seed(0)
    waves = WAVES * 5
    r = evaluate_corruptions(Dice(), waves, LABELS * 5, [f"s{i % 6}" for i in range(40)], resolve(["white_snr20"]))
    m = r.metrics(4, 200)
    assert m["robustness_white_snr20_flip_rate"] > FLIP_SHARE_OF_CHANCE * 0.75
    assert m["robustness_white_snr20_pass"] == 0.0


def test_babble_talkers_are_other_speakers_and_a_lone_speakers_clips_are_left_out():
    speakers = ["s1"] * 4 + ["s2"] * 3 + ["lonely?"] * 0 + ["s3"]
    r = evaluate_corruptions(
        LoudnessClassifier(), WAVES, LABELS, speakers, resolve(["babble_snr10"]), clip_ids=[f"c{i}" for i in range(8)]
    )
    owner = dict(zip([f"c{i}" for i in range(8)], speakers))
    for i, chosen in enumerate(r.sources["babble_snr10"]):
        assert len(chosen) == 4 and all(owner[c] != speakers[i] for c in chosen)
    assert np.all(np.abs(r.achieved_snr_db[:, 0] - 10.0) < 0.1)

    alone = evaluate_corruptions(LoudnessClassifier(), WAVES[:3], LABELS[:3], ["s1"] * 3, resolve(["babble_snr10"]))
    assert (alone.pred[:, 0] == NOT_EVALUATED).all() and "babble_snr10" in alone.notes
    m = alone.metrics(4, 0)
    assert m["robustness_babble_snr10_n_clips"] == 0.0 and math.isnan(m["robustness"])


def test_a_codec_this_machine_lacks_is_skipped_with_its_reason_and_the_rest_still_counts(monkeypatch):
    monkeypatch.setattr(C, "unavailable_reason", lambda codec, sample_rate=SR: "libsndfile has no MP3 here (test)")
    r = run(["mp3_16kbps", "gain_minus20db"])
    assert r.skipped == {"mp3_16kbps": "libsndfile has no MP3 here (test)"}
    m = r.metrics(4, 0)
    assert m["robustness_mp3_16kbps_skipped"] == 1.0 and "robustness_mp3_16kbps_flip_rate" not in m
    assert m["robustness"] == pytest.approx(0.75) and m["robustness_n_corruptions"] == 1.0
    assert r.clips_frame()["corruption"].unique().tolist() == ["gain_minus20db"]


def test_the_axis_ignores_clips_a_corruption_was_not_applied_to():
    clean = np.array([0, 1, 2, 3])
    pred = np.array([[1, NOT_EVALUATED], [1, 2], [2, NOT_EVALUATED], [3, 0]])
    # column 0: one flip in 4 clips (0.25); column 1: two clips, both flipped (1.0)
    assert mean_flip_stat(clean, pred) == pytest.approx((0.25 + 1.0) / 2)


def test_pooled_figures_take_the_pooled_suffix_and_keep_interval_and_verdict_names():
    y = np.array([0, 1, 2, 3] * 3)
    pred = np.stack([y, (y + 1) % 4], axis=1)
    m = robustness_metrics(["white_snr10", "telephone"], y, y, pred, np.repeat(["a", "b", "c"], 4), 4, 100, pooled=True)
    assert m["robustness_white_snr10_flip_rate_pooled"] == 0.0 and m["robustness_telephone_flip_rate_pooled"] == 1.0
    assert {
        "robustness_pooled",
        "robustness_ci_low",
        "robustness_telephone_uar_drop_ci_high",
        "robustness_telephone_pass",
        "robustness_pass",
    } <= set(m)
    assert "robustness_telephone_flip_rate" not in m


def test_fairness_gaps_pass_when_no_larger_than_the_random_models():
    m = {
        "fairness_equality_of_odds": 0.20,
        "fairness_equality_of_odds_random_p95": 0.30,
        "fairness_statistical_parity": 0.40,
        "fairness_statistical_parity_random_p95": 0.30,
    }
    assert fairness_verdicts(m) == {"fairness_equality_of_odds_pass": 1.0, "fairness_statistical_parity_pass": 0.0}
    assert math.isnan(
        fairness_verdicts({"fairness_equality_of_odds": float("nan"), "fairness_equality_of_odds_random_p95": 0.3})[
            "fairness_equality_of_odds_pass"
        ]
    )


FIVE_KINDS = ("white_snr20", "pink_snr10", "babble_snr10", "telephone", "clipping_10pct")


def test_a_fold_run_logs_every_corruption_with_drop_flip_rate_intervals_verdicts_and_the_axis(fold1_emodb):
    from trustser.experiment import RunConfig, TrustConfig, run_experiment
    from trustser.training import TrainConfig

    trust = TrustConfig(
        safety=False, probes=False, measure_cost=False, reference=False, bootstrap_resamples=50, corruptions=FIVE_KINDS
    )
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="emodb",
            data_root=str(fold1_emodb),
            folds="1",
            random_init=True,
            train=TrainConfig(schedule="paper", epochs=1),
            progress=False,
            trust=trust,
            log_model=False,
        )
    )
    client = mlflow.MlflowClient()
    fold = client.get_run(result.folds[0].run_id)
    metrics, params = fold.data.metrics, fold.data.params
    for name in FIVE_KINDS:
        for figure in ("uar", "uar_drop", "flip_rate"):
            assert f"robustness_{name}_{figure}" in metrics, (name, figure)
            assert f"robustness_{name}_{figure}_ci_low" in metrics and f"robustness_{name}_{figure}_ci_high" in metrics
        assert 0.0 <= metrics[f"robustness_{name}_flip_rate"] <= 1.0
        assert metrics[f"robustness_{name}_pass"] in (0.0, 1.0)
        assert json.loads(params[f"robustness.{name}"])["kind"] == C.get_corruption(name).kind
    for name in ("white_snr20", "pink_snr10", "babble_snr10"):
        assert abs(metrics[f"robustness_{name}_achieved_snr_db_mean"] - C.get_corruption(name).param("snr_db")) < 0.1
    flips = [metrics[f"robustness_{n}_flip_rate"] for n in FIVE_KINDS]
    assert metrics["robustness"] == pytest.approx(np.mean(flips))
    assert metrics["robustness_clean_mismatch"] <= 1  # the waveform path agrees with the cached features
    assert "fairness_equality_of_odds_pass" in metrics
    clips = client.download_artifacts(fold.info.run_id, "robustness/clips.csv")
    import pandas as pd

    frame = pd.read_csv(clips)
    assert set(frame["corruption"]) == set(FIVE_KINDS)
    babble = frame[frame["corruption"] == "babble_snr10"]
    owner = dict(zip(frame["clip_id"], frame["speaker"].astype(str)))
    assert all(
        owner[s] != str(spk) for srcs, spk in zip(babble["babble_sources"], babble["speaker"]) for s in srcs.split()
    )

    parent = client.get_run(result.parent_run_id).data.metrics
    assert parent["robustness_mean"] == pytest.approx(metrics["robustness"])
    assert {
        "robustness_ci_low",
        "robustness_ci_high",
        "robustness_pooled",
        "robustness_pass",
        "robustness_white_snr20_flip_rate_pooled",
        "fairness_equality_of_odds_pooled",
    } <= set(parent)
    profile = json.loads(open(client.download_artifacts(result.parent_run_id, "trust_profile.json")).read())
    assert list(profile["axes"])[-1] == "robustness"
    assert profile["axes"]["robustness"]["radar_score"] == pytest.approx(1 - parent["robustness_mean"])

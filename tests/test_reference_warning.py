"""A model worse than a linear probe on its own features, or at chance, is never a silent result: on a small
generated manifest corpus where a linear probe succeeds, the default training converges or the fold run is tagged
``trustser.warning`` (and the CLI prints it)."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from run_flags import FAST_RUN

from trustser.cli import main
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.metrics.reference import REFERENCE_MARGIN, linear_reference, reference_warning
from trustser.training import TrainConfig

EMOTION_SOUND = {"neutral": (140.0, 0.05), "happy": (320.0, 0.2), "sad": (110.0, 0.02), "angry": (260.0, 0.5)}
REFERENCE_ONLY = TrustConfig(safety=False, probes=False, measure_cost=False, bootstrap_resamples=200)


def acted_corpus(tmp: Path, speakers: int = 10, per_class: int = 6, seconds: float = 0.5) -> Path:
    """A few hundred clips whose emotion shows in pitch and loudness (each speaker with its own voice)."""
    root = tmp / "acted"
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(int(16000 * seconds)) / 16000
    for s in range(speakers):
        voice = 0.8 + 0.05 * s
        for emotion, (f0, amplitude) in EMOTION_SOUND.items():
            for i in range(per_class):
                f = f0 * voice * (1 + 0.03 * rng.standard_normal())
                wave = amplitude * np.sin(2 * np.pi * f * t) + 0.3 * amplitude * np.sin(4 * np.pi * f * t)
                wave += 0.002 * rng.standard_normal(t.size)
                path = root / "audio" / f"s{s}" / f"{emotion}_{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, wave.astype(np.float32), 16000)
                rows.append([str(path.relative_to(root)), f"s{s}", "female" if s % 2 else "male", emotion])
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "speaker", "gender", "emotion"], *rows])
    return root


def run(root: Path, train: TrainConfig):
    result = run_experiment(
        RunConfig(
            backbone="whisper_tiny",
            dataset="manifest",
            data_root=str(root),
            folds="1",
            random_init=True,
            train=train,
            trust=REFERENCE_ONLY,
            progress=False,
        )
    )
    (fold,) = result.folds
    return fold, mlflow.MlflowClient().get_run(fold.run_id)


def test_the_warning_names_both_figures_and_fires_only_beyond_the_margin():
    assert reference_warning(0.90, 0.92) is None
    message = reference_warning(0.60, 0.95)
    assert "0.600" in message and "0.950" in message and "linear reference" in message
    assert reference_warning(float("nan"), 0.9) is None
    assert REFERENCE_MARGIN == 0.03


@pytest.mark.slow
def test_a_small_manifest_corpus_converges_or_warns_and_an_under_trained_head_always_warns(tmp_path):
    root = acted_corpus(tmp_path)
    # the method's recipe cut to one epoch (3 optimiser steps): the head cannot have learned, and the CLI says so
    out = CliRunner().invoke(
        main,
        ["run", "--manifest", str(root / "manifest.csv"), *FAST_RUN, "--standardize", "false", "--bootstrap", "200"],
    )
    assert out.exit_code == 0, out.output
    assert "warning" in out.output and "linear reference" in out.output
    client = mlflow.MlflowClient()
    (under,) = client.search_runs(
        [client.get_experiment_by_name("trustser").experiment_id], filter_string="tags.fold = 'fold1'"
    )
    reference = under.data.metrics["reference_linear_uar"]
    assert reference > 0.6, "the corpus must be learnable by a linear probe for this test to mean anything"
    assert under.data.metrics["test_uar"] < reference - REFERENCE_MARGIN
    assert "linear reference" in under.data.tags["trustser.warning"]

    # the default (converge, standardised): as good as the linear probe, or told
    fold, run_info = run(root, TrainConfig())
    converged = fold.metrics["test_uar"] >= fold.metrics["reference_linear_uar"] - REFERENCE_MARGIN
    assert converged or "trustser.warning" in run_info.data.tags
    assert fold.metrics["test_uar_ci_low"] > 0.25  # it learned: the interval clears chance
    assert fold.metrics["epochs_run"] > 1 and fold.metrics["train_steps"] >= fold.metrics["epochs_run"]


def test_the_linear_reference_is_trained_on_train_clips_only(tmp_path):
    import torch

    rng = torch.Generator().manual_seed(0)
    features = {f"c{i}": torch.randn(2, 4, 3, generator=rng) + (i % 4) for i in range(40)}
    labels = {f"c{i}": i % 4 for i in range(40)}
    train, test = [f"c{i}" for i in range(30)], [f"c{i}" for i in range(30, 40)]
    result = linear_reference(features, labels, train, test, 4)
    assert result.n_train == 30 and result.n_test == 10 and result.n_features == 6
    poisoned = {**features, **{c: -features[c] for c in test}}  # test clips never enter the fit
    assert linear_reference(poisoned, labels, train, test, 4).uar != result.uar or result.uar < 1.0

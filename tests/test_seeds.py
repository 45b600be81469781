"""``seeds: N`` trains N seeds per fold and logs how much test UAR moves with the seed alone."""

from __future__ import annotations

import pytest

from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig

NO_TRUST = TrustConfig(safety=False, probes=False, measure_cost=False, reference=False, bootstrap_resamples=0)


def test_seeds_log_the_spread_of_test_uar_and_keep_the_first_seeds_model(fold1_emodb):
    config = RunConfig(
        backbone="whisper_tiny",
        dataset="emodb",
        data_root=str(fold1_emodb),
        folds="1",
        random_init=True,
        train=TrainConfig(schedule="paper", epochs=3),
        trust=NO_TRUST,
        progress=False,
        seeds=3,
        log_model=False,
    )
    metrics = run_experiment(config).folds[0].metrics
    assert metrics["seeds"] == 3
    assert metrics["test_uar_seed_min"] <= metrics["test_uar"] <= metrics["test_uar_seed_max"]
    assert metrics["test_uar_seed_std"] >= 0.0
    single = run_experiment(RunConfig(**{**config.__dict__, "seeds": 1})).folds[0].metrics
    assert single["test_uar"] == pytest.approx(metrics["test_uar"])  # the trust metrics use the first seed
    assert "test_uar_seed_std" not in single

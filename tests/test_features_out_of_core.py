"""Corpora larger than memory: a feature store read from its cache entries a batch at a time gives exactly the
results of the same store held in memory, and training, probes, the linear reference and evaluation finish under a
memory limit smaller than the store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from synthetic_store import KEY, load_meta, write_store
from trustser.errors import ConfigError
from trustser.features import OnDisk, extract_features, open_store, resident_budget

TESTS = Path(__file__).resolve().parent


def test_resident_budget_reads_every_feature_memory_setting(monkeypatch):
    monkeypatch.delenv("TRUSTSER_FEATURE_MEMORY_GB", raising=False)
    assert resident_budget("memory") is None and resident_budget("disk") == 0
    assert resident_budget("1.5") == int(1.5 * 2**30)
    assert 0 < resident_budget("auto") < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setenv("TRUSTSER_FEATURE_MEMORY_GB", "2")
    assert resident_budget("auto") == 2 * 2**30
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(ConfigError, match="feature_memory"):
            resident_budget(bad)


def test_an_out_of_core_extraction_serves_the_same_clips_in_the_same_order(fold1_emodb):
    from trustser.backbones.loading import load_backbone
    from trustser.corpora import load_corpus

    index = load_corpus("emodb", fold1_emodb)
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    held, computed = extract_features(index, backbone, source, progress=False)  # computes and holds everything
    on_disk, stats = extract_features(index, backbone, source, progress=False, budget_bytes=0)
    one_clip = held.nbytes() // len(held)
    partly, partly_stats = extract_features(index, backbone, source, progress=False, budget_bytes=3 * one_clip)
    assert not held.out_of_core and computed.resident_bytes == computed.store_bytes == held.nbytes()
    assert on_disk.out_of_core and stats.reused == len(index.clips) and stats.resident_bytes == 0
    assert all(isinstance(v, OnDisk) for v in on_disk._features.values())
    assert 0 < partly_stats.resident_bytes <= 3 * one_clip and partly.out_of_core
    assert list(held) == list(on_disk) == list(partly)
    for clip in held:
        assert on_disk.frames(clip) == held[clip].shape[1]
        assert torch.equal(on_disk[clip], held[clip]) and torch.equal(partly[clip], held[clip])
    assert on_disk.nbytes() == held.nbytes() and on_disk.in_float32() is on_disk  # never copied whole
    assert stats.as_metrics()["feature_resident_gib"] == 0.0


def _finite_equal(a: dict[str, float], b: dict[str, float]) -> list[str]:
    """Keys whose values differ (NaN equals NaN)."""
    return [k for k in a if not (a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])))]


def test_training_probes_reference_and_evaluation_give_the_same_metrics_out_of_core(tmp_path):
    from trustser.experiment import TrustConfig, evaluate_fold
    from trustser.training import TrainConfig

    index, entries = load_meta(write_store(tmp_path, 160))
    trust = TrustConfig(safety=False, measure_cost=False, bootstrap_resamples=50, probe_epochs=3)
    config = TrainConfig(schedule="paper", epochs=4, batch_size=16)  # standardised, as by default
    in_memory = open_store(entries, KEY, budget_bytes=None).in_float32()  # what run_experiment holds for EmoDB
    assert not in_memory.out_of_core and next(iter(in_memory.values())).dtype == torch.float32
    out_of_core = open_store(entries, KEY, budget_bytes=0)
    assert out_of_core.out_of_core
    fold = index.folds[0]
    memory_run = evaluate_fold(index, in_memory, fold, config, trust=trust)
    disk_run = evaluate_fold(index, out_of_core, fold, config, trust=trust)
    expected, trained, got, trained_ooc = memory_run.metrics, memory_run.train, disk_run.metrics, disk_run.train
    assert expected.keys() == got.keys() and not _finite_equal(expected, got)
    assert trained.history == trained_ooc.history
    assert all(
        torch.equal(a, b) for a, b in zip(trained.head.state_dict().values(), trained_ooc.head.state_dict().values())
    )
    # the generated corpus is learnable, so equality is not that of two heads that learned nothing
    assert expected["test_uar"] > 0.5 and expected["privacy_gender_accuracy"] > 0.7
    assert expected["reference_linear_uar"] > 0.5


CAPPED_CHILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from synthetic_store import KEY, load_meta
    from trustser.experiment import TrustConfig, evaluate_fold
    from trustser.features import open_store, read_hidden
    from trustser.training import TrainConfig

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    index, entries = load_meta(sys.argv[2])
    cap = int(sys.argv[3])
    # what the libraries allocate once, on first use, whatever the corpus size, is part of the baseline: torch's
    # thread pool, the BLAS buffers of numpy and scipy (OpenBLAS aborts when it cannot get them), scikit-learn's
    # solver, and fairlearn's first report (it reserves ~1 GB of writable address space, ~10 MB of it resident)
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from trustser.metrics.fairness import fairness_report
    torch.zeros(1).sum()
    LogisticRegression().fit(np.random.default_rng(0).normal(size=(64, 8)), np.arange(64) % 4)
    fairness_report(np.arange(16) % 4, np.arange(16) % 4, ["female", "male"] * 8, 4)
    base_data, base_rss = status("VmData"), status("VmRSS")
    resource.setrlimit(resource.RLIMIT_DATA, (base_data + cap, base_data + cap))
    store = open_store(entries, KEY, budget_bytes=0)  # every entry verified, none held
    config = TrainConfig(schedule="paper", epochs=2)
    trust = TrustConfig(safety=False, measure_cost=False, bootstrap_resamples=50, probe_epochs=1)
    metrics = evaluate_fold(index, store, index.folds[0], config, trust=trust).metrics
    peak_rss = status("VmHWM")
    held, loaded = [], 0
    try:  # the same store held in memory, under the same limit: it must not fit, or the test proves nothing
        for path in entries.values():
            held.append(read_hidden(path))
            loaded += held[-1].numel() * 2
        in_memory = "fitted"
    except Exception as exc:
        in_memory = type(exc).__name__
    held.clear()
    print(json.dumps({"metrics": metrics, "store_bytes": store.nbytes(), "base_rss": base_rss,
                      "peak_rss": peak_rss, "base_data": base_data, "in_memory": in_memory,
                      "loaded_before_failure": loaded}))
""")


@pytest.mark.slow
def test_a_store_larger_than_the_memory_limit_trains_probes_and_evaluates_within_it(tmp_path):
    """The child caps its data segment (RLIMIT_DATA: heap and anonymous memory, where tensors live; not the shared
    libraries' address space, which under torch alone is ~5 GB of mostly untouched reservations) at 300 MB above
    what it uses after importing torch and trustser, then runs a fold's training, evaluation, probes and linear
    reference on a 450 MB store."""
    cap = 300 * 2**20
    meta = write_store(tmp_path, 2200, layers=4, hidden=256, frames=(60, 140))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CAPPED_CHILD, str(TESTS), str(meta), str(cap)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["store_bytes"] > 1.4 * cap
    assert out["in_memory"] != "fitted" and out["loaded_before_failure"] < out["store_bytes"]
    assert out["peak_rss"] - out["base_rss"] < cap  # resident memory too, file pages read included
    metrics = out["metrics"]
    assert metrics["test_uar"] > 0.5 and math.isfinite(metrics["privacy_gender_accuracy"])
    assert math.isfinite(metrics["privacy_speaker_accuracy"]) and metrics["reference_linear_uar"] > 0.5
    print(
        f"store {out['store_bytes'] / 2**20:.0f} MiB, cap {cap / 2**20:.0f} MiB above "
        f"{out['base_data'] / 2**20:.0f} MiB data, peak RSS {out['peak_rss'] / 2**20:.0f} MiB "
        f"(baseline {out['base_rss'] / 2**20:.0f} MiB); in memory: {out['in_memory']}"
    )


@pytest.mark.slow
def test_the_cli_runs_out_of_core_logs_the_choice_and_gets_the_in_memory_result(fold1_emodb):
    import mlflow
    from click.testing import CliRunner

    from trustser.cli import main

    def run(setting: str):
        out = CliRunner().invoke(
            main,
            [
                "run",
                "--backbone",
                "whisper_tiny",
                "--random-init",
                "--data-root",
                str(fold1_emodb),
                "--folds",
                "1",
                "--schedule",
                "paper",
                "--epochs",
                "2",
                "--no-safety",
                "--no-probes",
                "--no-cost",
                "--bootstrap",
                "0",
                "--no-progress",
                "--feature-memory",
                setting,
            ],
        )
        assert out.exit_code == 0, out.output
        client = mlflow.MlflowClient()
        (parent,) = client.search_runs(
            [client.get_experiment_by_name("trustser").experiment_id],
            filter_string=f"params.feature_memory = '{setting}'",
        )
        return parent.data

    on_disk, held = run("disk"), run("memory")
    assert on_disk.metrics["feature_resident_gib"] == 0.0 < on_disk.metrics["feature_store_gib"]
    assert held.metrics["feature_resident_gib"] == held.metrics["feature_store_gib"] > 0
    for key in ("test_uar_mean", "best_val_uar_mean", "reference_linear_uar_mean", "test_ece_mean"):
        assert on_disk.metrics[key] == held.metrics[key], key


def test_an_unknown_feature_memory_setting_is_refused_before_anything_runs():
    from click.testing import CliRunner

    from trustser.cli import main

    out = CliRunner().invoke(main, ["run", "--feature-memory", "plenty", "--random-init"])
    assert out.exit_code == 2 and "feature_memory" in out.output

"""scripts/bench.py: every measurement runs end to end on tiny inputs and reports well-formed numbers.

The --tiny preset uses random-init Whisper Tiny, two clips per fold partition and a one-epoch sweep over a ~40-clip
EmoDB copy; no figure is checked against a value (they depend on the machine), only that each is a positive finite
number where a ratio or rate is expected.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

HEADLINE = (
    "cache_speedup",
    "whisper_pad_flops_ratio",
    "whisper_pad_time_ratio",
    "extraction_peak_fraction",
    "bf16_speedup",
    "bf16_uar_delta",
    "matmul_gflops",
    "matmul_gflops_bf16",
)
POSITIVE = (
    "cache_speedup",
    "cache_speedup_incl_cold_extraction",
    "whisper_pad_flops_ratio",
    "whisper_pad_time_ratio",
    "extraction_peak_fraction",
    "extraction_peak_fraction_best_config",
    "bf16_speedup",
    "matmul_gflops",
    "matmul_gflops_bf16",
    "fgsm_vs_forward",
    "sweep_wall_s",
    "head_step_feature_bytes",
    "head_step_read_gbps",
    "memory_copy_gbps",
    "memory_copy_read_gbps",
    "head_step_bandwidth_fraction",
    "attack_batch_speedup",
)


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPTS))  # the script imports its helper modules from its own directory
    try:
        yield importlib.import_module("bench")
    finally:
        while str(SCRIPTS) in sys.path:
            sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def measure(bench):
    return importlib.import_module("bench_measure")


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tiny_run_prints_one_json_object_with_every_headline_ratio(bench, mini_emodb, tmp_path, capsys):
    output = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--json", "--data-root", str(mini_emodb), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed)  # exactly one JSON object: nothing else on stdout
    assert result == json.loads(output.read_text())
    for key in HEADLINE:
        assert key in result, key
    for key in POSITIVE:
        assert positive_finite(result[key]), (key, result[key])
    assert math.isfinite(result["bf16_uar_delta"]) and abs(result["bf16_uar_delta"]) <= 1
    assert 0 < result["extraction_peak_fraction"] < 5  # a fraction of a measured peak; loose: peaks are noisy
    assert set(result["targets"]) and all(isinstance(v, bool) for v in result["targets"].values())
    assert result["memory_copy_read_gbps"] == pytest.approx(result["memory_copy_gbps"] / 2)
    assert result["head_step_bandwidth_fraction"] == pytest.approx(
        result["head_step_read_gbps"] / result["memory_copy_read_gbps"]
    )
    assert "read + write" in result["head_step_bandwidth_convention"]
    step = result["head_step"]
    assert step["feature_dtype"] == "float32" and step["feature_bytes"] == result["head_step_feature_bytes"]
    # the default (standardised) step against the broadcast formulation it replaced: same logits, both timed
    assert positive_finite(step["standardized_step_s"]) and positive_finite(step["standardized_broadcast_step_s"])
    assert step["standardized_logits_max_abs_diff"] < 1e-4
    assert step["read_gbps"] == pytest.approx(step["feature_bytes"] / step["package_step_s"] / 1e9)
    assert positive_finite(result["sweep"]["head_step_in_pipeline_process"]["bandwidth_fraction"])

    machine = result["machine"]
    assert machine["versions"]["torch"] and machine["usable_cores"] >= 1
    assert result["threads_used"] >= 1 and len(result["load_average"]["start"]) == 3
    assert result["settings"]["mode"] == "tiny"

    sweep = result["sweep"]
    assert set(sweep["stages_s"]) >= {"extract", "train", "probes", "attacks", "flops", "other"}
    assert all(v >= 0 for k, v in sweep["stages_s"].items() if k != "other")
    assert positive_finite(sweep["peak_rss_bytes"])
    for corpus in ("iemocap", "crema_d", "msp_improv", "msp_podcast"):
        estimate = result["extrapolation"]["corpora"][corpus]
        assert positive_finite(estimate["total_h"]) and positive_finite(estimate["feature_store_gb_fp16"])
    hours = result["full_benchmark_estimate_hours"]
    assert set(hours) >= {"cpu"} and positive_finite(hours["cpu"])
    assert "cuda" not in hours  # the bench measures the CPU only: no GPU figure is made up
    full = result["full_benchmark_estimate"]
    assert full["hours"] == hours and full["assumptions"]["measured_backbones"] == ["whisper_tiny"]
    assert len(full["devices"]["cpu"]["by_backbone_h"]) == 7
    study = result["extraction_study"]["rows"]
    assert {row["threads"] for row in study} >= {1}
    assert all(positive_finite(row["gflops_per_s"]) for row in study)


def test_table_names_every_section(bench):
    table = bench.format_table(_fake_results())
    for heading in (
        "matmul",
        "1. cache vs recompute",
        "2. Whisper",
        "3. extraction",
        "4. bf16",
        "5. attack",
        "6. sweep",
        "targets:",
    ):
        assert heading in table
    assert "reads 8 MB of float32 features a step: 0.40 GB/s = 8 % of the memory copy's read rate" in table
    assert "10.0 GB/s read + write = 5.0 GB/s read" in table
    assert (
        "FGSM 7 SNRs, 16 clips: per clip 8.0 s; batches of 8 1.50x (best of 2, interleaved; results equal: True)"
        in table
    )
    assert (
        "the method's whole grid (2 backbones x 1 corpora, 100 clips, x folds x all metrics; measured on "
        "whisper_tiny" in table
    )
    assert "cpu: 3.0 h (extract 1.0, train 2.0 h)" in table and "whisper_tiny 1.0, apc 2.0 h" in table


def test_headline_carries_the_full_grid_hours_per_device(bench):
    r = _fake_results()
    r["matmul"]["bf16_peak_gflops"], r["memory_copy"]["convention"] = 2.0, "read + write"  # beyond the formatter
    r["extraction"]["compute_only_best_peak_fraction"] = 0.6
    assert bench.headline(r)["full_benchmark_estimate_hours"] == {"cpu": 3.0}


def test_attack_batch_speedup_is_the_measured_ratio_at_the_default_batch_size(bench):
    measured = {"default_batch_size": 8, "clips": 16, "speedup": {"4": 1.2, "8": 1.5}}
    assert bench._batch_speedup(measured) == 1.5
    assert bench._batch_speedup({**measured, "default_batch_size": 4}) == 1.2
    assert math.isnan(bench._batch_speedup(None))  # not measured: NaN, never a made-up number


@pytest.mark.filterwarnings("ignore:backbone .* RANDOM weights")
def test_attack_batching_times_both_paths_on_the_same_clips_and_checks_they_agree(measure):
    import types

    import torch

    from trustser.backbones.loading import load_backbone
    from trustser.head import EmotionHead

    backbone, _ = load_backbone("whisper_tiny", random_init=True)
    head = EmotionHead(backbone.spec.num_hidden_states, backbone.spec.hidden_size)
    generator = torch.Generator().manual_seed(0)
    waves = {f"c{i}": 0.1 * torch.randn(n, generator=generator) for i, n in enumerate((4000, 6400, 5000))}
    corpus = types.SimpleNamespace(folds=[types.SimpleNamespace(test=list(waves))], waves=waves)
    out = measure.attack_batching(backbone, head, corpus, 3, [2, 3], repeats=2, snrs=(45.0,))
    assert out["clips"] == 3 and out["attacked"] == 3 and out["results_equal"] is True
    assert set(out["seconds"]) == {"1", "2", "3"} and all(len(t) == 2 for t in out["seconds"].values())
    assert out["speedup"]["3"] == pytest.approx(min(out["seconds"]["1"]) / min(out["seconds"]["3"]))


def test_copy_bandwidth_is_a_positive_finite_rate():
    from trustser.bandwidth import measure_copy_bandwidth

    gbps = measure_copy_bandwidth(16 * 2**20, repeats=2)
    assert positive_finite(gbps) and gbps < 1e5  # GB/s: far below any memory's rate would be 1e5
    with pytest.raises(ValueError):
        measure_copy_bandwidth(1024, repeats=0)


def test_head_step_bytes_counts_every_layer_frame_and_hidden_unit_once():
    import numpy as np
    import torch

    from trustser.bandwidth import head_step_bytes

    batch = [torch.zeros(7, 10, 512), torch.zeros(7, 3, 512), torch.zeros(7, 1, 512)]
    assert head_step_bytes(batch) == 7 * (10 + 3 + 1) * 512 * 4 == 200704  # fp32, as in_float32() holds them
    assert head_step_bytes([c.half() for c in batch]) == 100352  # each tensor's own dtype by default
    assert head_step_bytes(batch, torch.float16) == head_step_bytes(batch, np.float16) == 100352
    assert head_step_bytes([(13, 149, 768)], torch.float32) == 13 * 149 * 768 * 4
    assert head_step_bytes([]) == 0
    with pytest.raises(ValueError):
        head_step_bytes([torch.zeros(10, 512)])


def test_head_step_reports_its_feature_read_rate(bench, measure):
    import torch

    generator = torch.Generator().manual_seed(0)
    store = {f"c{i}": torch.randn(3, 5 + i, 16, generator=generator) for i in range(4)}
    labels = {c: i % 4 for i, c in enumerate(store)}
    step = measure.head_step(store, labels, list(store), repeats=1)
    assert step["feature_bytes"] == 3 * (5 + 6 + 7 + 8) * 16 * 4 and step["feature_dtype"] == "float32"
    assert step["read_gbps"] == pytest.approx(step["feature_bytes"] / step["package_step_s"] / 1e9)
    copy = measure.memory_copy(4, 1, 1)
    assert copy["read_gbps"] == copy["copy_gbps"] / 2 and copy["threads"] == 1
    assert bench.with_bandwidth(step, copy)["bandwidth_fraction"] == pytest.approx(
        step["read_gbps"] / copy["read_gbps"]
    )


@pytest.mark.filterwarnings("ignore:backbone .* RANDOM weights")
def test_batched_and_bf16_precast_paths_give_the_package_features(measure):
    """What the bench times as alternatives computes the same features: batching by length changes nothing beyond
    float rounding, and bf16-stored weights are bit-identical to bf16 autocast."""
    import torch

    from trustser.backbones.loading import load_backbone
    from trustser.features import bf16_weights_twin, compute_hidden

    backbone, _ = load_backbone("whisper_tiny", random_init=True)
    generator = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=generator) for n in (8000, 12000, 16000)]
    for batched, wave in zip(measure.batched_hidden(backbone, waves), waves):
        assert torch.allclose(batched, compute_hidden(backbone, wave), atol=1e-4)
    twin = bf16_weights_twin(backbone)
    assert torch.equal(compute_hidden(twin, waves[0], "bf16"), compute_hidden(backbone, waves[0], "bf16"))
    same = {"a": compute_hidden(backbone, waves[0]).half()}
    assert measure.feature_difference(same, same)["max_relative_l2"] == 0


def _fake_results():
    """A structurally complete result with arbitrary numbers, for the formatter only."""
    row = {"processes": 1, "threads": 1, "batch_size": 1, "seconds": 1.0, "gflops_per_s": 1.0, "peak_fraction": 0.5}
    stages = {"extract": 1.0, "train": 1.0, "probes": 1.0, "attacks": 1.0, "flops": 1.0, "other": 1.0}
    estimate = {
        "clips": 10,
        "mean_s": 1.0,
        "folds": 5,
        "stages_s": stages,
        "total_h": 1.0,
        "feature_store_gb_fp16": 1.0,
        "fp32_copy": True,
        "peak_rss_gb_est": 1.0,
    }
    return {
        "settings": {"mode": "tiny", "backbone": "whisper_tiny"},
        "machine": {"cpu": "cpu", "usable_cores": 2, "versions": {"torch": "x"}},
        "threads_used": 1,
        "load_average": {"start": [0, 0, 0], "end": [0, 0, 0]},
        "bench_wall_s": 1.0,
        "matmul": {"repeats": 1, "fp32": {"1": 1.0}, "bf16": {"1": 2.0}, "fp32_peak_gflops": 1.0},
        "cache_vs_recompute": {
            "whisper_tiny": {
                "cached_train_s": 1.0,
                "naive_train_s_scaled": 2.0,
                "naive_epochs_timed": 1,
                "speedup_warm": 2.0,
                "speedup_incl_cold_extraction": 1.0,
                "cold_extract_s": 1.0,
            }
        },
        "whisper_padding": {
            "true_positions": 300,
            "padded_positions": 1500,
            "true_gflops": 1.0,
            "padded_gflops": 7.0,
            "flops_ratio": 7.0,
            "encoder_flops_ratio": 7.0,
            "true_encoder_s": 0.1,
            "padded_encoder_s": 0.7,
            "encoder_time_ratio": 7.0,
            "full_time_ratio": 6.0,
        },
        "extraction": {
            "backbone": "whisper_tiny",
            "clips": 4,
            "fp32_cold_s": 1.0,
            "fp32_gflops_per_s": 1.0,
            "peak_fraction": 0.5,
            "warm_read_s": 0.1,
        },
        "extraction_study": {"clips": 4, "rows": [row]},
        "bf16": {
            "fp32_cold_s": 1.0,
            "bf16_cold_s": 0.5,
            "speedup": 2.0,
            "compute_only": {"speedup_autocast": 2.0, "speedup_precast": 2.5},
            "feature_difference": {"max_relative_l2": 0.01, "median_relative_l2": 0.005},
            "folds": ["fold1"],
            "uar_fp32": [0.5],
            "uar_bf16": [0.5],
            "uar_delta_mean": 0.0,
            "uar_delta_max_abs_fold": 0.0,
        },
        "attack": {
            "clips": 2,
            "forward_s_per_clip": 0.01,
            "fgsm_sweep_vs_forward": 5.0,
            "fgsm_45db_vs_forward": 3.0,
            "gaussian_sweep_vs_forward": 4.0,
        },
        "attack_batching": {
            "clips": 16,
            "snrs": [30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0],
            "repeats": 2,
            "per_clip_s": 8.0,
            "speedup": {"8": 1.5},
            "results_equal": True,
            "default_batch_size": 8,
        },
        "sweep": {
            "backbone": "whisper_tiny",
            "folds": 1,
            "extract_cache": "cold",
            "wall_s": 1.0,
            "stages_s": stages,
            "peak_rss_bytes": 2**30,
        },
        "head_step": {
            "clips": 64,
            "package_step_s": 0.02,
            "concat_first_step_s": 0.04,
            "speedup": 2.0,
            "logits_max_abs_diff": 0.0,
            "feature_dtype": "float32",
            "feature_bytes": 8_000_000,
            "read_gbps": 0.4,
            "bandwidth_fraction": 0.08,
        },
        "memory_copy": {"bytes": 2**28, "repeats": 5, "threads": 2, "copy_gbps": 10.0, "read_gbps": 5.0},
        "extrapolation": {"corpora": {"iemocap": estimate}},
        "full_benchmark_estimate": {
            "hours": {"cpu": 3.0},
            "devices": {
                "cpu": {
                    "total_h": 3.0,
                    "by_stage_h": {"extract": 1.0, "train": 2.0},
                    "by_backbone_h": {"whisper_tiny": 1.0, "apc": 2.0},
                }
            },
            "assumptions": {
                "backbones": {"whisper_tiny": {}, "apc": {}},
                "corpora": {"iemocap": {}},
                "total_clips": 100,
                "measured_backbones": ["whisper_tiny"],
            },
        },
        "targets": {"cache_speedup >= 20": True},
    }


def test_bf16_is_skipped_with_its_reason_on_a_cpu_without_bf16_kernels(bench):
    """On a CPU without bf16 kernels torch emulates bf16 (a 2048^2 matmul takes minutes): --quick would not be
    quick, and would time the emulation. `auto` skips section 4 and says why; `on` forces it; `off` skips it."""
    assert "no oneDNN bf16 kernels" in bench.bf16_skip_reason("auto", False)
    assert bench.bf16_skip_reason("auto", True) is None and bench.bf16_skip_reason("auto", None) is None
    assert bench.bf16_skip_reason("on", False) is None and bench.bf16_skip_reason("off", True) == "--bf16 off"
    r = _fake_results()
    r["bf16"] = {"skipped": "no kernels", "folds": ["fold1"], "uar_fp32": [0.5]}
    r["matmul"]["bf16"], r["matmul"]["bf16_peak_gflops"] = {}, None
    r["memory_copy"]["convention"] = "read + write"
    r["extraction"]["compute_only_best_peak_fraction"] = 0.6
    table = bench.format_table(r)
    assert "4. bf16 autocast vs fp32 extraction: skipped (no kernels)" in table and "bf16 skipped" in table
    flat = bench.headline(r)
    assert flat["bf16_speedup"] is None and flat["matmul_gflops_bf16"] is None
    assert flat["targets"]["bf16_speedup >= 1.5"] is None  # not measured, neither met nor failed

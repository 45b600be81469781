"""scripts/bench_full_estimate.py: the whole-grid estimate is the stated arithmetic on the measured unit costs.

Hand-made unit costs and grids, no bench run: a hand-computed total, proportionality in what the estimate says it is
proportional to, and no device figure that was not measured.
"""

from __future__ import annotations

import importlib
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def est():
    sys.path.insert(0, str(SCRIPTS))  # the scripts import their helper modules from their own directory
    try:
        yield importlib.import_module("bench_full_estimate")
    finally:
        while str(SCRIPTS) in sys.path:
            sys.path.remove(str(SCRIPTS))


def _costs(est, backbone: str = "m"):
    return est.UnitCosts(
        backbone=backbone,
        extract_backbone=backbone,
        extract_s_per_audio_s=0.1,
        train_s_per_frame_epoch=1e-4,
        probe_s_per_frame_epoch=2e-4,
        attack_s_per_test_audio_s=0.5,
        other_s_per_clip_fold=0.01,
        per_run_s=5.0,
    )


def _assumptions(est, clips: int = 100, backbones=None):
    corpus = est.CorpusGrid(clips=clips, mean_s=2.0, folds=2, train=0.5, val=0.25, test=0.5)
    measured = {"m": est.BackboneScale(gflops_6s=10.0, frames_per_s=50.0, head_macs_per_frame=1000.0)}
    return est.Assumptions(
        {"c": corpus},
        backbones or measured,
        measured,
        head_epochs=3,
        probe_epochs=2,
        speaker_probe_share=0.8,
        scale_source="hand-made",
    )


def test_a_hand_computed_cell(est):
    # 100 clips x 2 s = 200 s of audio, 10,000 frames at 50 per s, 2 folds
    cells = est.estimate({"cpu": _costs(est)}, _assumptions(est))["devices"]["cpu"]["cells_s"]["m"]["c"]
    assert cells == pytest.approx(
        {
            "extract": 200 * 0.1,  # once per corpus, per second of audio
            "train": 2 * 3 * 0.75 * 10_000 * 1e-4,  # folds x epochs x (train + val) frames x rate
            "probes": 2 * 2 * (0.75 + 0.8 * 0.5) * 10_000 * 2e-4,  # gender on train + val, speaker on 80 % of train
            "attacks": 2 * 0.5 * 200 * 0.5,  # every test clip once (folds x test share) x rate
            "other": 2 * 100 * 0.01,
            "per_run": 5.0,
        }
    )
    total = est.estimate({"cpu": _costs(est)}, _assumptions(est))
    assert total["hours"] == {"cpu": pytest.approx((20 + 4.5 + 9.2 + 100 + 2 + 5) / 3600)}


def test_a_scaled_backbone_costs_its_flops_and_head_ratio(est):
    """Twice the backbone FLOPs doubles extraction and attacks; twice the frames and twice the head's work per
    frame make head training and probes 4x; the per-clip and per-run stages do not scale."""
    big = est.BackboneScale(gflops_6s=20.0, frames_per_s=100.0, head_macs_per_frame=2000.0)
    grid = {**_assumptions(est).measured, "big": big}
    out = est.estimate({"cpu": _costs(est)}, _assumptions(est, backbones=grid))["devices"]["cpu"]
    m, b = out["cells_s"]["m"]["c"], out["cells_s"]["big"]["c"]
    assert b["extract"] == pytest.approx(2 * m["extract"]) and b["attacks"] == pytest.approx(2 * m["attacks"])
    assert b["train"] == pytest.approx(4 * m["train"]) and b["probes"] == pytest.approx(4 * m["probes"])
    assert (b["other"], b["per_run"]) == (m["other"], m["per_run"])
    assert out["total_h"] == pytest.approx((140.7 + 301.8) / 3600)
    assert out["by_backbone_h"] == pytest.approx({"m": 140.7 / 3600, "big": 301.8 / 3600})
    assert sum(out["by_stage_h"].values()) == pytest.approx(out["total_h"])
    assert sum(out["by_corpus_h"].values()) == pytest.approx(out["total_h"])


def test_doubling_the_clips_doubles_every_per_clip_stage(est):
    one = est.estimate({"cpu": _costs(est)}, _assumptions(est, clips=100))["devices"]["cpu"]["by_stage_h"]
    two = est.estimate({"cpu": _costs(est)}, _assumptions(est, clips=200))["devices"]["cpu"]["by_stage_h"]
    for stage in ("extract", "train", "probes", "attacks", "other"):
        assert two[stage] == pytest.approx(2 * one[stage]), stage
    assert two["per_run"] == one["per_run"]


def test_every_measured_device_gets_a_figure_and_no_other(est):
    slow = replace(_costs(est), extract_s_per_audio_s=0.2)
    out = est.estimate({"cpu": _costs(est), "cuda": slow}, _assumptions(est))
    assert set(out["hours"]) == {"cpu", "cuda"} and out["hours"]["cuda"] > out["hours"]["cpu"]
    assert set(est.estimate({"cpu": _costs(est)}, _assumptions(est))["hours"]) == {"cpu"}
    assert out["assumptions"]["devices_measured"] == ["cpu", "cuda"]


def test_unit_costs_are_stage_time_over_the_work_the_stage_did(est):
    results = {
        "extraction": {"backbone": "whisper_base", "fp32_cold_s": 4.0, "audio_s": 8.0},
        "sweep": {
            "backbone": "whisper_base",
            "clips": 10,
            "folds": 2,
            "stages_s": {
                "extract": 1.0,
                "train": 6.0,
                "probes": 9.0,
                "attacks": 12.0,
                "flops": 2.0,
                "load_backbone": 1.0,
                "mlflow_setup": 0.5,
                "other": 4.0,
            },
            "work": {"train_frame_epochs": 3000, "probe_frame_epochs": 900, "test_audio_s": 24.0},
        },
    }
    costs = est.unit_costs(results)
    assert costs == est.UnitCosts("whisper_base", "whisper_base", 0.5, 6 / 3000, 9 / 900, 0.5, 4 / 20, 3.5)


def test_the_estimate_of_a_bench_result_names_its_assumptions_and_measures_no_gpu(est):
    results = {
        "extraction": {"backbone": "whisper_tiny", "fp32_cold_s": 4.0, "audio_s": 8.0},
        "sweep": {
            "backbone": "whisper_tiny",
            "clips": 10,
            "folds": 1,
            "stages_s": {"train": 6.0, "probes": 9.0, "attacks": 12.0, "flops": 2.0, "other": 4.0},
            "work": {"train_frame_epochs": 3000, "probe_frame_epochs": 900, "test_audio_s": 24.0},
        },
    }
    out = est.full_estimate(results, source="paper", cuda_available=True)
    assert set(out["hours"]) == {"cpu"} and math.isfinite(out["hours"]["cpu"]) and out["hours"]["cpu"] > 0
    a = out["assumptions"]
    assert "not measured" in a["cuda"] and "Table 4" in a["scale_source"]
    assert set(a["backbones"]) == set(est.BACKBONES) and a["measured_backbones"] == ["whisper_tiny"]
    assert a["backbones"]["whisper_tiny"]["how"] == "measured" and a["backbones"]["whisper_small"]["how"] == "scaled"
    assert a["total_clips"] == 10039 + 7442 + 8438 + 37924
    assert {"excluded", "recipe", "scaling", "units", "mean_clip_s", "clip_counts_source"} <= set(a)
    # the measured backbone's own cells are its unit costs unscaled: extraction = its audio x its measured rate
    iemocap = est.CORPORA["iemocap"]
    cell = out["devices"]["cpu"]["cells_s"]["whisper_tiny"]["iemocap"]
    assert cell["extract"] == pytest.approx(iemocap.clips * iemocap.mean_s * 0.5)


def test_scale_factors_follow_the_registry(est):
    scales, source = est.backbone_scales(est.BACKBONES, source="paper")
    assert "Table 4" in source
    base, wav2vec2, apc = scales["whisper_base"], scales["wav2vec2_base"], scales["apc"]
    assert (base.gflops_6s, wav2vec2.gflops_6s) == (6.0, 41.7)
    assert base.head_macs_per_frame == 7 * 512 + 512 * 128 + 128 * 128  # 6 layers + input, 512 wide
    assert apc.head_macs_per_frame == 3 * 512 + 512 * 128 + 128 * 128  # APC exposes no input-layer state
    assert (base.frames_per_s, wav2vec2.frames_per_s, apc.frames_per_s) == (50.0, 50.0, 100.0)


def test_corpus_lengths_and_shares_are_the_sweep_extrapolation_s(est):
    """One set of assumed mean lengths and partition shares: bench_sweep's per-corpus extrapolation and this."""
    sweep = importlib.import_module("bench_sweep")
    for name, grid in est.CORPORA.items():
        c = sweep.CORPORA[name]
        assert (grid.mean_s, grid.folds, grid.train, grid.val, grid.test) == (
            c["mean_s"],
            c["folds"],
            c["train"],
            c["val"],
            c["test"],
        ), name


def test_the_head_cost_per_frame_is_calflops_head_count(est):
    """The per-frame head formula the probes and training are scaled by agrees with the complete count's head."""
    from trustser.metrics.sustainability import count_flops

    report = count_flops("whisper_tiny", 6.0)
    scale = est.backbone_scales(["whisper_tiny"], source="paper")[0]["whisper_tiny"]
    assert report.frames == 6.0 * scale.frames_per_s
    # FLOPs / 2: calflops' MAC figure leaves the layer-weighted sum out (an element-wise product and a sum)
    assert scale.head_macs_per_frame == pytest.approx(report.head_flops / 2 / report.frames, rel=0.01)

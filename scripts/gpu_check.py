"""Device check: does trustser on CUDA compute what it computes on the CPU?

Usage (on a machine with a GPU; about 5-10 minutes on one H100):

    python scripts/gpu_check.py --out gpu_check.json            # features of every backbone + one EmoDB fold
    python scripts/gpu_check.py --quick --out gpu_check.json    # features only, fewer clips

1. Features: for each backbone (the packaged real Whisper weights; the others with random weights, which exercise
   the same code), the same EmoDB clips through ``features.compute_hidden`` on the CPU and on CUDA, fp32. Reported:
   the largest absolute difference and that difference relative to the largest CPU value, per backbone. The cache is
   keyed per clip, not per device, so GPU-filled entries serve CPU runs: the tolerance (``FEATURE_TOLERANCE``,
   relative) is what that promise means. cuDNN convolutions may use TF32 on Ampere and later (PyTorch's default),
   which is the main source of difference; the figure says how large it is.
2. One fold: ``run_experiment`` on EmoDB fold 1 with real Whisper tiny.en, ``--device cpu`` and ``--device cuda``
   (and, unless ``--no-bf16``, CUDA with bf16 extraction), each with its own feature cache; per metric the CPU and
   CUDA values and their difference. Training on different devices is not bit-identical (different kernels), so
   the fold's metrics are compared with their bootstrap intervals, not for equality.
3. Timings: wall seconds of each fold run, per device.

Without CUDA it says so and exits 0 (``{"cuda": false}``): the test suite runs it that way on CPU-only machines.
Its output on a GPU machine is summarised in docs/benchmarks.md ("Device check").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock
from typing import Any, Sequence

FEATURE_TOLERANCE = 1e-2  # relative: max |cpu - cuda| / max |cpu|, fp32 (TF32 convolutions included)
BACKBONES = (
    "whisper_tiny_en",
    "whisper_base",
    "whisper_tiny",
    "wav2vec2_base",
    "wavlm_base_plus",
    "hubert_base",
    "apc",
    "tera",
)
PACKAGED = {"whisper_tiny_en", "whisper_base"}  # real weights ship as packages; the rest run with random weights
FOLD_METRICS = (
    "test_uar",
    "test_ece",
    "privacy_gender_accuracy",
    "safety_fgsm_asr",
    "fairness_equality_of_odds",
    "reference_linear_uar",
)


def feature_check(names: Sequence[str], n_clips: int) -> dict[str, Any]:
    """Per backbone: CPU vs CUDA hidden states of ``n_clips`` EmoDB clips."""
    import torch

    from trustser.audio import load_audio
    from trustser.backbones.loading import load_backbone
    from trustser.corpora import load_corpus
    from trustser.features import compute_hidden

    index = load_corpus("emodb")
    clips = sorted(index.clips)[:n_clips]
    out: dict[str, Any] = {}
    for name in names:
        try:
            backbone, source = load_backbone(name, random_init=name not in PACKAGED, seed=0)
        except Exception as exc:  # a backbone whose package is missing here: reported, not fatal
            out[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        backbone.eval()
        worst_abs, worst_rel, seconds = 0.0, 0.0, {"cpu": 0.0, "cuda": 0.0}
        waves = [torch.from_numpy(load_audio(index.clips[c].path)) for c in clips]
        cpu = []
        t0 = time.perf_counter()
        for wave in waves:
            cpu.append(compute_hidden(backbone, wave))
        seconds["cpu"] = time.perf_counter() - t0
        backbone.to("cuda")
        compute_hidden(backbone, waves[0])  # warm-up: kernels chosen, memory allocated
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for wave, reference in zip(waves, cpu):
            hidden = compute_hidden(backbone, wave)
            if hidden.shape != reference.shape:
                raise AssertionError(f"{name}: CUDA shape {tuple(hidden.shape)} != CPU {tuple(reference.shape)}")
            diff = float((hidden - reference).abs().max())
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(float(reference.abs().max()), 1e-12))
        seconds["cuda"] = time.perf_counter() - t0
        out[name] = {
            "weights": "random" if source.is_random else "pretrained",
            "clips": len(clips),
            "max_abs_diff": worst_abs,
            "max_rel_diff": worst_rel,
            "within_tolerance": worst_rel <= FEATURE_TOLERANCE,
            "seconds": seconds,
            "clips_per_s": {k: len(clips) / v for k, v in seconds.items() if v > 0},
        }
        del backbone
        torch.cuda.empty_cache()
    return out


def fold_check(precisions: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """EmoDB fold 1, real Whisper tiny.en, once per (device, precision), each with a fresh cache and store."""
    from trustser.experiment import run_experiment
    from trustser.run_config import RunConfig, TrustConfig

    runs: dict[str, Any] = {}
    for device, precision in precisions:
        # the run's store is a throwaway: trustser.tracking reads MLFLOW_TRACKING_URI (else ./mlflow.db)
        with (
            tempfile.TemporaryDirectory(prefix="trustser-gpu-check-") as tmp,
            mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}),
        ):
            config = RunConfig(
                backbone="whisper_tiny_en",
                folds="1",
                device=device,
                precision=precision,
                cache_dir=f"{tmp}/cache",
                progress=False,
                log_model=False,
                trust=TrustConfig(max_attack_clips=32, sweep_snrs=(45.0,), measure_cost=False),
            )
            t0 = time.perf_counter()
            result = run_experiment(config)
            wall = time.perf_counter() - t0
        fold = result.folds[0].metrics
        runs[f"{device}/{precision}"] = {
            "wall_s": wall,
            "metrics": {k: fold.get(k) for k in FOLD_METRICS},
            "intervals": {k: (fold.get(f"{k}_ci_low"), fold.get(f"{k}_ci_high")) for k in FOLD_METRICS},
        }
    cpu = runs.get("cpu/fp32", {}).get("metrics", {})
    for name, run in runs.items():
        run["difference_from_cpu"] = {
            k: (v - cpu[k]) if v is not None and cpu.get(k) is not None else None for k, v in run["metrics"].items()
        }
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON here as well as printing it")
    parser.add_argument("--quick", action="store_true", help="features only, 8 clips per backbone")
    parser.add_argument("--clips", type=int, default=24, help="clips per backbone in the feature check")
    parser.add_argument("--no-bf16", action="store_true", help="skip the CUDA bf16-extraction fold run")
    args = parser.parse_args(argv)

    import torch

    report: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if not report["cuda"]:
        report["message"] = "no CUDA device: nothing to compare (run this on a machine with a GPU)"
    else:
        report["device_name"] = torch.cuda.get_device_name(0)
        report["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        report["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        report["feature_tolerance_rel"] = FEATURE_TOLERANCE
        report["features"] = feature_check(BACKBONES, 8 if args.quick else args.clips)
        if not args.quick:
            runs = [("cpu", "fp32"), ("cuda", "fp32")] + ([] if args.no_bf16 else [("cuda", "bf16")])
            report["fold"] = fold_check(runs)
        checked = [v for v in report["features"].values() if "within_tolerance" in v]
        report["features_ok"] = bool(checked) and all(v["within_tolerance"] for v in checked)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if not report["cuda"] or report["features_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks of trustser's compute path on this machine (issue #8): where the time goes, and what each choice saves.

    python scripts/bench.py                 # default: real Whisper Base on EmoDB, ~15-20 min on 2 cores; a table
    python scripts/bench.py --quick --json  # <= 5 min; ONE JSON object on stdout
    python scripts/bench.py --output bench.json   # also keep the JSON (default: a file in the temp directory)

What it measures, each in the same process and run (so ratios compare like with like):

1. cache vs recompute: 30 epochs of head training over one EmoDB fold from cached features against the naive way
   (the frozen backbone run on every training and validation clip in every epoch, as the reference code does);
   the naive path is timed for a few epochs and scaled linearly to 30 (stated in the output).
   Beside it, one head training step (the hot path of head training and the privacy probes; printed under 6):
   its feature read rate (cached feature bytes of the step, each once / step time) against the memory copy
   bandwidth measured in the same run with the same threads (a 256 MiB torch copy), read rate against read rate:
   how far the step is from the memory limit (conventions: ``bench_measure.COPY_CONVENTION``, also in the JSON).
2. Whisper on the true length (6 s -> 300 encoder positions) against a 30 s zero-padded window (1500): time and FLOPs.
3. extraction efficiency: achieved FLOP/s of backbone extraction (calflops' complete count, fitted as a quadratic in
   clip length and summed over the clips) as a fraction of the measured dense fp32 matmul FLOP/s; 1 vs 2 threads,
   2 processes x 1 thread, and length-sorted batches are measured and the fastest in-process setting is used.
4. bf16: matmul GFLOP/s, extraction under bf16 autocast against fp32 (speed, feature difference, test UAR).
5. attack cost: FGSM safety evaluation per clip relative to one forward pass; FGSM one clip at a time against
   length-sorted padded batches on the same clips, interleaved (``attack_batch_speedup``: at the package's default
   attack batch size).
6. the whole sweep (``run_experiment``, one backbone x EmoDB x folds x all metrics) split by stage, with peak memory,
   extrapolated to the method's four corpora; and from its per-unit costs (with section 3's extraction rate) the
   method's whole grid, 7 backbones x 4 corpora x folds x all metrics, in hours per measured device
   (``full_benchmark_estimate_hours``; arithmetic and assumptions in ``bench_full_estimate``).

Cold/warm: features are extracted into a fresh temporary cache (cold); the sweep runs in a subprocess with a fresh
cache root too (converted Whisper weights linked in: converting them is an install step, not part of a sweep).
FLOP counts used for efficiency figures come from ``count_flops`` (cached on disk; counting is not timed there).
Nothing is written to the repository; the sweep's MLflow store is a temporary sqlite file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this script

from bench_measure import (  # noqa: E402
    attack_batching,
    attack_cost,
    cache_vs_recompute,
    cold_extract,
    extraction_study,
    feature_difference,
    fit_flops,
    head_step,
    load_average,
    load_emodb,
    machine_info,
    measure_matmul,
    memory_copy,
    study_ids,
    test_uars,
    time_compute,
    whisper_padding,
)
from bench_full_estimate import full_estimate  # noqa: E402
from bench_sweep import extrapolate, run_sweep  # noqa: E402


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration; ``--quick`` and ``--tiny`` are presets of it (see PRESETS)."""

    mode: str = "default"
    backbone: str = "whisper_base"  # the backbone of sections 2-6
    random_init: bool = False
    compare_backbones: tuple[str, ...] = ("whisper_base", "wav2vec2_base")  # section 1 (others random-init)
    epochs: int = 30
    naive_epochs: int = 2  # naive recompute timed for this many epochs, scaled to `epochs`
    naive_epochs_large: int = 1  # for backbones other than `backbone` (wav2vec2: ~0.4 s a clip)
    uar_folds: int = 5  # bf16 vs fp32 test UAR over this many folds
    precision_rounds: int = 2  # cold fp32 / bf16 extraction passes, alternated; the best of each is compared
    compare_stride: int = 2  # backbones other than `backbone`: every n-th fold-1 train/val clip (both paths)
    seed_reference: bool = True  # also train fp32 with another seed: the UAR noise a precision change must beat
    study_clips: int = 48  # clips of the thread / batching study
    study_repeats: int = 2
    batch_sizes: tuple[int, ...] = (1, 8)
    processes: bool = True  # measure 2 processes x 1 thread
    attack_clips: int = 16
    attack_batch_clips: int = 32  # FGSM per clip vs in batches, on the same clips
    attack_batch_sizes: tuple[int, ...] = (2, 4, 8)  # the package default (AttackSettings) is always added
    attack_batch_repeats: int = 3
    matmul_n: int = 2048
    matmul_repeats: int = 5
    copy_mib: int = 256  # memory copy bandwidth: buffer size (far beyond the caches) and repeats, best taken
    copy_repeats: int = 5
    pad_repeats: int = 3
    flops_seconds: tuple[float, ...] = (2.0, 4.0, 6.0)  # quadratic fit of FLOPs per clip; checked at 3 s
    sweep_backbone: str = "whisper_base"
    sweep_folds: str = "all"
    sweep_cold: bool = True  # False: the sweep reuses this run's feature cache (its extract stage is then warm)
    sweep_overrides: Mapping[str, Any] = field(default_factory=dict)  # RunConfig / TrainConfig / TrustConfig fields
    clip_limit: int | None = None  # tiny: this many clips per partition of each used fold
    estimate_flops: str = "count"  # full-grid scale factors: "count" (count_flops, cached) or "paper" (Table 4)
    data_root: str | None = None
    # section 4 and the bf16 matmul: "auto" runs them where oneDNN has bf16 kernels (AVX512-BF16 / AMX); elsewhere
    # torch emulates bf16 and a 2048^2 matmul alone takes minutes, so "auto" skips them and says so; "on" forces them
    bf16: str = "auto"


PRESETS: dict[str, Settings] = {
    "default": Settings(),
    "quick": Settings(
        mode="quick",
        compare_backbones=("whisper_base",),
        naive_epochs=1,
        uar_folds=1,
        precision_rounds=1,
        study_clips=24,
        study_repeats=1,
        processes=False,
        attack_clips=6,
        attack_batch_clips=16,
        attack_batch_sizes=(),
        attack_batch_repeats=2,
        matmul_repeats=3,
        pad_repeats=2,
        sweep_folds="1",
        sweep_cold=False,
        sweep_overrides={"max_attack_clips": 16},
    ),
    # for tests: random-init Whisper Tiny, a handful of clips, a sweep that trains one epoch
    "tiny": Settings(
        mode="tiny",
        backbone="whisper_tiny",
        random_init=True,
        compare_backbones=("whisper_tiny",),
        epochs=2,
        naive_epochs=1,
        uar_folds=1,
        precision_rounds=1,
        seed_reference=False,
        compare_stride=1,
        study_clips=4,
        study_repeats=1,
        batch_sizes=(1, 2),
        processes=False,
        attack_clips=2,
        attack_batch_clips=2,
        attack_batch_sizes=(2,),
        attack_batch_repeats=1,
        matmul_n=256,
        matmul_repeats=2,
        copy_mib=64,
        copy_repeats=2,
        pad_repeats=1,
        sweep_backbone="whisper_tiny",
        sweep_folds="1",
        sweep_cold=True,
        sweep_overrides={
            "random_init": True,
            "epochs": 1,
            "max_attack_clips": 2,
            "probe_epochs": 1,
            "schedule": "paper",
            "measure_cost": False,
            "sweep_snrs": [45.0],
        },
        clip_limit=2,
        estimate_flops="paper",
        bf16="on",  # tiny sizes: section 4's code runs on any CPU, emulated or not
    ),
}


# -------------------------------------------------------------------------------------------------- the bench
def bf16_section(
    settings: Settings,
    corpus: Any,
    backbone: Any,
    source: Any,
    cache: Path,
    work_dir: Path,
    all_ids: list[str],
    fp32_s: float,
    fp32_store: Any,
    gflop_all: float,
    mm: Mapping[str, Any],
    fp32_train: Any,
    uar_fp32: list[float],
) -> dict[str, Any]:
    """Section 4: cold extraction under bf16 autocast against fp32 (speed, feature difference, test UAR)."""
    log(f"bf16 extraction ({len(all_ids)} clips) and UAR over {settings.uar_folds} fold(s)")
    bf16_store, bf16_s = cold_extract(corpus, backbone, source, cache, all_ids, precision="bf16")
    rounds = {"fp32": [fp32_s], "bf16": [bf16_s]}
    for k in range(1, settings.precision_rounds):  # alternate further cold passes: single passes vary by ~10 %
        for precision in ("fp32", "bf16"):
            rounds[precision].append(
                cold_extract(corpus, backbone, source, work_dir / f"round{k}", all_ids, precision)[1]
            )
    fp32_best, bf16_best = min(rounds["fp32"]), min(rounds["bf16"])
    subset = study_ids(all_ids, settings.study_clips)
    study_waves = [corpus.waves[i] for i in subset]
    compute_fp32 = time_compute(backbone, study_waves, 1, "fp32", settings.study_repeats)
    compute_bf16 = time_compute(backbone, study_waves, 1, "bf16", settings.study_repeats)
    from trustser.features import bf16_weights_twin, compute_hidden

    twin = bf16_weights_twin(backbone)  # what the package's bf16 extraction runs
    compute_bf16_precast = time_compute(twin, study_waves, 1, "bf16", settings.study_repeats)
    precast_diff = max(
        float((compute_hidden(backbone, w, "bf16") - compute_hidden(twin, w, "bf16")).abs().max())
        for w in study_waves[:4]
    )
    del twin
    folds = corpus.folds[: settings.uar_folds]
    uar_bf16, _ = test_uars(bf16_store.in_float32(), corpus, folds, settings.epochs)
    bf16 = {
        "clips": len(all_ids),
        "rounds": rounds,
        "fp32_cold_s": fp32_best,
        "bf16_cold_s": bf16_best,
        "speedup": fp32_best / bf16_best,
        "compute_only": {
            "clips": len(subset),
            "fp32_s": compute_fp32,
            "bf16_autocast_s": compute_bf16,
            "bf16_precast_weights_s": compute_bf16_precast,
            "speedup_autocast": compute_fp32 / compute_bf16,
            "speedup_precast": compute_fp32 / compute_bf16_precast,
            "precast_vs_autocast_max_abs_diff": precast_diff,
        },
        "bf16_gflops_per_s": gflop_all / bf16_best,
        "bf16_peak_fraction": gflop_all / bf16_best / mm["bf16_peak_gflops"],
        "feature_difference": feature_difference(fp32_store, bf16_store),
        "folds": [f.name for f in folds],
        "epochs": settings.epochs,
        "uar_fp32": uar_fp32,
        "uar_bf16": uar_bf16,
        "uar_delta_mean": float(np.mean(uar_bf16) - np.mean(uar_fp32)),
        "uar_delta_max_abs_fold": float(np.max(np.abs(np.subtract(uar_bf16, uar_fp32)))),
    }
    if settings.seed_reference:
        uar_seed1, _ = test_uars(fp32_train, corpus, folds, settings.epochs, seed=1)
        bf16["uar_fp32_seed1"] = uar_seed1
        bf16["seed_delta_mean"] = float(np.mean(uar_seed1) - np.mean(uar_fp32))
        bf16["seed_delta_max_abs_fold"] = float(np.max(np.abs(np.subtract(uar_seed1, uar_fp32))))
    return bf16


def bf16_skip_reason(setting: str, kernels: bool | None) -> str | None:
    """Why the bf16 measurements are skipped (``Settings.bf16``), or None to run them."""
    if setting == "off":
        return "--bf16 off"
    if setting == "auto" and kernels is False:
        return (
            "this CPU has no oneDNN bf16 kernels (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False): bf16 would "
            "be emulated, minutes per matmul, and measure the emulation; --bf16 on forces it"
        )
    return None


def run_bench(settings: Settings, work_dir: Path) -> dict[str, Any]:
    import warnings

    from trustser.backbones.loading import load_backbone
    from trustser.features import TRAINING_FP32_BUDGET

    started = time.perf_counter()
    results: dict[str, Any] = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}
    }
    loads: dict[str, list[float]] = {"start": load_average()}
    results["machine"] = machine_info()
    cores = results["machine"]["usable_cores"]
    thread_options = sorted({1, max(1, min(cores, 2))}) if cores > 1 else [1]
    log(f"load average {loads['start']}; threads measured: {thread_options}")

    bf16_skip = bf16_skip_reason(settings.bf16, results["machine"]["mkldnn_bf16_supported"])
    if bf16_skip:
        log(f"bf16 skipped: {bf16_skip}")
    log("matmul")
    results["matmul"] = mm = measure_matmul(
        settings.matmul_n, settings.matmul_repeats, thread_options, bf16=not bf16_skip
    )
    peak = mm["fp32_peak_gflops"]
    loads["after_matmul"] = load_average()

    log("corpus and backbone")
    corpus = load_emodb(settings.data_root, settings.clip_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone, source = load_backbone(settings.backbone, random_init=settings.random_init)
    log(f"fit FLOPs of {settings.backbone}")
    flops = fit_flops(settings.backbone, settings.flops_seconds)
    results["flops_model"] = asdict(flops)

    log("extraction study (threads, processes, batching)")
    results["extraction_study"] = study = extraction_study(
        backbone,
        corpus,
        flops,
        peak,
        thread_options,
        settings.study_clips,
        settings.study_repeats,
        settings.batch_sizes,
        settings.processes,
        settings.random_init,
    )
    chosen = study["best_per_clip"]["threads"]
    torch.set_num_threads(chosen)
    results["threads_used"] = chosen
    loads["after_study"] = load_average()

    cache = work_dir / "features"
    fold = corpus.folds[0]
    trainval = list(fold.train) + list(fold.validation)
    all_ids = corpus.ids
    log(f"cold extraction fp32 ({len(all_ids)} clips, {chosen} thread(s))")
    store_tv, tv_s = cold_extract(corpus, backbone, source, cache, trainval)
    rest = [c for c in all_ids if c not in set(trainval)]
    store_rest, rest_s = cold_extract(corpus, backbone, source, cache, rest) if rest else ({}, 0.0)
    fp32_s = tv_s + rest_s
    from trustser.features import FeatureStore

    fp32_store = FeatureStore({**dict(store_tv.items()), **dict(store_rest.items())}, store_tv.key)
    t0 = time.perf_counter()
    from trustser.features import extract_features

    _, warm_stats = extract_features(corpus.index, backbone, source, cache, clip_ids=all_ids, progress=False)
    warm_s = time.perf_counter() - t0
    gflop_all = float(np.sum(flops(corpus.seconds(all_ids)))) / 1e9
    results["extraction"] = {
        "backbone": settings.backbone,
        "clips": len(all_ids),
        "audio_s": float(corpus.seconds(all_ids).sum()),
        "threads": chosen,
        "fp32_cold_s": fp32_s,
        "fp32_cold_s_per_clip": fp32_s / len(all_ids),
        "warm_read_s": warm_s,
        "warm_reused": warm_stats.reused,
        "gflops_total": gflop_all,
        "fp32_gflops_per_s": gflop_all / fp32_s,
        "peak_fraction": gflop_all / fp32_s / peak,
        "compute_only_best_peak_fraction": study["best"]["peak_fraction"],
        "compute_only_best": {k: study["best"][k] for k in ("processes", "threads", "batch_size")},
    }
    loads["after_extraction"] = load_average()

    log("cache vs recompute")
    compare = {}
    for name in settings.compare_backbones:
        if name == settings.backbone:
            compare[name] = cache_vs_recompute(
                name,
                backbone,
                source,
                corpus,
                cache,
                settings.epochs,
                settings.naive_epochs,
                flops,
                peak,
                store=FeatureStore({c: fp32_store[c] for c in trainval}, store_tv.key),
                extract_s=tv_s,
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                other, other_source = load_backbone(name, random_init=True)
            other_flops = fit_flops(name, settings.flops_seconds) if settings.mode == "default" else None
            compare[name] = cache_vs_recompute(
                name,
                other,
                other_source,
                corpus,
                cache,
                settings.epochs,
                settings.naive_epochs_large,
                other_flops,
                peak,
                stride=settings.compare_stride,
            )
            del other
        log(f"  {name}: {compare[name]['speedup_warm']:.1f}x")
    results["cache_vs_recompute"] = compare
    log("memory copy bandwidth and head training step")
    results["memory_copy"] = copy = memory_copy(settings.copy_mib, settings.copy_repeats, chosen)
    results["head_step"] = with_bandwidth(head_step(fp32_store.in_float32(), corpus.labels, list(fold.train)), copy)
    loads["after_cache"] = load_average()

    if backbone.spec.family == "whisper":
        log("Whisper true length vs 30 s padding")
        results["whisper_padding"] = whisper_padding(backbone, corpus, settings.pad_repeats)

    folds = corpus.folds[: settings.uar_folds]
    fp32_train = fp32_store.in_float32()
    uar_fp32, head = test_uars(fp32_train, corpus, folds, settings.epochs)  # section 4's reference, section 5's model
    if bf16_skip:
        results["bf16"] = {"skipped": bf16_skip, "folds": [f.name for f in folds], "uar_fp32": uar_fp32}
    else:
        results["bf16"] = bf16_section(
            settings,
            corpus,
            backbone,
            source,
            cache,
            work_dir,
            all_ids,
            fp32_s,
            fp32_store,
            gflop_all,
            mm,
            fp32_train,
            uar_fp32,
        )
    loads["after_bf16"] = load_average()

    log(f"attack cost ({settings.attack_clips} clips)")
    results["attack"] = attack_cost(backbone, head, corpus, settings.attack_clips)
    from trustser.metrics.safety import AttackSettings

    default_batch = AttackSettings().batch_size
    log(
        f"attack batching ({settings.attack_batch_clips} clips, FGSM per clip vs batches of "
        f"{sorted({*settings.attack_batch_sizes, default_batch})})"
    )
    results["attack_batching"] = attack_batching(
        backbone,
        head,
        corpus,
        settings.attack_batch_clips,
        sorted({*settings.attack_batch_sizes, default_batch}),
        settings.attack_batch_repeats,
    )
    results["attack_batching"]["default_batch_size"] = default_batch
    loads["after_attack"] = load_average()

    del fp32_train
    log(f"sweep: {settings.sweep_backbone} x EmoDB x folds={settings.sweep_folds} (subprocess)")
    sweep = run_sweep(
        settings.sweep_backbone,
        settings.sweep_folds,
        work_dir,
        None if settings.sweep_cold else cache,
        chosen,
        settings.sweep_overrides,
        settings.data_root,
    )
    spec = backbone.spec
    sweep_flops = flops if settings.sweep_backbone == settings.backbone else fit_flops(settings.sweep_backbone)
    clip_s = np.array(list(sweep["clip_seconds"].values()))
    sweep_gflop = float(np.sum(sweep_flops(clip_s))) / 1e9
    extract_rate = (
        sweep_gflop / sweep["stages_s"]["extract"]
        if settings.sweep_cold
        else results["extraction"]["fp32_gflops_per_s"]
    )
    frames_per_second = float(sum(sweep["clip_frames"].values()) / clip_s.sum())
    sweep.pop("clip_seconds"), sweep.pop("clip_frames")
    if sweep.get("head_step_in_pipeline_process"):  # another process, same machine and threads: same copy figure
        with_bandwidth(sweep["head_step_in_pipeline_process"], copy)
    results["sweep"] = sweep
    results["extrapolation"] = extrapolate(
        sweep,
        sweep_flops,
        frames_per_second,
        spec.num_hidden_states,
        spec.hidden_size,
        TRAINING_FP32_BUDGET,
        extract_rate,
    )
    log(f"full-grid estimate (scale factors: {settings.estimate_flops})")
    results["full_benchmark_estimate"] = full_estimate(results, settings.estimate_flops, torch.cuda.is_available())
    loads["end"] = load_average()
    results["load_average"] = loads
    results["bench_wall_s"] = time.perf_counter() - started
    results.update(headline(results))
    return results


def _batch_speedup(batching: Mapping[str, Any] | None) -> float:
    """FGSM time per clip / in batches of the package's default size, as measured (NaN where not measured)."""
    if not batching:
        return float("nan")
    return batching["speedup"].get(str(batching["default_batch_size"]), float("nan"))


def with_bandwidth(step: dict[str, Any], copy: Mapping[str, Any]) -> dict[str, Any]:
    """Adds to a ``head_step`` result its read rate as a fraction of the copy's read rate (read vs read, see
    ``bench_measure.COPY_CONVENTION``)."""
    step["bandwidth_fraction"] = step["read_gbps"] / copy["read_gbps"]
    return step


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The flat keys the issue asks for (and the targets they are checked against)."""
    main = r["cache_vs_recompute"].get(r["settings"]["backbone"]) or next(iter(r["cache_vs_recompute"].values()))
    pad = r.get("whisper_padding", {})
    out = {
        "cache_speedup": main["speedup_warm"],
        "cache_speedup_incl_cold_extraction": main["speedup_incl_cold_extraction"],
        "whisper_pad_flops_ratio": pad.get("flops_ratio", float("nan")),
        "whisper_pad_time_ratio": pad.get("encoder_time_ratio", float("nan")),
        "extraction_peak_fraction": r["extraction"]["peak_fraction"],
        "extraction_peak_fraction_best_config": r["extraction"]["compute_only_best_peak_fraction"],
        "bf16_speedup": r["bf16"].get("speedup"),  # None where section 4 was skipped (no bf16 kernels)
        "bf16_uar_delta": r["bf16"].get("uar_delta_mean"),
        "matmul_gflops": r["matmul"]["fp32_peak_gflops"],
        "matmul_gflops_bf16": r["matmul"]["bf16_peak_gflops"],
        "fgsm_vs_forward": r["attack"]["fgsm_sweep_vs_forward"],
        "attack_batch_speedup": _batch_speedup(r.get("attack_batching")),
        "sweep_wall_s": r["sweep"]["wall_s"],
        "head_step_feature_bytes": r["head_step"]["feature_bytes"],
        "head_step_read_gbps": r["head_step"]["read_gbps"],
        "memory_copy_gbps": r["memory_copy"]["copy_gbps"],
        "memory_copy_read_gbps": r["memory_copy"]["read_gbps"],
        "head_step_bandwidth_fraction": r["head_step"]["bandwidth_fraction"],
        "head_step_bandwidth_convention": r["memory_copy"]["convention"],
        "full_benchmark_estimate_hours": dict(r["full_benchmark_estimate"]["hours"]),
    }
    out["targets"] = {
        "cache_speedup >= 20": out["cache_speedup"] >= 20,
        "whisper_pad_flops_ratio >= 4": out["whisper_pad_flops_ratio"] >= 4,
        "extraction_peak_fraction >= 0.40": out["extraction_peak_fraction"] >= 0.40,
        "bf16_speedup >= 1.5": None if out["bf16_speedup"] is None else out["bf16_speedup"] >= 1.5,
        "|bf16_uar_delta| <= 0.01": None if out["bf16_uar_delta"] is None else abs(out["bf16_uar_delta"]) <= 0.01,
        "attack batches give the per-clip results": bool(r.get("attack_batching", {}).get("results_equal", False)),
    }
    return out


# ------------------------------------------------------------------------------------------------------ output
def _bf16_lines(b: Mapping[str, Any]) -> list[str]:
    return [
        "",
        "4. bf16 autocast vs fp32 extraction",
        f"   package, cold: {b['fp32_cold_s']:.1f} vs {b['bf16_cold_s']:.1f} s -> {b['speedup']:.2f}x; "
        f"compute only {b['compute_only']['speedup_autocast']:.2f}x, with bf16-stored weights "
        f"{b['compute_only']['speedup_precast']:.2f}x",
        f"   features: max relative L2 {b['feature_difference']['max_relative_l2']:.4f} "
        f"(median {b['feature_difference']['median_relative_l2']:.4f})",
        f"   test UAR over {len(b['folds'])} fold(s): fp32 {np.mean(b['uar_fp32']):.4f}, "
        f"bf16 {np.mean(b['uar_bf16']):.4f}, delta {b['uar_delta_mean']:+.4f} "
        f"(largest per fold {b['uar_delta_max_abs_fold']:.4f})"
        + (
            f"; fp32 seed 1 vs 0: {b['seed_delta_mean']:+.4f} (largest {b['seed_delta_max_abs_fold']:.4f})"
            if "seed_delta_mean" in b
            else ""
        ),
    ]


def format_table(r: dict[str, Any]) -> str:
    m, mm, ex, st = r["machine"], r["matmul"], r["extraction"], r["extraction_study"]
    lines = [
        f"trustser bench ({r['settings']['mode']}) on {m['cpu']}, {m['usable_cores']} cores, torch "
        f"{m['versions']['torch']}, {r['threads_used']} thread(s) used; load average {r['load_average']['start']}"
        f" -> {r['load_average']['end']}; {r['bench_wall_s']:.0f} s",
        "",
        "matmul (2048^2 torch.mm, best of %d)       " % mm["repeats"]
        + "  ".join(f"fp32 {t}t {g:.1f}" for t, g in mm["fp32"].items())
        + "  "
        + ("  ".join(f"bf16 {t}t {g:.1f}" for t, g in mm["bf16"].items()) or "bf16 skipped")
        + "  GFLOP/s",
        "",
        "1. cache vs recompute (30 epochs, one fold; naive timed for N epochs and scaled x30/N)",
    ]
    for name, c in r["cache_vs_recompute"].items():
        lines.append(
            f"   {name:<16} cached {c['cached_train_s']:7.1f} s   naive {c['naive_train_s_scaled']:8.1f} s "
            f"(N={c['naive_epochs_timed']})   speedup {c['speedup_warm']:6.1f}x warm, "
            f"{c['speedup_incl_cold_extraction']:5.1f}x incl. cold extraction {c['cold_extract_s']:.1f} s"
        )
    if "whisper_padding" in r:
        p = r["whisper_padding"]
        lines += [
            "",
            f"2. Whisper 6 s clip: true length ({p['true_positions']} positions) vs 30 s padding "
            f"({p['padded_positions']})",
            f"   FLOPs {p['true_gflops']:.2f} vs {p['padded_gflops']:.2f} G -> {p['flops_ratio']:.2f}x "
            f"(encoder alone {p['encoder_flops_ratio']:.2f}x)",
            f"   time  encoder {p['true_encoder_s'] * 1e3:.0f} vs {p['padded_encoder_s'] * 1e3:.0f} ms -> "
            f"{p['encoder_time_ratio']:.2f}x; with log-mel {p['full_time_ratio']:.2f}x",
        ]
    lines += [
        "",
        f"3. extraction efficiency ({ex['backbone']}, fp32 peak {mm['fp32_peak_gflops']:.1f} GFLOP/s)",
        f"   package extract_features, cold, {ex['clips']} clips: {ex['fp32_cold_s']:.1f} s, "
        f"{ex['fp32_gflops_per_s']:.1f} GFLOP/s = {100 * ex['peak_fraction']:.1f} % of peak; "
        f"warm cache read {ex['warm_read_s']:.2f} s",
        f"   compute only, {st['clips']} clips:",
    ]
    for row in st["rows"]:
        lines.append(
            f"     {row['processes']} proc x {row['threads']} thread(s), batch {row['batch_size']:>2}: "
            f"{row['seconds']:6.2f} s  {row['gflops_per_s']:6.1f} GFLOP/s  "
            f"{100 * row['peak_fraction']:5.1f} %"
        )
    b = r["bf16"]
    if "skipped" in b:
        lines += ["", f"4. bf16 autocast vs fp32 extraction: skipped ({b['skipped']})"]
    else:
        lines += _bf16_lines(b)
    a = r["attack"]
    lines += [
        "",
        f"5. attack cost per clip ({a['clips']} clips): forward {a['forward_s_per_clip'] * 1e3:.0f} ms; "
        f"FGSM 7 SNRs {a['fgsm_sweep_vs_forward']:.1f}x, FGSM 45 dB {a['fgsm_45db_vs_forward']:.1f}x, "
        f"Gaussian 7 SNRs {a['gaussian_sweep_vs_forward']:.1f}x",
    ]
    if "attack_batching" in r:
        ab = r["attack_batching"]
        lines.append(
            f"   FGSM {len(ab['snrs'])} SNRs, {ab['clips']} clips: per clip {ab['per_clip_s']:.1f} s; batches "
            + ", ".join(f"of {b} {s:.2f}x" for b, s in ab["speedup"].items())
            + f" (best of {ab['repeats']}, interleaved; results equal: {ab['results_equal']})"
        )
    s = r["sweep"]
    stage = "  ".join(f"{k} {v:.1f}" for k, v in s["stages_s"].items() if "_" not in k and "." not in k)
    validation = "  ".join(f"{k} {v:.1f}" for k, v in s["stages_s"].items() if k.endswith(".validation"))
    lines += [
        "",
        f"6. sweep {s['backbone']} x EmoDB x {s['folds']} fold(s), extract {s['extract_cache']}: "
        f"{s['wall_s']:.0f} s ({stage} s); peak RSS {(s['peak_rss_bytes'] or 0) / 2**30:.2f} GiB",
        f"   of which per-epoch validation: {validation or '-'} s",
    ]
    steps = [("bench process", r.get("head_step")), ("pipeline process", s.get("head_step_in_pipeline_process"))]
    for where, h in steps:
        if h:
            lines.append(
                f"   head training step, {h['clips']} clips, {where}: package (layer sum per clip) "
                f"{h['package_step_s'] * 1e3:.0f} ms, concatenate first {h['concat_first_step_s'] * 1e3:.0f}"
                f" ms -> {h['speedup']:.2f}x (logits differ by {h['logits_max_abs_diff']:.1e})"
            )
            if "standardized_step_s" in h:
                lines.append(
                    f"     standardised (the default): layer-sum op {h['standardized_step_s'] * 1e3:.0f} ms, "
                    f"broadcast {h['standardized_broadcast_step_s'] * 1e3:.0f} ms -> "
                    f"{h['standardized_speedup']:.2f}x (logits differ by {h['standardized_logits_max_abs_diff']:.1e})"
                )
            if "read_gbps" in h:
                lines.append(
                    f"     reads {h['feature_bytes'] / 1e6:.0f} MB of {h.get('feature_dtype', '?')} "
                    f"features a step: {h['read_gbps']:.2f} GB/s"
                    + (
                        f" = {100 * h['bandwidth_fraction']:.0f} % of the memory copy's read rate"
                        if "bandwidth_fraction" in h
                        else ""
                    )
                )
    if "memory_copy" in r:
        c = r["memory_copy"]
        lines.append(
            f"   memory copy ({c['bytes'] // 2**20} MiB torch copy, {c['threads']} thread(s), best of "
            f"{c['repeats']}): {c['copy_gbps']:.1f} GB/s read + write = {c['read_gbps']:.1f} GB/s read "
            f"(step bytes counted once, read only)"
        )
    lines.append("   estimate for the method's corpora (see assumptions in the JSON):")
    for name, c in r["extrapolation"]["corpora"].items():
        st_ = c["stages_s"]
        lines.append(
            f"     {name:<12} {c['clips']:>6} clips x {c['mean_s']} s, {c['folds']} fold(s): "
            f"{c['total_h']:6.2f} h (extract {st_['extract'] / 60:.0f}, train {st_['train'] / 60:.0f}, "
            f"probes {st_['probes'] / 60:.0f}, attacks {st_['attacks'] / 60:.0f} min); features "
            f"{c['feature_store_gb_fp16']:.1f} GiB fp16, peak RSS ~{c['peak_rss_gb_est']:.1f} GiB"
        )
    lines += full_estimate_lines(r["full_benchmark_estimate"])
    lines += ["", "targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["targets"].items())]
    return "\n".join(lines)


def full_estimate_lines(e: Mapping[str, Any]) -> list[str]:
    """Section 6's last lines: the whole grid's hours per measured device, by stage and by backbone."""
    a = e["assumptions"]
    lines = [
        f"   the method's whole grid ({len(a['backbones'])} backbones x {len(a['corpora'])} corpora, "
        f"{a['total_clips']:,} clips, x folds x all metrics; measured on {', '.join(a['measured_backbones'])}, "
        f"the rest scaled; assumptions in full_benchmark_estimate.assumptions):"
    ]
    for device, d in e["devices"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in d["by_stage_h"].items())
        lines.append(f"     {device}: {d['total_h']:.1f} h ({stages} h)")
        lines.append("       " + ", ".join(f"{b} {h:.1f}" for b, h in d["by_backbone_h"].items()) + " h")
    return lines


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="<= 5 minutes: 1 fold, fewer clips and repeats")
    parser.add_argument("--tiny", action="store_true", help="seconds: random-init Whisper Tiny, a few clips (tests)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--output", default=None, help="where to write the JSON (default: a temp-dir file)")
    parser.add_argument("--data-root", default=None, help="EmoDB root (default: the shipped copy)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary caches and MLflow store")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default=None,
        help="bf16 matmul and section 4: auto (default; skipped where the CPU has no bf16 kernels), on, off",
    )
    args = parser.parse_args(argv)
    settings = PRESETS["tiny" if args.tiny else "quick" if args.quick else "default"]
    if args.bf16:
        settings = replace(settings, bf16=args.bf16)
    if args.data_root:
        settings = replace(settings, data_root=args.data_root)
    work_dir = Path(tempfile.mkdtemp(prefix="trustser-bench-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # library prints never mix into the JSON
            results = jsonable(run_bench(settings, work_dir))
    finally:
        if args.keep:
            log(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    output = (
        Path(args.output)
        if args.output
        else Path(tempfile.gettempdir()) / f"trustser-bench-{settings.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    output.write_text(json.dumps(results, indent=1))
    log(f"JSON written to {output}")
    print(json.dumps(results) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole sweep (``run_experiment``) timed by stage in a fresh process, and its extrapolation to larger corpora.

``run_sweep`` starts ``python scripts/bench_sweep.py SPEC.json`` in a temporary directory (its own MLflow sqlite
store, a fresh cache root), so its peak memory is the pipeline's own. In the child every stage's entry point in
``trustser.experiment`` is wrapped by a timer; nothing in the package changes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from bench_measure import FlopsModel, head_step, vm_hwm_bytes

# The method's corpora, for the extrapolation. Clip counts are the method's 4-class totals; durations are assumed
# means after the 6 s cap; folds and partition shares follow each corpus's protocol (MSP-Podcast's official split
# is taken as 60/20/20).
CORPORA = {
    "iemocap": {"clips": 5531, "mean_s": 4.5, "folds": 5, "train": 0.6, "val": 0.2, "test": 0.2},
    "crema_d": {"clips": 4798, "mean_s": 2.5, "folds": 5, "train": 0.6, "val": 0.2, "test": 0.2},
    "msp_improv": {"clips": 7798, "mean_s": 3.5, "folds": 6, "train": 4 / 6, "val": 1 / 6, "test": 1 / 6},
    "msp_podcast": {"clips": 37924, "mean_s": 6.0, "folds": 1, "train": 0.6, "val": 0.2, "test": 0.2},
}


def minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sweep_child(spec_path: str) -> None:
    """Runs in a fresh process: ``run_experiment`` with each stage's entry point wrapped by a timer."""
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    from trustser.allocator import keep_freed_memory

    allocator = keep_freed_memory()  # as the trustser CLI does, so the sweep times what README command 1 runs
    import trustser.evaluation as evaluation
    import trustser.experiment as ex
    from trustser.metrics import sustainability as sus
    from trustser.probes import PROBE_CONFIG, within_speaker_split
    from trustser.training import TrainConfig

    import trustser.training
    from trustser import tracking

    stages: dict[str, float] = {}
    faults: dict[str, int] = {}  # minor page faults per stage: fresh memory being mapped and zeroed
    captured: dict[str, Any] = {}
    current: list[str] = []

    def add(table: dict, key: str, value) -> None:
        table[key] = table.get(key, 0) + value

    def timed(owner, attr: str, stage: str, keep: str | None = None) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            t0, f0 = time.perf_counter(), minor_faults()
            current.append(stage)
            try:
                result = original(*args, **kwargs)
            finally:
                current.pop()
                add(stages, stage, time.perf_counter() - t0)
                add(faults, stage, minor_faults() - f0)
            if keep:
                captured[keep] = (args, result)
            return result

        setattr(owner, attr, wrapper)

    def validation(original):
        """train_head's per-epoch validation predictions, charged to the stage that trains."""

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if current:
                    add(stages, f"{current[-1]}.validation", time.perf_counter() - t0)

        return wrapper

    trustser.training.predict = validation(trustser.training.predict)

    timed(ex, "load_backbone", "load_backbone")
    timed(tracking, "setup_tracking", "mlflow_setup")
    timed(ex, "extract_features", "extract", keep="extract")
    timed(evaluation, "train_head", "train")
    timed(evaluation, "gender_probe", "probes")
    timed(evaluation, "speaker_probe", "probes")
    timed(evaluation, "evaluate_safety", "attacks")
    timed(sus, "count_flops", "flops_count")
    timed(sus, "measure_latency", "flops_latency_memory")
    timed(sus, "measure_peak_memory", "flops_latency_memory")

    o = spec["overrides"]
    train = TrainConfig(**{k: v for k, v in o.items() if k in TrainConfig.__dataclass_fields__})
    trust = ex.TrustConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in o.items() if k in ex.TrustConfig.__dataclass_fields__}
    )
    config = ex.RunConfig(
        backbone=spec["backbone"],
        dataset="emodb",
        data_root=spec["data_root"],
        folds=spec["folds"],
        cache_dir=spec["cache_dir"],
        train=train,
        trust=trust,
        random_init=bool(o.get("random_init", False)),
        experiment="bench",
        progress=False,
    )
    t0 = time.perf_counter()
    result = ex.run_experiment(config)
    wall = time.perf_counter() - t0
    stages["flops"] = stages.get("flops_count", 0.0) + stages.get("flops_latency_memory", 0.0)

    # the work each stage did, for per-unit rates: frame-epochs of head training, seconds of audio
    (index, *_), (store, _) = captured["extract"][0], captured["extract"][1]
    import soundfile as sf

    frames = {c: int(store[c].shape[1]) for c in store}
    seconds = {c: min(sf.info(str(index.clips[c].path)).duration, config.max_seconds) for c in store}
    folds = ex.select_folds(index.folds, config.folds)
    probe = ex.probe_train_config(train, trust)

    def epochs_for(n_train: int, cfg) -> int:
        steps = -(-n_train // cfg.batch_size)
        return max(cfg.epochs, -(-cfg.min_steps // steps))

    work = {"train_frame_epochs": 0, "probe_frame_epochs": 0, "test_audio_s": 0.0, "extract_audio_s": 0.0}
    for fold, done in zip(folds, result.folds):
        # epochs actually trained (the converge schedule stops early), else what the schedule fixes
        ran = done.metrics
        tr, va = sum(frames[c] for c in fold.train), sum(frames[c] for c in fold.validation)
        work["train_frame_epochs"] += int(ran.get("epochs_run", epochs_for(len(fold.train), train))) * (tr + va)
        work["probe_frame_epochs"] += int(ran.get("privacy_gender_epochs_run", epochs_for(len(fold.train), probe))) * (
            tr + va
        )
        s_train, s_val, _ = within_speaker_split(list(fold.train), index.clips)
        work["probe_frame_epochs"] += int(ran.get("privacy_speaker_epochs_run", epochs_for(len(s_train), probe))) * sum(
            frames[c] for c in (*s_train, *s_val)
        )
        test = list(fold.test)
        chosen = ex.attack_subset(test, trust.max_attack_clips)
        work["test_audio_s"] += sum(seconds[test[i]] for i in chosen)
    work["extract_audio_s"] = sum(seconds.values())
    stages["other"] = wall - sum(
        stages.get(k, 0.0) for k in ("extract", "train", "probes", "attacks", "flops", "load_backbone", "mlflow_setup")
    )
    fold1 = list(folds[0].train)
    step = head_step(store.in_float32(), {c: index.clips[c].label for c in store}, fold1)
    out = {
        "backbone": spec["backbone"],
        "folds": len(folds),
        "clips": len(store),
        "wall_s": wall,
        "stages_s": stages,
        "minor_page_faults": faults,
        "allocator": allocator,
        "head_step_in_pipeline_process": step,
        "work": work,
        "clip_seconds": seconds,
        "clip_frames": frames,
        "feature_store_bytes_fp16": store.nbytes(),
        "peak_rss_bytes": vm_hwm_bytes(),
        "test_uar_mean": result.summary.get("test_uar_mean"),
        "safety_fgsm_asr_mean": result.summary.get("safety_fgsm_asr_mean"),
        "privacy_gender_accuracy_mean": result.summary.get("privacy_gender_accuracy_mean"),
        "sustainability_gflops": result.summary.get(
            "sustainability_gflops_mean", result.summary.get("sustainability_gflops")
        ),
        "probe_config": PROBE_CONFIG.as_params(),
    }
    Path(spec["result"]).write_text(json.dumps(out))


def run_sweep(
    backbone: str,
    folds: str,
    work_dir: Path,
    feature_cache: Path | None,
    n_threads: int,
    overrides: Mapping[str, Any] | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """The whole pipeline over EmoDB in a fresh subprocess (clean peak memory), MLflow into a temporary sqlite
    store. ``feature_cache`` None: a fresh feature cache (cold extraction); else that cache (warm)."""
    from trustser.paths import cache_dir

    root = work_dir / "sweep"
    root.mkdir()
    cache_root = root / "cache"
    cache_root.mkdir()
    real = cache_dir()
    for name in ("converted", "ct2"):  # converted Whisper weights: an install step, linked in
        if (real / name).exists():
            (cache_root / name).symlink_to(real / name)
    spec = {
        "backbone": backbone,
        "folds": folds,
        "data_root": data_root,
        "cache_dir": str(root / "features" if feature_cache is None else feature_cache),
        "threads": n_threads,
        "overrides": dict(overrides or {}),
        "result": str(root / "result.json"),
    }
    (root / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "TRUSTSER_CACHE": str(cache_root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "PYTHONWARNINGS": "ignore",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(root / "spec.json")],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sweep subprocess failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    out = json.loads((root / "result.json").read_text())
    out["process_wall_s"] = time.perf_counter() - t0
    out["extract_cache"] = "cold (fresh cache)" if feature_cache is None else "warm (this run's fp32 cache)"
    out["flops_cache"] = "cold (fresh cache root)"
    return out


def extrapolate(
    sweep: dict[str, Any],
    flops: FlopsModel,
    frames_per_second: float,
    layers: int,
    hidden: int,
    budget_bytes: int,
    extract_gflops_per_s: float,
) -> dict[str, Any]:
    """Scale the sweep's per-unit costs to the method's corpora (an estimate; assumptions in CORPORA)."""
    stages, work = sweep["stages_s"], sweep["work"]
    rate_train = stages["train"] / max(work["train_frame_epochs"], 1)
    rate_probe = stages["probes"] / max(work["probe_frame_epochs"], 1)
    rate_attack = stages["attacks"] / max(work["test_audio_s"], 1e-9)
    other_per_fold = max(stages["other"], 0.0) / sweep["folds"]
    fp16_per_frame = layers * hidden * 2
    emodb_store = sweep["feature_store_bytes_fp16"]
    emodb_fp32 = 2 * emodb_store if 2 * emodb_store <= budget_bytes else 0
    base_rss = (sweep["peak_rss_bytes"] or 0) - emodb_store - emodb_fp32

    def epochs(n_train: float, epochs_: int, min_steps: int) -> int:
        return max(epochs_, math.ceil(min_steps / math.ceil(n_train / 64)))

    rows = {}
    for name, c in CORPORA.items():
        n, d, k = c["clips"], c["mean_s"], c["folds"]
        frames = math.floor(d * frames_per_second)
        n_train, n_val = c["train"] * n, c["val"] * n
        extract = n * float(flops(d)) / (extract_gflops_per_s * 1e9)
        train = k * 30 * (n_train + n_val) * frames * rate_train
        g = epochs(n_train, 10, 400) * (n_train + n_val) * frames
        s = epochs(0.6 * n_train, 10, 400) * 0.8 * n_train * frames
        probes = k * (g + s) * rate_probe
        test_s = n * d if k > 1 else c["test"] * n * d
        attacks = test_s * rate_attack
        flops_s = stages["flops"]
        other = k * other_per_fold
        store = n * frames * fp16_per_frame
        fp32 = 2 * store if 2 * store <= budget_bytes else 0
        rows[name] = {
            "clips": n,
            "mean_s": d,
            "folds": k,
            "stages_s": {
                "extract": extract,
                "train": train,
                "probes": probes,
                "attacks": attacks,
                "flops": flops_s,
                "other": other,
            },
            "total_h": (extract + train + probes + attacks + flops_s + other) / 3600,
            "feature_store_gb_fp16": store / 2**30,
            "fp32_copy": bool(fp32),
            "peak_rss_gb_est": (base_rss + store + fp32) / 2**30,
        }
    return {
        "rates": {
            "train_s_per_frame_epoch": rate_train,
            "probe_s_per_frame_epoch": rate_probe,
            "attack_s_per_test_audio_s": rate_attack,
            "other_s_per_fold": other_per_fold,
            "extract_gflops_per_s": extract_gflops_per_s,
        },
        "corpora": rows,
        "assumptions": (
            "clip counts: the method's 4-class totals; mean durations after the 6 s cap: IEMOCAP 4.5 s, "
            "CREMA-D 2.5 s, MSP-Improv 3.5 s, MSP-Podcast 6 s; every clip at the mean length; "
            "partitions 60/20/20 (MSP-Improv 4/6, 1/6, 1/6; MSP-Podcast's official split taken as "
            "60/20/20, one 'fold'); extraction at the FLOP/s achieved on EmoDB; head training and "
            "probes at EmoDB's seconds per frame-epoch; attacks at EmoDB's seconds per second of test "
            "audio (EmoDB's share of correctly classified clips - harder corpora attack fewer); "
            "FLOPs/latency/memory stage as measured; peak RSS = EmoDB peak - EmoDB feature store + "
            "the corpus's store (fp16, plus an fp32 copy when it fits TRUSTSER_FP32_BUDGET_GB)"
        ),
    }


if __name__ == "__main__":
    sweep_child(sys.argv[1])

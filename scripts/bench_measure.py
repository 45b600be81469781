"""Measurement functions of scripts/bench.py: each times or counts one thing and returns plain numbers.

They take explicit arguments (no settings object), so tests can call them on tiny inputs. Timings are wall-clock
``time.perf_counter`` seconds, best of a few repeats after a warm-up unless a docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
SWEEP_SNRS = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)  # TrustConfig.sweep_snrs: the opt-in ASR-vs-SNR curve


# --------------------------------------------------------------------------------------------------- utilities
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def best_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------------ environment
def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    cpu, flags = platform.processor(), []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    commit = None
    with contextlib.suppress(Exception):
        commit = (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = f"{commit}{'+dirty' if dirty else ''}"
    bf16_kernels = None
    with contextlib.suppress(Exception):
        bf16_kernels = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    blas = [
        line.strip()
        for line in torch.__config__.parallel_info().splitlines()
        if "Math Kernel" in line or "MKL-DNN" in line or "oneDNN" in line or "parallel backend" in line
    ]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": mem_gb,
        "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            d: ver(d) for d in ("torch", "transformers", "numpy", "calflops", "torchattacks", "mlflow", "trustser")
        },
        "torch_default_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_bf16_supported": bf16_kernels,
        "blas": blas,
        "git_commit": commit,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }


# ----------------------------------------------------------------------------------------------------- matmul
def matmul_gflops(
    n: int = 2048, dtype: torch.dtype = torch.float32, num_threads: int | None = None, repeats: int = 5
) -> float:
    """Dense n x n @ n x n: 2n^3 FLOPs over the best of ``repeats`` timed runs (after one warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    with threads(num_threads or torch.get_num_threads()):
        t = best_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / t / 1e9


def measure_matmul(n: int, repeats: int, thread_options: Sequence[int], bf16: bool = True) -> dict[str, Any]:
    """fp32 and (unless ``bf16`` is False) bf16 matmul GFLOP/s at each thread count; the peaks are the best over
    thread counts (None where not measured)."""
    out: dict[str, Any] = {"n": n, "repeats": repeats, "fp32": {}, "bf16": {}}
    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16)) if bf16 else (("fp32", torch.float32),)
    for n_threads in thread_options:
        for name, dtype in dtypes:
            out[name][str(n_threads)] = matmul_gflops(n, dtype, n_threads, repeats)
    out["fp32_peak_gflops"] = max(out["fp32"].values())
    out["bf16_peak_gflops"] = max(out["bf16"].values()) if out["bf16"] else None
    return out


# --------------------------------------------------------------------------------------------- memory copy
COPY_CONVENTION = (
    "memory_copy_gbps counts a copy's read + write traffic (2 x bytes copied per second, STREAM Copy convention); "
    "memory_copy_read_gbps = memory_copy_gbps / 2 is the rate at which the copy reads memory. head_step_read_gbps "
    "counts the cached feature bytes of one training step once each, read only (the compulsory minimum: the "
    "backward reads them again for the layer-weight gradient, not counted). head_step_bandwidth_fraction = "
    "head_step_read_gbps / memory_copy_read_gbps: read rate against read rate. 1 GB = 1e9 bytes."
)


def memory_copy(mib: int, repeats: int, num_threads: int) -> dict[str, Any]:
    """Memory copy bandwidth (``trustser.bandwidth.measure_copy_bandwidth``) with ``num_threads`` torch threads."""
    from trustser.bandwidth import measure_copy_bandwidth

    with threads(num_threads):
        copy = measure_copy_bandwidth(mib * 2**20, repeats)
    return {
        "bytes": mib * 2**20,
        "repeats": repeats,
        "threads": num_threads,
        "copy_gbps": copy,
        "read_gbps": copy / 2,
        "convention": COPY_CONVENTION,
    }


# ------------------------------------------------------------------------------------------------------ FLOPs
@dataclass(frozen=True)
class FlopsModel:
    """Backbone FLOPs (front end + encoder, head excluded) of one clip as a quadratic in its length in seconds.

    Linear layers and convolutions grow linearly with length and attention products with its square, so three
    counts pin the curve; a fourth checks it.
    """

    backbone: str
    coefficients: tuple[float, float, float]  # c0 + c1 s + c2 s^2
    check_seconds: float
    check_relative_error: float

    def __call__(self, seconds: float | np.ndarray) -> float | np.ndarray:
        c0, c1, c2 = self.coefficients
        return c0 + c1 * seconds + c2 * np.square(seconds)


def fit_flops(name: str, seconds: Sequence[float] = (2.0, 4.0, 6.0), check: float = 3.0) -> FlopsModel:
    from trustser.metrics.sustainability import count_flops

    def backbone_flops(s: float) -> float:
        report = count_flops(name, s)
        return float(report.flops - report.head_flops)

    xs = np.array(seconds, dtype=float)
    c2, c1, c0 = np.polyfit(xs, [backbone_flops(s) for s in xs], 2)
    model = FlopsModel(name, (float(c0), float(c1), float(c2)), check, 0.0)
    measured = backbone_flops(check)
    return replace(model, check_relative_error=abs(float(model(check)) - measured) / measured)


# -------------------------------------------------------------------------------------------------- the corpus
@dataclass
class Corpus:
    index: Any
    waves: dict[str, torch.Tensor]  # clip id -> samples, as extraction reads them (6 s cap)
    labels: dict[str, int]
    folds: list[Any]  # trustser Fold objects (possibly trimmed for --tiny)

    def seconds(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.waves[i].numel() / 16000 for i in ids])

    @property
    def ids(self) -> list[str]:
        return sorted({c for f in self.folds for part in f.partitions().values() for c in part})


def load_emodb(data_root: str | None = None, clip_limit: int | None = None) -> Corpus:
    """EmoDB with its waveforms in memory; ``clip_limit`` keeps that many clips per partition of each fold."""
    from trustser.audio import load_audio
    from trustser.corpora import load_corpus

    index = load_corpus("emodb", data_root)
    folds = list(index.folds)
    if clip_limit:
        from trustser.corpora import Fold

        k = clip_limit
        folds = [Fold(f.name, f.train[:k], f.validation[:k], f.test[:k]) for f in folds]
    ids = sorted({c for f in folds for part in f.partitions().values() for c in part})
    waves = {c: torch.from_numpy(load_audio(index.clips[c].path)) for c in ids}
    return Corpus(index, waves, {c: index.clips[c].label for c in ids}, folds)


# ------------------------------------------------------------------------------------------------- extraction
def batched_hidden(backbone, waves: Sequence[torch.Tensor], precision: str = "fp32") -> list[torch.Tensor]:
    """Hidden states of several clips from one padded forward (each backbone masks its padding: same features)."""
    from trustser.features import PRECISIONS

    lengths = torch.tensor([w.numel() for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        batch[b, : w.numel()] = w
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        out = backbone(batch, lengths)
    frames = out.mask.sum(1).tolist()
    return [out.hidden[b, :, : frames[b]].float() for b in range(len(waves))]


def time_compute(
    backbone, waves: Sequence[torch.Tensor], batch_size: int = 1, precision: str = "fp32", repeats: int = 1
) -> float:
    """Seconds to compute every clip's hidden states, clips in length order, ``batch_size`` at a time
    (1 = the package's per-clip ``compute_hidden``); best of ``repeats`` after a one-clip warm-up."""
    from trustser.features import compute_hidden

    ordered = sorted(waves, key=lambda w: w.numel())

    def run() -> None:
        if batch_size == 1:
            for w in ordered:
                compute_hidden(backbone, w, precision)
        else:
            for start in range(0, len(ordered), batch_size):
                batched_hidden(backbone, ordered[start : start + batch_size], precision)

    compute_hidden(backbone, ordered[0], precision)
    return best_time(run, repeats, warmup=0)


def _process_worker(name: str, random_init: bool, waves: list[np.ndarray], barrier, queue) -> None:
    """One extraction process with one thread: load the backbone, wait for the others, time its share."""
    import warnings

    torch.set_num_threads(1)
    from trustser.backbones.loading import load_backbone
    from trustser.features import compute_hidden

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone, _ = load_backbone(name, random_init=random_init)
    tensors = [torch.from_numpy(w) for w in waves]
    compute_hidden(backbone, tensors[0])
    barrier.wait()
    start = time.perf_counter()
    for w in tensors:
        compute_hidden(backbone, w)
    queue.put((start, time.perf_counter()))


def time_processes(name: str, random_init: bool, waves: Sequence[torch.Tensor], processes: int = 2) -> float:
    """Wall seconds for ``processes`` single-threaded processes to extract the clips (split by total length);
    model loading is excluded (all start together after a barrier). CLOCK_MONOTONIC is shared across processes."""
    ctx = multiprocessing.get_context("spawn")
    shares: list[list[np.ndarray]] = [[] for _ in range(processes)]
    load = [0] * processes
    for w in sorted(waves, key=lambda w: -w.numel()):  # greedy balance by length
        k = load.index(min(load))
        shares[k].append(w.numpy())
        load[k] += w.numel()
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_process_worker, args=(name, random_init, share, barrier, queue)) for share in shares]
    for p in workers:
        p.start()
    try:
        spans = [queue.get(timeout=900) for _ in workers]
    finally:
        for p in workers:
            p.join(timeout=60)
    return max(e for _, e in spans) - min(s for s, _ in spans)


def study_ids(ids: Sequence[str], n: int) -> list[str]:
    """An evenly spaced subset of ``n`` clip ids."""
    return list(ids[:: max(1, len(ids) // n)][:n])


def extraction_study(
    backbone,
    corpus: Corpus,
    flops: FlopsModel,
    peak_gflops: float,
    thread_options: Sequence[int],
    n_clips: int,
    repeats: int = 1,
    batch_sizes: Sequence[int] = (1, 8),
    processes: bool = True,
    random_init: bool = False,
) -> dict[str, Any]:
    """Compute-only throughput of the configurations we can choose between, on the same clips: threads, batches
    of length-sorted clips, and (``processes``) as many single-threaded processes as the largest thread count."""
    ids = study_ids(corpus.ids, n_clips)
    waves = [corpus.waves[i] for i in ids]
    total_flops = float(np.sum(flops(corpus.seconds(ids))))
    batchable = backbone.spec.family == "whisper"  # the SSL backbones run clip by clip inside anyway
    rows = []
    for n_threads in thread_options:
        with threads(n_threads):
            for batch_size in batch_sizes if batchable else (1,):
                t = time_compute(backbone, waves, batch_size, repeats=repeats)
                rows.append({"processes": 1, "threads": n_threads, "batch_size": batch_size, "seconds": t})
    if processes and max(thread_options) > 1:
        t = time_processes(backbone.spec.name, random_init, waves, processes=max(thread_options))
        rows.append({"processes": max(thread_options), "threads": 1, "batch_size": 1, "seconds": t})
    for row in rows:
        row["gflops_per_s"] = total_flops / row["seconds"] / 1e9
        row["peak_fraction"] = row["gflops_per_s"] / peak_gflops
    in_process = [r for r in rows if r["processes"] == 1]
    best = min(in_process, key=lambda r: r["seconds"])
    package_best = min((r for r in in_process if r["batch_size"] == 1), key=lambda r: r["seconds"])
    check = {}
    if batchable and max(batch_sizes) > 1:
        from trustser.features import compute_hidden

        sample = sorted(waves, key=lambda w: w.numel())[: max(batch_sizes)]
        batched = batched_hidden(backbone, sample)
        single = [compute_hidden(backbone, w) for w in sample]
        check["batched_vs_single_max_abs_diff"] = max(float((a - b).abs().max()) for a, b in zip(batched, single))
    return {
        "clips": len(ids),
        "audio_s": float(corpus.seconds(ids).sum()),
        "gflops_total": total_flops / 1e9,
        "rows": rows,
        "best": best,
        "best_per_clip": package_best,
        **check,
    }


def cold_extract(corpus: Corpus, backbone, source, cache: Path, ids: Sequence[str], precision: str = "fp32"):
    """The package's extraction (``extract_features``) into a fresh cache: wall seconds and the store."""
    from trustser.features import extract_features

    t0 = time.perf_counter()
    store, stats = extract_features(
        corpus.index, backbone, source, cache, clip_ids=list(ids), progress=False, precision=precision
    )
    seconds = time.perf_counter() - t0
    if stats.computed != len(ids):
        raise RuntimeError(f"expected a cold cache: {stats.computed} of {len(ids)} clips computed")
    return store, seconds


# ---------------------------------------------------------------------------------------- cache vs recompute
def naive_epochs(
    backbone, corpus: Corpus, train_ids: Sequence[str], val_ids: Sequence[str], epochs: int, config
) -> float:
    """Seconds per epoch of the naive way: every epoch runs the frozen backbone on each training batch's clips
    and on the validation clips (audio already in memory, which favours the naive path), then the same head
    step / validation UAR as ``train_head``."""
    import torch.nn.functional as F

    from trustser.features import compute_hidden
    from trustser.head import EmotionHead
    from trustser.metrics.performance import uar

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    spec = backbone.spec
    head = EmotionHead(spec.num_hidden_states, spec.hidden_size, NUM_CLASSES, config.width, config.pooling)
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    y_val = np.array([corpus.labels[i] for i in val_ids])
    t0 = time.perf_counter()
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(len(train_ids), generator=generator).tolist()
        for start in range(0, len(perm), config.batch_size):
            ids = [train_ids[i] for i in perm[start : start + config.batch_size]]
            hidden = [compute_hidden(backbone, corpus.waves[i]).clone() for i in ids]
            loss = F.cross_entropy(head.forward_clips(hidden), torch.tensor([corpus.labels[i] for i in ids]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            preds = []
            for start in range(0, len(val_ids), config.batch_size):
                ids = val_ids[start : start + config.batch_size]
                preds.append(head.forward_clips([compute_hidden(backbone, corpus.waves[i]) for i in ids]).argmax(-1))
        uar(y_val, torch.cat(preds).numpy(), NUM_CLASSES)
    return (time.perf_counter() - t0) / epochs


def cache_vs_recompute(
    name: str,
    backbone,
    source,
    corpus: Corpus,
    cache: Path,
    epochs: int,
    epochs_naive: int,
    flops: FlopsModel | None,
    peak_gflops: float,
    store=None,
    extract_s: float | None = None,
    stride: int = 1,
) -> dict[str, Any]:
    """Head training over fold 1 from cached features (``epochs``) against the naive path, timed for
    ``epochs_naive`` epochs and scaled linearly to ``epochs``. Without ``store`` the fold's train + validation
    clips are first extracted cold into ``cache`` (timed). ``stride`` n keeps every n-th train and validation
    clip for both paths (both costs scale with the clip count, so the ratio stands)."""
    from trustser.training import TrainConfig, train_head

    fold = corpus.folds[0]
    train_ids, val_ids = list(fold.train)[::stride], list(fold.validation)[::stride]
    ids = train_ids + val_ids
    if store is None:
        store, extract_s = cold_extract(corpus, backbone, source, cache, ids)
    t0 = time.perf_counter()
    fp32 = store.in_float32()
    to_fp32_s = time.perf_counter() - t0
    config = TrainConfig(schedule="paper", epochs=epochs)
    t0 = time.perf_counter()
    train_head(fp32, corpus.labels, train_ids, val_ids, NUM_CLASSES, config)
    cached_s = time.perf_counter() - t0
    naive_epoch_s = naive_epochs(backbone, corpus, train_ids, val_ids, epochs_naive, config)
    naive_s = naive_epoch_s * epochs
    out = {
        "backbone": name,
        "weights": source.kind,
        "fold": fold.name,
        "clip_stride": stride,
        "train_clips": len(train_ids),
        "val_clips": len(val_ids),
        "epochs": epochs,
        "cached_train_s": cached_s,
        "cached_epoch_s": cached_s / epochs,
        "fp16_to_fp32_s": to_fp32_s,
        "cold_extract_s": extract_s,
        "naive_epochs_timed": epochs_naive,
        "naive_epoch_s": naive_epoch_s,
        "naive_train_s_scaled": naive_s,
        "speedup_warm": naive_s / cached_s,
        "speedup_incl_cold_extraction": naive_s / (cached_s + extract_s + to_fp32_s),
    }
    if flops is not None:
        gflop = float(np.sum(flops(corpus.seconds(ids)))) / 1e9
        out["extract_gflops_per_s"] = gflop / extract_s
        out["extract_peak_fraction"] = gflop / extract_s / peak_gflops
    return out


def concat_first(head, clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """``EmotionHead.forward_clips`` as it was before the layer sum moved ahead of the concatenation: every
    layer's [L, T, H] is copied into one [L, N, H] tensor, then summed. The same logits; kept as the reference the
    package's step is timed against."""
    frames = torch.cat(list(clips), dim=1).float()
    return _logits_from_frames(head, torch.einsum("l,lnh->nh", head.layer_weights(), frames), clips)


def _logits_from_frames(head, combined: torch.Tensor, clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """The head after its layer sum, on the clips' concatenated frames [N, H]: the two k=1 convolutions, the
    per-clip time-mean and the two linear layers (the reference formulations differ only before this)."""
    import torch.nn.functional as F

    lengths = torch.tensor([c.shape[1] for c in clips])
    x = F.relu(F.linear(combined, head.conv1.weight.squeeze(-1), head.conv1.bias))
    x = F.linear(x, head.conv2.weight.squeeze(-1), head.conv2.bias)
    segment = torch.repeat_interleave(torch.arange(len(clips)), lengths)
    pooled = torch.zeros(len(clips), x.shape[1], dtype=x.dtype).index_add_(0, segment, x)
    pooled = pooled / lengths[:, None].clamp(min=1).to(x.dtype)
    return head.fc2(F.relu(head.fc1(pooled)))


def broadcast_standardized(head, clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """A standardised ``EmotionHead.forward_clips`` as it was before 2026-12-07: the layer sum as a broadcast
    product [L, T, H] per clip summed over layers, the offset subtracted from every frame. The same logits to float
    rounding; kept as the reference ``trustser.layer_sum`` is timed against."""
    scale = head.layer_weights()[:, None] * head.feat_inv_std
    offset = (scale * head.feat_mean).sum(0)
    combined = torch.cat([(c.float() * scale[:, None, :]).sum(0) for c in clips]) - offset
    return _logits_from_frames(head, combined, clips)


def head_step(store, labels: Mapping[str, int], ids: Sequence[str], repeats: int = 5) -> dict[str, Any]:
    """One training step (forward + backward, batch of 64 cached clips) of the package's head (layer sum per clip,
    then concatenation) against the concatenate-first way it replaced; the step that head training and both
    privacy probes repeat thousands of times. ``feature_bytes`` is what the step must read of the cached features
    (each byte once, in the dtype they are held in: ``trustser.bandwidth.head_step_bytes``); ``read_gbps`` is that
    over the package step's time."""
    import torch.nn.functional as F

    from trustser.bandwidth import GB, head_step_bytes
    from trustser.head import EmotionHead

    clips = [store[i] for i in ids[:64]]
    target = torch.tensor([labels[i] for i in ids[:64]])
    head = EmotionHead(clips[0].shape[0], clips[0].shape[2], NUM_CLASSES)

    def step(forward) -> Callable[[], None]:
        def run() -> None:
            head.zero_grad()
            F.cross_entropy(forward(clips), target).backward()

        return run

    package = best_time(step(head.forward_clips), repeats)
    before = best_time(step(lambda c: concat_first(head, c)), repeats)
    with torch.no_grad():
        diff = float((head.forward_clips(clips) - concat_first(head, clips)).abs().max())
    # the default head standardises: its step (trustser.layer_sum) against the broadcast formulation it replaced
    from trustser.standardize import fit_standardization

    stats = fit_standardization(store, list(ids[:64]))
    head.set_standardization(stats.mean, stats.std)
    standardized = best_time(step(head.forward_clips), repeats)
    broadcast = best_time(step(lambda c: broadcast_standardized(head, c)), repeats)
    with torch.no_grad():
        standardized_diff = float((head.forward_clips(clips) - broadcast_standardized(head, clips)).abs().max())
    nbytes = head_step_bytes(clips)
    return {
        "standardized_step_s": standardized,
        "standardized_broadcast_step_s": broadcast,
        "standardized_speedup": broadcast / standardized,
        "standardized_logits_max_abs_diff": standardized_diff,
        "clips": len(clips),
        "frames": int(sum(c.shape[1] for c in clips)),
        "package_step_s": package,
        "concat_first_step_s": before,
        "speedup": before / package,
        "logits_max_abs_diff": diff,
        "feature_dtype": str(clips[0].dtype).removeprefix("torch."),
        "feature_bytes": nbytes,
        "read_gbps": nbytes / package / GB,
    }


# ------------------------------------------------------------------------------------------ Whisper padding
def whisper_padding(backbone, corpus: Corpus, repeats: int) -> dict[str, Any]:
    """A 6 s clip on its true length (600 mel frames -> 300 positions) vs zero-padded to 30 s (3000 -> 1500)."""
    from trustser.metrics.sustainability import count_flops, whisper_padding_flops_ratio

    name = backbone.spec.name
    six = [w for w in corpus.waves.values() if w.numel() >= 96000]
    wave = six[0][:96000] if six else 0.1 * torch.randn(96000, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(wave, (0, 480000 - 96000))
    out = {}
    with torch.inference_mode():
        for label, w in (("true", wave), ("padded", padded)):
            n = torch.tensor([w.numel()])
            mel, frames = backbone.log_mel(w[None], n)
            out[f"{label}_positions"] = int(backbone.output_lengths(n)[0])
            out[f"{label}_encoder_s"] = best_time(lambda: backbone.forward_mel(mel, frames), repeats)
            out[f"{label}_full_s"] = best_time(lambda: backbone(w[None], n), repeats)
    true, pad = count_flops(name, 6.0), count_flops(name, 30.0)
    out.update(
        {
            "clip_source": "EmoDB clip capped at 6 s" if six else "random noise",
            "true_gflops": true.flops / 1e9,
            "padded_gflops": pad.flops / 1e9,
            "flops_ratio": whisper_padding_flops_ratio(name),
            "encoder_flops_ratio": pad.backbone_flops / true.backbone_flops,
            "encoder_time_ratio": out["padded_encoder_s"] / out["true_encoder_s"],
            "full_time_ratio": out["padded_full_s"] / out["true_full_s"],
        }
    )
    return out


# ------------------------------------------------------------------------------------------------------- bf16
def feature_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per clip and layer ||b - a|| / ||a|| (Frobenius), and the largest |b - a| relative to the layer's max |a|."""
    rel, rel_max = [], []
    for clip in a:
        x, y = a[clip].float(), b[clip].float()
        diff = (y - x).flatten(1)
        rel += (diff.norm(dim=1) / x.flatten(1).norm(dim=1).clamp(min=1e-12)).tolist()
        rel_max += (diff.abs().amax(1) / x.flatten(1).abs().amax(1).clamp(min=1e-12)).tolist()
    return {
        "max_relative_l2": max(rel),
        "median_relative_l2": statistics.median(rel),
        "max_abs_over_layer_max": max(rel_max),
    }


def test_uars(store, corpus: Corpus, folds: Sequence[Any], epochs: int, seed: int = 0) -> tuple[list[float], Any]:
    from trustser.metrics.performance import uar
    from trustser.training import TrainConfig, predict, train_head

    scores, first_head = [], None
    for fold in folds:
        result = train_head(
            store,
            corpus.labels,
            list(fold.train),
            list(fold.validation),
            NUM_CLASSES,
            TrainConfig(schedule="paper", epochs=epochs, seed=seed),
        )
        y_true = np.array([corpus.labels[c] for c in fold.test])
        scores.append(uar(y_true, predict(result.head, store, list(fold.test)), NUM_CLASSES))
        first_head = result.head if first_head is None else first_head
    return scores, first_head


# ---------------------------------------------------------------------------------------------------- attacks
def attack_cost(backbone, head, corpus: Corpus, n_clips: int) -> dict[str, Any]:
    """Per-clip time of the safety evaluation against one forward pass (backbone + head) on the same clips.
    Each clip is attacked as if correctly classified (its label = its clean prediction), so every clip pays."""
    from trustser.experiment import attack_subset
    from trustser.metrics.safety import WaveformClassifier, run_attack

    test = list(corpus.folds[0].test)
    chosen = [test[i] for i in attack_subset(test, n_clips)]
    waves = [corpus.waves[c] for c in chosen]
    classifier = WaveformClassifier(backbone, head)
    with torch.inference_mode():
        classifier(waves[0][None])
        forward = []
        for w in waves:
            t0 = time.perf_counter()
            classifier(w[None])
            forward.append(time.perf_counter() - t0)
        preds = [int(classifier(w[None]).argmax(-1)) for w in waves]
    out = {
        "clips": len(chosen),
        "audio_s": float(sum(w.numel() for w in waves) / 16000),
        "forward_s_per_clip": float(np.mean(forward)),
    }
    for label, attack, snrs in (
        ("fgsm_sweep", "fgsm", SWEEP_SNRS),
        ("fgsm_45db", "fgsm", (45.0,)),
        ("gaussian_sweep", "gaussian", SWEEP_SNRS),
    ):
        t0 = time.perf_counter()
        reports = run_attack(classifier, waves, preds, attack, snrs, clip_ids=chosen, clean_predictions=preds)
        per_clip = (time.perf_counter() - t0) / len(chosen)
        out[f"{label}_s_per_clip"] = per_clip
        out[f"{label}_vs_forward"] = per_clip / out["forward_s_per_clip"]
        out[f"{label}_attacked"] = reports[snrs[0]].n_attacked
    return out


def attack_batching(
    backbone,
    head,
    corpus: Corpus,
    n_clips: int,
    batch_sizes: Sequence[int],
    repeats: int,
    snrs: Sequence[float] = SWEEP_SNRS,
) -> dict[str, Any]:
    """FGSM over the same clips one at a time (``batch_size`` 1) and in length-sorted padded batches, as the
    pipeline runs it (every SNR of ``snrs``; each clip labelled with its clean prediction, so every clip pays).

    The settings alternate within each repeat (the order flips every repeat), so a load change on a shared machine
    hits both; the best time of each is compared. ``results_equal``: every batch size gave the per-clip path's
    statuses, clean and perturbed predictions and flips (``tests/test_metrics_safety.py`` states the tolerances).
    """
    from trustser.experiment import attack_subset
    from trustser.metrics.safety import AttackSettings, WaveformClassifier, run_attack

    test = list(corpus.folds[0].test)
    chosen = [test[i] for i in attack_subset(test, n_clips)]
    waves = [corpus.waves[c] for c in chosen]
    classifier = WaveformClassifier(backbone, head)
    with torch.inference_mode():
        preds = [int(classifier(w[None]).argmax(-1)) for w in waves]
    sizes = [1, *dict.fromkeys(b for b in batch_sizes if b > 1)]

    def fgsm(batch_size: int):
        return run_attack(
            classifier,
            waves,
            preds,
            "fgsm",
            snrs,
            clip_ids=chosen,
            clean_predictions=preds,
            settings=AttackSettings(batch_size=batch_size),
        )

    def outcome(reports) -> list[tuple]:
        return [
            (r.clip_id, r.status, r.clean_pred, r.adv_pred, r.flipped) for rep in reports.values() for r in rep.records
        ]

    fgsm(max(sizes)) if len(waves) > 1 else None  # warm-up (allocator, kernels)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    outcomes: dict[int, list[tuple]] = {}
    for r in range(repeats):
        for b in sizes if r % 2 == 0 else sizes[::-1]:
            t0 = time.perf_counter()
            reports = fgsm(b)
            times[b].append(time.perf_counter() - t0)
            outcomes.setdefault(b, outcome(reports))
    per_clip = min(times[1])
    return {
        "clips": len(chosen),
        "audio_s": float(sum(w.numel() for w in waves) / 16000),
        "snrs": list(snrs),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "attack": "fgsm",
        "seconds": {str(b): t for b, t in times.items()},
        "per_clip_s": per_clip,
        "speedup": {str(b): per_clip / min(times[b]) for b in sizes if b > 1},
        "results_equal": all(outcomes[b] == outcomes[1] for b in sizes),
        "attacked": sum(r[1] == "attacked" for r in outcomes[1]) // len(snrs),
    }

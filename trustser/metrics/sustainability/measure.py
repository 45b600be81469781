"""Measured cost (slow, machine-dependent): CPU latency and peak resident memory of one inference.

CPU latency (:func:`measure_latency`) and peak memory (:func:`measure_peak_memory`, in a fresh spawned process) are
measured, not counted, and are kept out of the sustainability table because they are slow and machine-dependent.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Callable

import torch
from torch import Tensor

from trustser.backbones.base import Backbone, BackboneOutput
from trustser.head import EmotionHead
from trustser.metrics.sustainability.architecture import CLIP_SECONDS, _inputs, build_architecture


@dataclass(frozen=True)
class LatencyReport:
    backbone: str
    seconds: float  # clip length
    repeats: int
    warmup: int
    num_threads: int
    median_s: float
    min_s: float
    max_s: float

    @property
    def real_time_factor(self) -> float:
        return self.median_s / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "real_time_factor": self.real_time_factor}


@dataclass(frozen=True)
class MemoryReport:
    """Resident memory of a fresh process that builds the model, then runs one inference."""

    backbone: str
    seconds: float
    method: str  # "VmHWM after clear_refs" (Linux: exact peak during inference) or "ru_maxrss delta" (lower bound)
    rss_before_bytes: int  # after building the model and the input, before inference
    peak_rss_bytes: int  # peak resident set size during inference
    inference_peak_bytes: int  # peak_rss_bytes - rss_before_bytes: what the inference itself added at its peak

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inference(backbone: Backbone, head: EmotionHead) -> Callable[[Tensor, Tensor], Tensor]:
    def run(waves: Tensor, lengths: Tensor) -> Tensor:
        out: BackboneOutput = backbone(waves, lengths)
        return head(out.hidden, out.mask)

    return run


def measure_latency(
    name: str, *, repeats: int = 5, warmup: int = 1, seconds: float = CLIP_SECONDS, num_threads: int | None = None
) -> LatencyReport:
    """Wall-clock CPU time of one inference (front end + backbone + head) on one clip: the median over ``repeats``
    timed runs after ``warmup`` untimed ones. ``num_threads`` sets torch's intra-op threads for the measurement."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be ≥ 1 and warmup ≥ 0")
    backbone, head = build_architecture(name)
    run = _inference(backbone, head)
    waves, lengths = _inputs(seconds)
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                run(waves, lengths)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return LatencyReport(name, seconds, repeats, warmup, threads, statistics.median(times), min(times), max(times))


def _rss_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    import resource  # Unix only, like the measurement

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def _memory_child(name: str, seconds: float, queue: Any) -> None:
    try:
        backbone, head = build_architecture(name)
        run = _inference(backbone, head)
        waves, lengths = _inputs(seconds)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
            method, before = "VmHWM after clear_refs", _rss_status("VmRSS")
        except OSError:
            method, before = "ru_maxrss delta", _maxrss_bytes()
        with torch.inference_mode():
            run(waves, lengths)
        peak = _rss_status("VmHWM") if method.startswith("VmHWM") else _maxrss_bytes()
        queue.put(("ok", method, int(before), int(peak)))
    except BaseException as exc:  # report to the parent rather than die silently
        queue.put(("error", repr(exc), 0, 0))


def measure_peak_memory(name: str, *, seconds: float = CLIP_SECONDS, timeout_s: float = 600.0) -> MemoryReport:
    """Peak resident memory of one inference, measured in a fresh spawned process (so this process's history
    cannot mask it). On Linux the kernel's peak-RSS mark is reset after the model is built, making the figure the
    exact peak during inference; elsewhere it is the ``ru_maxrss`` increase, a lower bound when building the model
    peaked higher than inference does."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_memory_child, args=(name, seconds, queue))
    process.start()
    result = None
    deadline = time.monotonic() + timeout_s
    try:
        while result is None and time.monotonic() < deadline:
            try:
                result = queue.get(timeout=1.0)
            except Empty:
                if not process.is_alive():  # died without reporting (killed, out of memory)
                    break
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    if result is None:
        raise RuntimeError(f"peak-memory measurement of '{name}' gave no result (exit code {process.exitcode})")
    status, method, before, peak = result
    if status != "ok":
        raise RuntimeError(f"peak-memory measurement of '{name}' failed in its subprocess: {method}")
    return MemoryReport(name, seconds, method, before, peak, max(0, peak - before))

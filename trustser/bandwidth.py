"""Memory bandwidth of this machine, and the feature bytes a head training step reads: how far the step is from the
memory limit (``scripts/bench.py``, "head training step").

Conventions (decimal units, 1 GB = 1e9 bytes):

* ``measure_copy_bandwidth`` counts the traffic of a copy as **bytes read + bytes written**, i.e. ``2 * nbytes`` per
  copy (the STREAM "Copy" convention). The rate at which a copy *reads* memory is half of it: bytes copied per
  second.
* ``head_step_bytes`` counts the cached features a step must read, each byte **once**: the compulsory minimum.
  ``EmotionHead.forward_clips`` actually reads every clip twice (the forward's layer sum and the backward's
  layer-weight gradient), and also touches the small [frames, hidden] intermediates and the weights; those are not
  counted.

A step that mostly reads is therefore compared with the copy's read rate (``copy_gbps / 2``), not with its
read+write total.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch

GB = 1e9
DEFAULT_COPY_BYTES = 256 * 2**20  # far larger than any CPU cache: the copy streams from and to DRAM


def measure_copy_bandwidth(nbytes: int = DEFAULT_COPY_BYTES, repeats: int = 5) -> float:
    """Memory copy bandwidth in GB/s, counting read + write traffic (``2 * nbytes`` per copy); best of ``repeats``.

    One ``torch.Tensor.copy_`` of a float32 buffer of ``nbytes`` into another, with torch's current thread count
    (set it to the thread count of the code being compared). One untimed copy first touches every destination page,
    so page faults are not timed. Divide by 2 for the rate at which the copy reads memory (bytes copied per second).
    """
    if nbytes < 4 or repeats < 1:
        raise ValueError(f"need nbytes >= 4 and repeats >= 1, got {nbytes}, {repeats}")
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty(n, dtype=torch.float32)
    dst.copy_(src)  # warm-up: faults in the destination's pages
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best / GB


def _itemsize(dtype: Any) -> int:
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size()
    return np.dtype(dtype).itemsize


def head_step_bytes(clips: Sequence[Any], dtype: Any = None) -> int:
    """Bytes of cached features one training step reads: the sum over the batch's clips [layers, frames, hidden] of
    layers x frames x hidden x itemsize, each byte counted once.

    ``clips`` are the batch's feature tensors (or their shapes). ``dtype`` (torch or numpy) is the dtype they are
    held in memory as; None takes each tensor's own dtype (fp32 after ``FeatureStore.in_float32()``, fp16 for a
    store over the fp32 budget).
    """
    total = 0
    for clip in clips:
        shape = tuple(clip.shape) if hasattr(clip, "shape") else tuple(clip)
        if len(shape) != 3:
            raise ValueError(f"expected a clip [layers, frames, hidden], got shape {shape}")
        if dtype is None and not hasattr(clip, "dtype"):
            raise ValueError("a dtype is needed for clips given as shapes")
        total += math.prod(shape) * _itemsize(dtype if dtype is not None else clip.dtype)
    return total

"""The process's memory allocator, set for training on the CPU: freed memory stays in the process.

Why: a head training step allocates and frees tensors of tens of MB every step (the concatenated layer sum, its
gradient, the convolutions' activations). glibc's malloc serves large requests with fresh ``mmap`` pages and gives
them back to the system on ``free``, so every step page-faults (and zeroes) its whole working set again. Raising
the mmap threshold to glibc's maximum (32 MiB) and keeping freed memory (trim threshold 2 GiB, top pad 256 MiB)
lets the next step reuse it. Measured on the project's 2-core machine, idle, in interleaved runs of the
whisper_base head step (docs/benchmarks.md §7): 8–18 % faster; the numbers computed are bit-identical (only where
memory comes from changes). PyTorch's CPU performance guide gets the same effect by preloading jemalloc or
tcmalloc; ``mallopt`` does it without a new dependency. The cost: the process keeps up to the trim threshold of
freed memory instead of returning it, which a training process reuses anyway.

``TRUSTSER_MALLOC_TUNING=0`` leaves the allocator alone; on a C library without ``mallopt`` (not glibc) nothing is
changed either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, (2 << 30) - 1), (M_TOP_PAD, 256 << 20))
"""(parameter, value): glibc accepts an mmap threshold up to 32 MiB on 64-bit systems; the values are C ints."""

ENV = "TRUSTSER_MALLOC_TUNING"


def keep_freed_memory() -> str:
    """Set the allocator as the module docstring says; returns what was done, for logs and benchmark records."""
    if os.environ.get(ENV, "1").strip() == "0":
        return f"unchanged ({ENV}=0)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "unchanged (no mallopt in this C library)"
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS):
        return "unchanged (mallopt refused a setting)"
    return "mallopt: mmap threshold 32 MiB, trim threshold 2 GiB, top pad 256 MiB"

"""Sustainability: what one inference on a 6 s, 16 kHz clip costs — FLOPs, MACs, parameters, CPU time, memory.

Counting is done by calflops (``calflops.calculate_flops``) on one forward pass of front end → backbone → head, on
a random-init copy of the exact architecture (operation counts do not depend on weight values, so no checkpoint
is needed). Two figures come out of that one pass:

* The **complete count** (``flops``, ``macs``): every multiply-accumulate of matrix products (linear, convolution,
  matmul, GRU gates, attention scores QKᵀ and values AV) and, in ``flops``, element-wise work too (activations,
  norms, softmax, FFTs), split into front end (log-mel / fbank / wav2vec2's conv feature encoder), backbone and
  head. calflops counts torch functionals (``F.linear``, ``F.conv1d``, ``torch.matmul``, ...); it is blind to a
  few ops these models use, which :mod:`~trustser.metrics.sustainability.flops` counts inside calflops' own
  per-module accounting (:data:`~trustser.metrics.sustainability.flops.EXTRA_COUNTERS`:
  ``F.scaled_dot_product_attention``, ``torch.stft``/``torch.fft.rfft``, ``torch.mm``/``torch.bmm``/``@``, and
  GRUs). Python operators (``x * m``, ``x + pos``) and reductions are not counted, as in calflops.

* The **paper convention** (``paper_gmacs``), which reproduces the GFLOPs column of TrustSER's Table 4: the MACs of
  the ``nn.Linear``/``nn.Conv1d``/``nn.GRU`` modules whose own forward runs, for one 6 s clip (Whisper on its true
  300 positions). This is what the reference code measured: ``thop.profile`` (usc-sail/trust-ser,
  ``trustworthy/sustainability/sustainability.py``) counts with forward hooks chosen by exact module type — the
  MACs of Linear/Conv/GRU modules, plus norms worth < 0.1 % — so it never sees attention score products (``torch.matmul``/SDPA calls inside the attention module), the log-mel or
  fbank front end (plain functions), element-wise ops — nor projections whose weights are used functionally: WavLM's
  attention passes its q/k/v/out weights to ``F.multi_head_attention_forward`` instead of calling the Linear
  modules, which is why WavLM Base+ (33.2) reads ~8.5 G below wav2vec 2.0 Base (41.7) though the two transformers
  have the same shape. wav2vec 2.0's 41.7 includes the conv feature encoder (14.7 G) and the 128-tap positional
  convolution (1.4 G; a parametrised ``Conv1d`` subclass since transformers moved weight norm to
  ``torch.nn.utils.parametrizations``, which exact-type counters like thop skip but ``isinstance`` does not).
  Here the same rule is read off calflops' per-module attribution: calflops charges each functional call to the
  innermost module running, so the MACs charged to Linear/Conv/GRU modules are exactly those a module hook sees.
  The head is counted on the backbone's true frame count (the reference profiled it on a 50-frame dummy; the
  difference is ≤ 0.07 GMACs, TERA's 601 frames). All seven backbones land within :func:`paper_tolerance` of the
  table, |ours − paper| ≤ max(1 % of paper, 0.05): APC 2.50, TERA 12.87 (12.80 without the head), Whisper
  Tiny/Base/Small 2.33/6.00/26.16, wav2vec 2.0 41.69, WavLM Base+ 33.24.

The paper calls MACs "FLOPs"; here ``flops`` ≈ 2 × ``macs`` throughout, and the paper's figure is ``paper_gmacs``.

Counting a 95 M-parameter model takes seconds, so :func:`count_flops` caches each result on disk. CPU latency
(:func:`measure_latency`) and peak memory (:func:`measure_peak_memory`) are measured, not counted, and are kept out
of the table because they are slow and machine-dependent.

Submodules, one job each (this package re-exports their public names):

* :mod:`~trustser.metrics.sustainability.flops`: the generic calflops extension (:func:`count_module`, the extra
  counters, the per-part split), knowing nothing of backbones;
* :mod:`~trustser.metrics.sustainability.architecture`: the random-init backbone + head and the input clip;
* :mod:`~trustser.metrics.sustainability.counts`: per-backbone counts (:func:`count_spec`, :func:`count_flops`)
  and their on-disk cache;
* :mod:`~trustser.metrics.sustainability.table`: the table and the figures read off the counts;
* :mod:`~trustser.metrics.sustainability.measure`: measured latency and peak memory (in a spawned subprocess).

Use: ``rows = sustainability_table()`` (the seven paper backbones, then every other registered one;
``count_flops(name)`` for one), then
``measure_latency(name, repeats=5)`` and ``measure_peak_memory(name)`` where the machine matters.
"""

from __future__ import annotations

from trustser.metrics.sustainability.architecture import (
    CLIP_SECONDS as CLIP_SECONDS,
    HEAD_WIDTH as HEAD_WIDTH,
    NUM_CLASSES as NUM_CLASSES,
    SAMPLE_RATE as SAMPLE_RATE,
    build_architecture,
)
from trustser.metrics.sustainability.counts import (
    CONVENTION_VERSION as CONVENTION_VERSION,
    FlopsReport,
    count_flops,
    count_spec,
    flops_cache_path,
)
from trustser.metrics.sustainability.flops import (
    EXTRA_COUNTERS as EXTRA_COUNTERS,
    PAPER_MODULES as PAPER_MODULES,
    ModuleCounts,
    count_module,
)
from trustser.metrics.sustainability.measure import (
    LatencyReport,
    MemoryReport,
    measure_latency,
    measure_peak_memory,
)
from trustser.metrics.sustainability.table import (
    WHISPER_WINDOW_SECONDS as WHISPER_WINDOW_SECONDS,
    paper_backbones,
    paper_tolerance,
    sustainability_table,
    table_backbones,
    whisper_padding_flops_ratio,
)

__all__ = [
    "FlopsReport",
    "LatencyReport",
    "MemoryReport",
    "ModuleCounts",
    "build_architecture",
    "count_flops",
    "count_module",
    "count_spec",
    "flops_cache_path",
    "measure_latency",
    "measure_peak_memory",
    "paper_backbones",
    "paper_tolerance",
    "sustainability_table",
    "table_backbones",
    "whisper_padding_flops_ratio",
]

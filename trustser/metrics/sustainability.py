"""Sustainability: what one inference on a 6 s, 16 kHz clip costs — FLOPs, MACs, parameters, CPU time, memory.

Counting is done by calflops (``calflops.calculate_flops``) on one forward pass of front end → backbone → head, on
a random-init copy of the exact architecture (operation counts do not depend on weight values, so no checkpoint
is needed). Two figures come out of that one pass:

* The **complete count** (``flops``, ``macs``): every multiply-accumulate of matrix products (linear, convolution,
  matmul, GRU gates, attention scores QKᵀ and values AV) and, in ``flops``, element-wise work too (activations,
  norms, softmax, FFTs), split into front end (log-mel / fbank / wav2vec2's conv feature encoder), backbone and
  head. calflops counts torch functionals (``F.linear``, ``F.conv1d``, ``torch.matmul``, ...); it is blind to a
  few ops these models use, which this module counts inside calflops' own per-module accounting
  (:data:`EXTRA_COUNTERS`): ``F.scaled_dot_product_attention`` (transformers' default attention and the inside of
  ``F.multi_head_attention_forward``), ``torch.stft``/``torch.fft.rfft``, ``torch.mm``/``torch.bmm``/``@``, and
  GRUs — calflops' RNN hook counts no MACs and crashes on the packed sequences of s3prl's APC, so GRUs are left to
  :func:`_gru_hook`, which applies calflops' own per-step GRU formula to the unpacked token count. Python
  operators (``x * m``, ``x + pos``) and reductions are not counted, as in calflops.

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

Counting a 95 M-parameter model takes seconds, so :func:`count_flops` caches each result as JSON under
``trustser.paths.cache_dir()/flops/<backbone>-<hash>.json``, keyed by the architecture config, clip length, head
shape, counting convention and library versions. CPU latency (:func:`measure_latency`) and peak memory
(:func:`measure_peak_memory`) are measured, not counted, and are kept out of the table because they are slow and
machine-dependent.

Use: ``rows = sustainability_table()`` (the seven paper backbones, then every other registered one;
``count_flops(name)`` for one), then
``measure_latency(name, repeats=5)`` and ``measure_peak_memory(name)`` where the machine matters.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version as _dist_version
from pathlib import Path
from queue import Empty
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from trustser.backbones.base import Backbone, BackboneOutput, BackboneSpec
from trustser.backbones.registry import BACKBONES, get_backbone_spec
from trustser.head import EmotionHead
from trustser.paths import write_atomically

SAMPLE_RATE = 16_000
CLIP_SECONDS = 6.0
WHISPER_WINDOW_SECONDS = 30.0
NUM_CLASSES = 4
HEAD_WIDTH = 128
CONVENTION_VERSION = 1  # bump when what is counted changes: it keys the on-disk cache

PAPER_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.GRU, nn.LSTM, nn.RNN)
"""Module types whose MACs make up the paper convention (what thop's module hooks count in these models)."""

# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FlopsReport:
    """One inference on ``seconds`` of 16 kHz audio. Counts are plain numbers (FLOPs, MACs), not giga."""

    backbone: str
    seconds: float
    frames: int  # frames the head sees (backbone output length)
    params: int  # backbone + head
    backbone_params: int  # front end included
    head_params: int
    flops: int  # complete: front end + backbone + head, attention products included
    macs: int
    front_end_flops: int
    front_end_macs: int
    backbone_flops: int
    backbone_macs: int
    head_flops: int
    head_macs: int
    paper_gmacs: float  # paper convention (see module docstring), in G, front end + backbone + head
    paper_front_end_macs: int
    paper_backbone_macs: int
    paper_head_macs: int
    extra_flops: int  # the part of ``flops`` counted by EXTRA_COUNTERS/_gru_hook rather than calflops itself
    extra_macs: int
    paper_table_gflops: float | None  # the method's Table 4 figure, for comparison
    counter: str  # e.g. "calflops 0.3.2"

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModuleCounts:
    """calflops' count of one module call, with the paper-convention MACs read off its per-module attribution."""

    flops: int
    macs: int
    paper_macs: int
    extra_flops: int
    extra_macs: int
    parts: dict[str, tuple[int, int, int]]  # part name → (flops, macs, paper_macs)


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


# ---------------------------------------------------------------------------------------------------------------
# Counting what calflops cannot see, inside calflops' own per-module accounting


def _fft_flops(n: int) -> float:
    """The usual estimate for a real-input FFT of size n: 2.5·n·log2(n) (half the complex 5·n·log2(n))."""
    return 2.5 * n * math.log2(n) if n > 1 else 0.0


def _sdpa_cost(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    """QKᵀ and AV: batch·L·S·(E + Ev) MACs; FLOPs 2·MACs plus the softmax, as calflops counts the eager path."""
    q, k, v = (args[i] if len(args) > i else kwargs[key] for i, key in enumerate(("query", "key", "value")))
    batch = math.prod(q.shape[:-2])
    length, source = q.shape[-2], k.shape[-2]
    macs = batch * length * source * (q.shape[-1] + v.shape[-1])
    return 2 * macs + batch * length * source, macs


def _stft_cost(args: tuple, kwargs: dict, out: Tensor) -> tuple[int, int]:
    """Window multiply + one real FFT per frame (``torch._VF.stft``: input, n_fft, ...); FLOPs only."""
    n_fft = int(args[1])
    spec = torch.view_as_real(out) if out.is_complex() else out
    frames = spec.shape[-2]
    signals = math.prod(spec.shape[:-3])
    return int(signals * frames * (n_fft + _fft_flops(n_fft))), 0


def _rfft_cost(args: tuple, kwargs: dict, out: Tensor) -> tuple[int, int]:
    x = args[0]
    dim = kwargs.get("dim", args[2] if len(args) > 2 else -1)
    n = kwargs.get("n", args[1] if len(args) > 1 else None) or x.shape[dim]
    return int(x.numel() // x.shape[dim] * _fft_flops(n)), 0


def _matmul_cost(args: tuple, kwargs: dict, out: Tensor) -> tuple[int, int]:
    """torch.mm, torch.bmm and ``@``: one MAC per output element per contracted element."""
    macs = out.numel() * args[0].shape[-1]
    return 2 * macs, macs


EXTRA_COUNTERS: tuple[tuple[Any, str, Callable[[tuple, dict, Any], tuple[int, int]]], ...] = (
    (torch.nn.functional, "scaled_dot_product_attention", _sdpa_cost),
    (torch._VF, "stft", _stft_cost),  # below torch.stft, so partial(torch.stft, ...) bound at import is seen too
    (torch.fft, "rfft", _rfft_cost),
    (torch, "mm", _matmul_cost),
    (torch, "bmm", _matmul_cost),
    (torch.Tensor, "__matmul__", _matmul_cost),
)
"""(owner, attribute, cost) for ops calflops 0.3.2 does not patch; their counts land in calflops' per-module lists."""


@contextlib.contextmanager
def _extra_counters(totals: list[int]):
    """Patch EXTRA_COUNTERS so each call is charged to the module calflops is accounting for at that moment."""
    from calflops import calculate_pipline

    saved = []
    for owner, name, cost in EXTRA_COUNTERS:
        had_own = name in vars(owner)
        original = getattr(owner, name)
        saved.append((owner, name, original, had_own))

        def counted(*args, _original=original, _cost=cost, _name=name, **kwargs):
            out = _original(*args, **kwargs)
            flops, macs = _cost(args, kwargs, out)
            if calculate_pipline.module_flop_count:
                calculate_pipline.module_flop_count[-1].append((_name, flops))
                totals[0] += flops
            if calculate_pipline.module_mac_count and macs:
                calculate_pipline.module_mac_count[-1].append((_name, macs))
                totals[1] += macs
            return out

        setattr(owner, name, counted)
    try:
        yield
    finally:
        for owner, name, original, had_own in reversed(saved):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # e.g. torch._VF resolves stft through its module __getattr__


def _rnn_per_token(module: nn.RNNBase) -> tuple[int, int]:
    """(FLOPs, MACs) per input frame: calflops' own per-step formula (``_rnn_flops``), and the gate matmul MACs."""
    from calflops.pytorch_ops import _rnn_flops

    flops = macs = 0
    directions = 2 if module.bidirectional else 1
    for layer in range(module.num_layers):
        for suffix in ("", "_reverse")[:directions]:
            w_ih = getattr(module, f"weight_ih_l{layer}{suffix}")
            w_hh = getattr(module, f"weight_hh_l{layer}{suffix}")
            flops = _rnn_flops(flops, module, w_ih, w_hh, w_ih.shape[1])
            if module.bias:
                flops += 2 * w_ih.shape[0]
            macs += w_ih.numel() + w_hh.numel()
    return flops, macs


def _gru_hook(totals: list[int]):
    """Forward hook for RNN modules (left out of calflops' hooks): counts PackedSequence inputs by their frames."""
    from torch.nn.utils.rnn import PackedSequence

    def hook(module: nn.RNNBase, inputs: tuple, output: Any) -> None:
        x = inputs[0]
        if isinstance(x, PackedSequence):
            tokens = x.data.shape[0]  # every valid frame of every sequence, once
        else:
            tokens = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
        flops, macs = _rnn_per_token(module)
        module.__flops__ += flops * tokens
        module.__macs__ += macs * tokens
        totals[0] += flops * tokens
        totals[1] += macs * tokens

    return hook


# ---------------------------------------------------------------------------------------------------------------
# One calflops pass over named parts of a model


class _Probe(nn.Module):
    """Runs ``run(*args)`` and, before returning, snapshots calflops' per-module counts.

    ``calculate_flops`` deletes its per-module attributes before it returns; every submodule's post-hook has fired
    by the end of this forward, so the snapshot holds the complete attribution of everything below the probe.
    """

    def __init__(self, run: Callable[..., Any], parts: dict[str, nn.Module]) -> None:
        super().__init__()
        # Register each part once: a part nested in another (the conv encoder inside wav2vec2) must not become a
        # second child, or calflops' recursive total would count it twice.
        nested = {id(m) for p in parts.values() for m in p.modules() if m is not p}
        self.children_ = nn.ModuleList([p for p in parts.values() if id(p) not in nested])
        self.parts = dict(parts)  # a plain dict: not registered as submodules
        self.__dict__["_run"] = run  # likewise: a module passed as ``run`` must not become a second child
        self.snapshot: dict[str, tuple[int, int, int]] = {}

    def forward(self, *args: Any) -> Any:
        out = self._run(*args)
        seen: set[int] = set()
        for name, part in self.parts.items():
            self.snapshot[name] = _subtree_counts(part, seen)
        return out


def _subtree_counts(root: nn.Module, seen: set[int]) -> tuple[int, int, int]:
    """(FLOPs, MACs, paper MACs) charged to ``root`` and its submodules, skipping modules already counted."""
    flops = macs = paper = 0
    for module in root.modules():
        if id(module) in seen:
            continue
        seen.add(id(module))
        flops += getattr(module, "__flops__", 0)
        m = getattr(module, "__macs__", 0)
        macs += m
        if isinstance(module, PAPER_MODULES):
            paper += m
    return flops, macs, paper


def count_module(run: Callable[..., Any], parts: dict[str, nn.Module], *args: Tensor) -> ModuleCounts:
    """Count ``run(*args)`` with calflops; ``parts`` (name → module, first claim wins) splits the count.

    Operations charged to no part (code in ``run`` itself, outside any module) go to the part named ``"rest"``.
    """
    import calflops

    from calflops import calculate_pipline, pytorch_ops

    probe = _Probe(run, parts)
    totals = [0, 0]
    rnn_handles = [m.register_forward_hook(_gru_hook(totals)) for m in probe.modules() if isinstance(m, nn.RNNBase)]
    linear = torch.nn.functional.linear
    try:
        with _extra_counters(totals), torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flops, macs, _ = calflops.calculate_flops(
                probe, args=list(args), print_results=False, print_detailed=False, output_as_string=False,
                ignore_modules=[nn.GRU, nn.LSTM, nn.RNN],
            )
    except BaseException:
        # calculate_flops restores torch's functions only when the forward succeeds: undo its patches here.
        if torch.nn.functional.linear is not linear:
            pytorch_ops._reload_functionals(calculate_pipline.old_functions)
            pytorch_ops._reload_tensor_methods(calculate_pipline.old_functions)
        calculate_pipline.module_flop_count.clear()
        calculate_pipline.module_mac_count.clear()
        raise
    finally:
        for handle in rnn_handles:
            handle.remove()
    parts_counts = dict(probe.snapshot)
    claimed = [sum(c[i] for c in parts_counts.values()) for i in range(3)]
    parts_counts["rest"] = (int(flops) - claimed[0], int(macs) - claimed[1], 0)
    return ModuleCounts(
        flops=int(flops), macs=int(macs), paper_macs=claimed[2], extra_flops=totals[0], extra_macs=totals[1],
        parts=parts_counts,
    )


# ---------------------------------------------------------------------------------------------------------------
# Backbones


def build_architecture(name: str | BackboneSpec, seed: int = 0) -> tuple[Backbone, EmotionHead]:
    """The backbone's exact architecture with random weights (quietly: no warning, s3prl's prints swallowed), and
    the method's head sized for it. Operation counts and CPU cost do not depend on the weight values."""
    spec = name if isinstance(name, BackboneSpec) else get_backbone_spec(name)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        backbone = spec.backbone_family.build(spec, None)
        head = EmotionHead(spec.num_hidden_states, spec.hidden_size, NUM_CLASSES, HEAD_WIDTH)
    backbone.eval()
    head.eval()
    for p in [*backbone.parameters(), *head.parameters()]:
        p.requires_grad_(False)
    return backbone, head


def _inputs(seconds: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    samples = int(round(seconds * SAMPLE_RATE))
    generator = torch.Generator().manual_seed(seed)
    waves = 0.1 * torch.randn(1, samples, generator=generator)
    return waves, torch.tensor([samples])


def _inference(backbone: Backbone, head: EmotionHead) -> Callable[[Tensor, Tensor], Tensor]:
    def run(waves: Tensor, lengths: Tensor) -> Tensor:
        out: BackboneOutput = backbone(waves, lengths)
        return head(out.hidden, out.mask)

    return run


def _count_backbone(name: str, seconds: float) -> FlopsReport:
    return count_spec(get_backbone_spec(name), seconds)


def count_spec(spec: BackboneSpec, seconds: float = CLIP_SECONDS) -> FlopsReport:
    """:func:`count_flops` of any spec, registered or not (e.g. a family's tiny spec), uncached. The front end is
    the part the backbone's family names (``BackboneFamily.front_end``)."""
    backbone, head = build_architecture(spec)
    waves, lengths = _inputs(seconds)
    split = spec.backbone_family.front_end(backbone)

    def run(w: Tensor, n: Tensor) -> Tensor:
        out = split.forward(w, n)
        return head(out.hidden, out.mask)

    parts: dict[str, nn.Module] = {"head": head, "front_end": split.module, "backbone": backbone}
    counts = count_module(run, parts, waves, lengths)
    # Code in run itself (Whisper's conv-stem GELUs and positional add) belongs to the backbone.
    fe, bb, hd, rest = (counts.parts[k] for k in ("front_end", "backbone", "head", "rest"))
    bb = tuple(a + b for a, b in zip(bb, rest))
    backbone_params = sum(p.numel() for p in backbone.parameters())
    head_params = sum(p.numel() for p in head.parameters())
    paper = spec.paper.gflops_6s if spec.paper else None
    return FlopsReport(
        backbone=spec.name, seconds=seconds, frames=int(backbone.output_lengths(lengths)[0]),
        params=backbone_params + head_params, backbone_params=backbone_params, head_params=head_params,
        flops=counts.flops, macs=counts.macs,
        front_end_flops=fe[0], front_end_macs=fe[1], backbone_flops=bb[0], backbone_macs=bb[1],
        head_flops=hd[0], head_macs=hd[1],
        paper_gmacs=counts.paper_macs / 1e9,
        paper_front_end_macs=fe[2], paper_backbone_macs=bb[2], paper_head_macs=hd[2],
        extra_flops=counts.extra_flops, extra_macs=counts.extra_macs,
        paper_table_gflops=paper, counter=f"calflops {_dist_version('calflops')}",
    )


def _cache_key(name: str, seconds: float) -> str:
    spec = get_backbone_spec(name)
    key = {
        "backbone": name, "config": spec.config, "front_end": spec.front_end, "seconds": seconds,
        "sample_rate": SAMPLE_RATE, "head": [spec.num_hidden_states, spec.hidden_size, NUM_CLASSES, HEAD_WIDTH],
        "convention": CONVENTION_VERSION,
        "versions": {d: _dist_version(d) for d in ("calflops", "torch", "transformers", "s3prl")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flops_cache_path(name: str, seconds: float = CLIP_SECONDS, cache: str | Path | None = None) -> Path:
    from trustser.paths import cache_dir

    return cache_dir(cache) / "flops" / f"{name}-{_cache_key(name, seconds)}.json"


def count_flops(name: str, seconds: float = CLIP_SECONDS, *, use_cache: bool = True,
                cache: str | Path | None = None) -> FlopsReport:
    """FLOPs/MACs/parameters of one inference (front end + backbone + head) on ``seconds`` of audio; cached."""
    path = flops_cache_path(name, seconds, cache)
    if use_cache and path.is_file():
        data = json.loads(path.read_text())
        if set(data) == {f.name for f in fields(FlopsReport)}:
            return FlopsReport(**data)
    report = _count_backbone(name, seconds)
    if use_cache:
        text = json.dumps(report.as_dict(), indent=1)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text))  # parallel workers count the same backbone
    return report


def paper_backbones() -> list[str]:
    """The seven backbones of the method's tables, in registry order."""
    return [name for name, spec in BACKBONES.items() if spec.paper is not None]


def table_backbones() -> list[str]:
    """What :func:`sustainability_table` lists by default: the paper's seven first (Table 4's rows), then every
    other registered backbone in registry order (whisper_tiny_en, hubert_base, ...)."""
    paper = paper_backbones()
    return paper + [name for name in BACKBONES if name not in paper]


def sustainability_table(backbones: Iterable[str] | None = None, seconds: float = CLIP_SECONDS, *,
                         use_cache: bool = True) -> list[dict[str, Any]]:
    """One row per backbone (default: :func:`table_backbones`): ``backbone``, ``params``, ``paper_gmacs``,
    ``flops``, ``macs``, the front end / backbone / head split, and the paper's figure (``paper_table_gflops``,
    None for backbones the paper did not measure). No logging, no tracking."""
    names = list(backbones) if backbones is not None else table_backbones()
    return [count_flops(name, seconds, use_cache=use_cache).as_dict() for name in names]


def paper_tolerance(paper_gflops: float) -> float:
    """How far ``paper_gmacs`` may sit from the table: 1 % of it, or the table's rounding to 0.1 if larger."""
    return max(0.01 * paper_gflops, 0.05)


def whisper_padding_flops_ratio(name: str = "whisper_tiny", seconds: float = CLIP_SECONDS, *,
                                use_cache: bool = True) -> float:
    """FLOPs of Whisper's encoder on a clip zero-padded to its 30 s window over FLOPs on the true length.

    Linear layers scale with the 5× longer sequence and attention products with its square, so the ratio exceeds
    5: what running Whisper as it was trained (always 30 s) wastes on a 6 s clip.
    """
    if get_backbone_spec(name).family != "whisper":
        raise ValueError(f"'{name}' is not a Whisper backbone")
    padded = count_flops(name, WHISPER_WINDOW_SECONDS, use_cache=use_cache)
    true = count_flops(name, seconds, use_cache=use_cache)
    return padded.flops / true.flops


# ---------------------------------------------------------------------------------------------------------------
# Measured cost (slow, machine-dependent)


def measure_latency(name: str, *, repeats: int = 5, warmup: int = 1, seconds: float = CLIP_SECONDS,
                    num_threads: int | None = None) -> LatencyReport:
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


__all__ = [
    "FlopsReport", "LatencyReport", "MemoryReport", "ModuleCounts", "build_architecture", "count_flops",
    "count_module", "count_spec", "flops_cache_path", "measure_latency", "measure_peak_memory", "paper_backbones",
    "paper_tolerance", "sustainability_table", "table_backbones", "whisper_padding_flops_ratio",
]

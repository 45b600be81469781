"""A generic extension of calflops: one counting pass over named parts of any module, with the ops calflops misses.

:func:`count_module` counts one call with ``calflops.calculate_flops`` and splits the count over named parts (front
end, backbone, head, ...). calflops counts torch functionals (``F.linear``, ``F.conv1d``, ``torch.matmul``, ...); it
is blind to a few ops these models use, which this module counts inside calflops' own per-module accounting
(:data:`EXTRA_COUNTERS`): ``F.scaled_dot_product_attention`` (transformers' default attention and the inside of
``F.multi_head_attention_forward``), ``torch.stft``/``torch.fft.rfft``, ``torch.mm``/``torch.bmm``/``@``, and GRUs —
calflops' RNN hook counts no MACs and crashes on the packed sequences of s3prl's APC, so GRUs are left to
:func:`_gru_hook`, which applies calflops' own per-step GRU formula to the unpacked token count. Python operators
(``x * m``, ``x + pos``) and reductions are not counted, as in calflops.

The paper convention (``paper_macs``) is read off calflops' per-module attribution: calflops charges each functional
call to the innermost module running, so the MACs charged to :data:`PAPER_MODULES` (Linear/Conv/GRU) modules are
exactly those a module hook (thop's) sees.

Nothing here knows about backbones: :mod:`trustser.metrics.sustainability.counts` applies it to them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

PAPER_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.GRU, nn.LSTM, nn.RNN)
"""Module types whose MACs make up the paper convention (what thop's module hooks count in these models)."""


@dataclass(frozen=True)
class ModuleCounts:
    """calflops' count of one module call, with the paper-convention MACs read off its per-module attribution."""

    flops: int
    macs: int
    paper_macs: int
    extra_flops: int
    extra_macs: int
    parts: dict[str, tuple[int, int, int]]  # part name → (flops, macs, paper_macs)


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
                probe,
                args=list(args),
                print_results=False,
                print_detailed=False,
                output_as_string=False,
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
        flops=int(flops),
        macs=int(macs),
        paper_macs=claimed[2],
        extra_flops=totals[0],
        extra_macs=totals[1],
        parts=parts_counts,
    )

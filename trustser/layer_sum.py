"""The head's per-(layer, dimension) weighted layer sum over a batch of unpadded clips, as one autograd operation.

``scaled_layer_sum(clips, scale)`` gives, for every frame of every clip in order, Σ_l scale[l] ⊙ x_l: the
standardised weighted layer sum of ``EmotionHead.forward_clips`` once its standardisation is folded into one
[L, H] scale (the offset goes into the first projection's bias). Imports only torch.

Why an operation of its own: the broadcast formulation ``(x * scale[:, None, :]).sum(0)`` writes an [L, T, H]
product per clip and reads it back in the forward, and autograd does the same again in the backward (plus a
per-clip slice of the scale and its gradient). On Whisper Base's EmoDB features (64 clips, 11,266 frames, 7 × 512,
fp32, 2 threads) that made the layer sum ~35 % of a training step, though it is ~1.5 % of the step's arithmetic.
Here the forward accumulates layer by layer into the output rows (``addcmul_``: each cached frame read once, no
temporary of the features' size for fp32 features, no concatenation), and the backward reads each clip once more
for the scale's gradient — the two reads of the features every step needs. (The backward's product is one clip's
[L, T_i, H] at a time, freed before the next clip's: measured faster than a loop over layers, 14.5 against 22.7 ms
per batch. fp16 features, from an out-of-core store, are widened one clip at a time.) Measured on that step:
forward 62 → 14 ms, and the whole step ~20 % faster (docs/benchmarks.md §7). The sums run in another order than the broadcast's, so results
equal the broadcast formulation to float rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def _rows(clips: Sequence[Tensor]) -> list[tuple[int, int]]:
    """Each clip's [start, stop) rows in the concatenated output."""
    out, start = [], 0
    for clip in clips:
        out.append((start, start + clip.shape[1]))
        start += clip.shape[1]
    return out


class _ScaledLayerSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, scale: Tensor, *clips: Tensor) -> Tensor:  # type: ignore[override]
        rows = _rows(clips)
        out = scale.new_empty(rows[-1][1], scale.shape[1])
        for (start, stop), clip in zip(rows, clips):
            x = clip.to(scale.dtype)  # a no-op for fp32 features; fp16 ones (out-of-core store) are widened per clip
            target = out[start:stop]
            torch.mul(x[0], scale[0], out=target)
            for layer in range(1, x.shape[0]):
                target.addcmul_(x[layer], scale[layer])
        ctx.save_for_backward(scale, *clips)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        scale, *clips = ctx.saved_tensors
        grad_scale = torch.zeros_like(scale) if ctx.needs_input_grad[0] else None
        grad_clips: list[Tensor | None] = []
        for i, ((start, stop), clip) in enumerate(zip(ctx.rows, clips)):
            g = grad[start:stop]
            if grad_scale is not None:
                grad_scale += (clip.to(scale.dtype) * g).sum(1)
            needs = ctx.needs_input_grad[i + 1]
            grad_clips.append((scale[:, None, :] * g).to(clip.dtype) if needs else None)
        return (grad_scale, *grad_clips)


def scaled_layer_sum(clips: Sequence[Tensor], scale: Tensor) -> Tensor:
    """[Σ T_i, H]: Σ_l scale[l] ⊙ clip[l] for each clip [L, T_i, H] (any float dtype), rows in clip order, in
    ``scale``'s dtype. Differentiable w.r.t. ``scale`` [L, H] and any clip that requires grad."""
    if not clips:
        raise ValueError("scaled_layer_sum needs at least one clip")
    layers, hidden = scale.shape
    for clip in clips:
        if clip.dim() != 3 or clip.shape[0] != layers or clip.shape[2] != hidden:
            raise ValueError(f"clips must be [{layers}, frames, {hidden}] to match the scale, got {tuple(clip.shape)}")
    return _ScaledLayerSum.apply(scale, *clips)

"""Per-layer, per-dimension feature standardisation, fitted on the training clips of a fold only.

Why: the raw hidden states of several backbones are badly conditioned (Whisper's have dimensions whose scale
differs by orders of magnitude), and a head trained on them with the method's Adam at lr 5e-4 needs hundreds of
epochs to reach what a standardised linear probe reaches at once. Standardising each layer's each dimension with
the mean and standard deviation of the *training* frames (never validation or test: no leakage) makes the same
head converge in tens of epochs. The statistics travel with the head (buffers of ``EmotionHead``), so a saved or
deployed model standardises exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

MIN_STD = 1e-5
"""Dimensions whose training frames hardly vary (constant channels) are divided by this floor instead of ~0."""


@dataclass(frozen=True)
class Standardization:
    """mean and std of every layer's every dimension [L, H], over the frames of the clips they were fitted on."""

    mean: Tensor
    std: Tensor
    n_clips: int
    n_frames: int

    @property
    def inv_std(self) -> Tensor:
        return 1.0 / self.std.clamp(min=MIN_STD)


def fit_standardization(features: Mapping[str, Tensor], clip_ids: Sequence[str]) -> Standardization:
    """Frame-weighted mean and (population) std per layer and dimension over ``clip_ids`` only.

    Accumulates sums in float64 one clip at a time, so it needs no copy of the features and no precision is lost
    on long corpora.
    """
    if not clip_ids:
        raise ValueError("cannot fit feature standardisation on an empty set of clips")
    first = features[clip_ids[0]]
    total = torch.zeros(first.shape[0], first.shape[2], dtype=torch.float64)
    square = torch.zeros_like(total)
    frames = 0
    for clip_id in clip_ids:
        x = features[clip_id].to(torch.float64)  # [L, T, H]
        total += x.sum(1)
        square += (x * x).sum(1)
        frames += x.shape[1]
    mean = total / frames
    var = (square / frames - mean * mean).clamp(min=0.0)
    return Standardization(mean.float(), var.sqrt().float(), len(clip_ids), frames)

"""The backbone contract: raw 16 kHz waveforms in, every layer's hidden states and a validity mask out.

Every backbone's forward is differentiable from the waveform (the safety metric attacks the raw audio through the
whole front end) and deterministic per clip: a clip's features never depend on what else is in the batch, which is
what lets the feature cache key on the clip alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BackboneOutput:
    """``hidden``: [batch, layers, frames, hidden]; ``mask``: [batch, frames], True where the frame is real."""

    hidden: Tensor
    mask: Tensor


@dataclass(frozen=True)
class PaperFigures:
    """The method's Table 2/4 figures for a backbone, kept beside it so tests and reports can compare."""

    layers: int
    hidden_size: int
    params_m: float
    gflops_6s: float


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry. ``config`` is the published architecture config, kept as data."""

    name: str
    family: str  # key into FAMILIES (how to build and run it)
    description: str
    config: dict[str, Any]
    num_layers: int  # encoder layers; the hidden states returned are num_layers + 1 (input embedding included)
    hidden_size: int
    paper: PaperFigures | None = None
    hf_repo_id: str | None = None  # the published repo: local HF cache first, else downloaded (unless offline)
    hf_cache_file: str | None = None  # for s3prl checkpoints hosted as a single file in an HF repo
    s3prl_url: str | None = None  # what s3prl's hub downloads; its download cache is looked up offline
    packaged: str | None = None  # name in trustser.backbones.packaged_whisper.PACKAGES
    front_end: dict[str, Any] = field(default_factory=dict)  # e.g. waveform normalisation flags
    includes_input_layer: bool = True  # APC exposes no input-embedding state, the transformers models do

    @property
    def num_hidden_states(self) -> int:
        return self.num_layers + int(self.includes_input_layer)


class Backbone(nn.Module):
    """Base class: subclasses implement ``forward(waves, lengths)`` and ``output_lengths(lengths)``."""

    spec: BackboneSpec

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def output_lengths(self, lengths: Tensor) -> Tensor:  # pragma: no cover - interface
        """Number of valid output frames for inputs of ``lengths`` samples."""
        raise NotImplementedError

    def encoder_layers(self) -> nn.ModuleList:  # pragma: no cover - interface
        """The encoder's layer stack, for fine-tuning the top k layers."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


Builder = Callable[[BackboneSpec, "Any"], Backbone]

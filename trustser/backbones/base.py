"""The backbone contract: raw 16 kHz waveforms in, every layer's hidden states and a validity mask out.

Every backbone's forward is differentiable from the waveform (the safety metric attacks the raw audio through the
whole front end) and deterministic per clip: a clip's features never depend on what else is in the batch, which is
what lets the feature cache key on the clip alone.

A :class:`BackboneFamily` (one per architecture family: Whisper, transformers SSL models, s3prl models) holds
everything else the suite needs to know about a backbone: how to build it and load its weights, which part is its
front end (the FLOPs split), which modules are dropout-like (attacks in train mode) and how to fine-tune its top
layers. ``spec.backbone_family`` finds it; ``tests/test_backbone_contract.py`` checks every registered backbone
against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from trustser.backbones.top_layers import TopLayers


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
    family: str  # key into trustser.backbones.families.FAMILIES: "whisper", "ssl" or "s3prl"
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

    @property
    def backbone_family(self) -> "BackboneFamily":
        """The family object that builds, splits, attacks and fine-tunes this backbone."""
        from trustser.backbones.families import get_family

        return get_family(self.family)


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


def tiny_spec(spec: BackboneSpec, config: dict[str, Any], num_layers: int, hidden_size: int) -> BackboneSpec:
    """``spec`` at toy size (what ``BackboneFamily.tiny`` returns): random weights only, so no weight source is kept
    (a real checkpoint of the full-size architecture would not fit it)."""
    return dataclasses.replace(
        spec,
        name=f"{spec.name}_tiny",
        config=config,
        num_layers=num_layers,
        hidden_size=hidden_size,
        paper=None,
        hf_repo_id=None,
        hf_cache_file=None,
        s3prl_url=None,
        packaged=None,
    )


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


Builder = Callable[[BackboneSpec, "Any"], Backbone]


class FunctionModule(nn.Module):
    """A plain function as a module, so per-module counters (calflops) charge its ops to it (Whisper's log-mel)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self._fn = fn

    def forward(self, *args: Any) -> Any:
        return self._fn(*args)


@dataclass(frozen=True)
class FrontEndSplit:
    """A backbone's front end (waveform → frames) as a module of its own, and a forward that runs through it.

    Counting FLOPs charges the ops of ``module`` to the front end and the rest of ``forward`` to the backbone;
    ``forward(waves, lengths)`` returns exactly what the backbone's own forward returns.
    """

    module: nn.Module
    forward: Callable[[Tensor, Tensor], BackboneOutput]


class BackboneFamily:
    """Everything about one architecture family, beside its builder. Subclasses: one per family module
    (``whisper.WhisperFamily``, ``hf_ssl.TransformersSslFamily``, ``s3prl_models.S3prlFamily``), registered in
    ``trustser.backbones.families.FAMILIES``. Adding a backbone of a known family is one config file and one
    ``register_backbone`` call; nothing here changes.
    """

    name: str
    weights_are_a_file: bool = False
    """``--weights`` names a checkpoint file (s3prl) rather than a model directory."""
    reads_ct2: bool = False
    """A ``--weights`` directory may be a CTranslate2 (faster-whisper) export, converted once."""

    def build(self, spec: BackboneSpec, weights: Path | None) -> Backbone:  # pragma: no cover - interface
        """The backbone in eval mode: loaded from ``weights`` (a directory or checkpoint file), or with random
        weights in the spec's published architecture when ``weights`` is None (seeded by the caller)."""
        raise NotImplementedError

    def front_end(self, backbone: Backbone) -> FrontEndSplit:  # pragma: no cover - interface
        """The part that turns the waveform into frames (log-mel, fbank, conv feature encoder)."""
        raise NotImplementedError

    def dropout_like(self, spec: BackboneSpec) -> frozenset[str]:
        """Class names of modules whose only use of ``self.training`` is functional dropout (``F.dropout(...,
        training=self.training)``): what attacks in train mode switch on besides ``nn.Dropout``. Their parents stay
        in eval on purpose (SpecAugment, LayerDrop and requires-grad switches train differently, not noisier)."""
        return frozenset()

    def top_layers(self, backbone: Backbone, k: int) -> "TopLayers":  # pragma: no cover - interface
        """Trainable copies of the top ``k`` encoder layers that reproduce the backbone's top ``k`` states from
        the cached state below them (``trustser.backbones.top_layers.TopLayers``); ``k`` is already checked.
        An encoder variant the family cannot reproduce raises ConfigError."""
        raise NotImplementedError

    def tiny(self, spec: BackboneSpec) -> BackboneSpec:  # pragma: no cover - interface
        """The same architecture at toy size (two or three narrow layers), random weights only: for the contract
        tests and quick CPU checks."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"

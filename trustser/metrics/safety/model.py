"""The model under attack: backbone + head as one classifier from waveforms to logits (:class:`WaveformClassifier`),
the padded batches it takes and its eval-mode predictions. Imports nothing from the package.

Model mode. Eval by default. ``train_mode=True`` reproduces the reference code, which took the gradient with the
model in train mode, but only its dropout: :meth:`WaveformClassifier.train` switches on dropout modules and the
transformers modules whose sole train-time behaviour is functional dropout, never BatchNorm statistics,
wav2vec2/WavLM SpecAugment masking, LayerDrop or the feature encoder's requires_grad switch (the reference's
``model.train()`` had SpecAugment and LayerDrop on as well). Whisper's configs set every dropout to 0, so for Whisper
train mode changes nothing. Nothing is ever updated: backbone parameters stay frozen, no optimiser runs, gradients
are taken w.r.t. the input only. The model sees fp16-rounded features, as the head did in training (the cache stores
fp16), with a straight-through gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def is_dropout_like(module: nn.Module) -> bool:
    """An ``nn.Dropout``, or a module whose only use of ``self.training`` is functional dropout, as its backbone
    family declares (``BackboneFamily.dropout_like``: WhisperAttention, Wav2Vec2Attention, ...). Their parents are
    left in eval on purpose: the models (SpecAugment time masking), the encoders (LayerDrop) and the feature
    encoders (a requires_grad switch) train differently, not just more noisily."""
    from trustser.backbones.families import dropout_like_module_names

    return isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ in dropout_like_module_names()


class WaveformClassifier(nn.Module):
    """Backbone + head as one model from waveforms ``[B, T]`` (with ``lengths``) to logits: what is attacked.

    ``feature_dtype`` (fp16 by default) rounds the hidden states as the feature cache stores them, so the head
    sees the numbers it was trained and evaluated on and a clip's clean prediction matches the cached one. The
    rounding is straight-through for the gradient (an fp16 gradient would underflow).

    ``train()`` switches on dropout-like modules only (see :func:`is_dropout_like`); ``eval()`` all off.
    It is built in eval mode.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dtype: torch.dtype | None = torch.float16) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dtype = feature_dtype
        self.eval()  # an attack wrapper starts in inference mode, whatever mode its parts arrived in

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        if waves.dim() == 1:
            waves = waves[None]
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        out = self.backbone(waves, lengths)
        hidden = out.hidden
        if self.feature_dtype is not None and hidden.dtype != self.feature_dtype:
            rounded = hidden.to(self.feature_dtype).to(hidden.dtype)
            hidden = hidden + (rounded - hidden).detach() if hidden.requires_grad else rounded
        return self.head(hidden, out.mask)

    def train(self, mode: bool = True) -> "WaveformClassifier":
        for m in self.modules():
            m.training = bool(mode) and (m is self or is_dropout_like(m))
        return self


def _pad(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """1-D clips → a zero-padded batch [B, longest] and their lengths."""
    lengths = torch.tensor([w.numel() for w in waves], device=waves[0].device)
    batch = waves[0].new_zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w.reshape(-1)
    return batch, lengths


@torch.no_grad()
def _predict(model: WaveformClassifier, waves: Tensor) -> list[int]:
    model.eval()
    lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
    return model(waves, lengths).argmax(-1).tolist()


@torch.no_grad()
def _predict_padded(model: WaveformClassifier, waves: Sequence[Tensor]) -> list[int]:
    """Predictions for clips of any lengths from one padded forward (a clip's output ignores its batch)."""
    model.eval()
    return model(*_pad(waves)).argmax(-1).tolist()

"""Trainable copies of a backbone's top k encoder layers, run on cached features (``trustser.finetune`` uses them).

The feature cache holds every layer's hidden state of every clip, so the input of the top k layers is already
there: cached state ``num_states - 1 - k``. A :class:`TopLayers` maps that state to the k states the backbone
itself would return for them. Each family's subclass (in its own module: ``whisper.WhisperTop``,
``hf_ssl.PostLnTop`` / ``hf_ssl.WavLMTop``, ``s3prl_models.ApcTop`` / ``s3prl_models.TeraTop``) says how the cached
states line up with its layers; ``BackboneFamily.top_layers`` picks it.

Padded batches: transformer layers get an attention mask over the padded frames, so a clip's live states do not
depend on its batch (tested), matching the cache's per-clip features.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from trustser.backbones.base import Backbone


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, F] bool → [B, 1, 1, F]: 0 on real frames, the dtype's minimum on padding (as the Whisper backbone)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)[
        :, None, None, :
    ]


def trainable_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients on and no forward hooks.

    The backbone's hooks are its instrumentation, not its computation: s3prl's APC expert records hidden states
    through hooks whose closures hold the expert's own list, so a copied hook would keep appending to it.
    """
    twin = copy.deepcopy(module)
    for m in twin.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


class TopLayers(nn.Module):
    """Trainable copies of a backbone's top k encoder layers.

    ``forward(state_in [B, F, H], mask [B, F]) -> [B, k, F, H]``: the states the backbone returns for its top k
    layers, given the cached state that feeds the first of them; padded frames are zero (as in the cache).
    Subclasses implement ``run`` for one architecture.
    """

    def __init__(self, stack: nn.ModuleList, k: int, num_states: int) -> None:
        super().__init__()
        self.first_layer = len(stack) - k  # index of the first copied layer in the encoder stack
        self.num_states = num_states
        self.input_state = num_states - 1 - k  # cached state index that feeds it
        self.layers = trainable_copy(nn.ModuleList(stack[self.first_layer :]))

    @property
    def k(self) -> int:
        return len(self.layers)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, state_in: Tensor, mask: Tensor) -> Tensor:
        states = torch.stack(self.run(state_in, mask), dim=1)
        return states * mask[:, None, :, None].to(states.dtype)

    def install_into(self, backbone: Backbone) -> None:
        """Write these layers' weights over the backbone's own top layers."""
        stack = backbone.encoder_layers()
        for offset, layer in enumerate(self.layers):
            stack[self.first_layer + offset].load_state_dict(layer.state_dict())

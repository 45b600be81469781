"""Fine-tuning the top k encoder layers on cached features, without recomputing the frozen ones.

The feature cache holds every layer's hidden state of every clip, so the input of the top k layers is already
there: cached state ``num_states - 1 - k``. The backbone's family builds ``TopLayers`` (trainable copies of those
k layers that map that state to the k states the backbone itself would return: ``BackboneFamily.top_layers``,
with how each architecture's cached states line up with its layers documented on its class in
``trustser/backbones``); ``FineTunedClassifier`` swaps them into the cached stack before the head. Training
therefore costs k layers per step instead of the whole backbone, and the backbone object is never run (nor
changed): its layers are deep-copied.

Padded batches: transformer layers get an attention mask over the padded frames, so a clip's live states do not
depend on its batch (tested), matching the cache's per-clip features.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from trustser.backbones.base import Backbone
from trustser.backbones.top_layers import TopLayers
from trustser.devices import module_device
from trustser.errors import ConfigError
from trustser.head import EmotionHead
from trustser.training import collate


def max_unfrozen(backbone: Backbone) -> int:
    """The most top layers whose input is in the cache: all of them when the input embedding state is cached."""
    return backbone.spec.num_hidden_states - 1


def build_top_layers(backbone: Backbone, k: int) -> TopLayers:
    name = backbone.spec.name
    limit = max_unfrozen(backbone)
    if k == 0:
        raise ValueError("k = 0 has no top layers; build_finetune_model returns a plain head for it")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > limit:
        extra = (
            ""
            if backbone.spec.includes_input_layer
            else (" (its input-embedding state is not cached, so its lowest layer cannot be run from the cache)")
        )
        raise ConfigError(
            f"unfreeze_top={k!r}: {name} has {backbone.spec.num_layers} encoder layers; "
            f"0 (frozen backbone) to {limit} top layers can be fine-tuned{extra}"
        )
    return backbone.spec.backbone_family.top_layers(backbone, k)


class FineTunedClassifier(nn.Module):
    """Top layers run live on the cached input state, the cached lower states kept, then the head."""

    def __init__(self, top: TopLayers, head: EmotionHead) -> None:
        super().__init__()
        self.top = top
        self.head = head

    def live_hidden(self, cached_hidden: Tensor, mask: Tensor) -> Tensor:
        """[B, L, F, H]: the cached states with the top k replaced by live ones."""
        if cached_hidden.shape[1] != self.top.num_states:
            raise ValueError(f"expected {self.top.num_states} cached states per clip, got {cached_hidden.shape[1]}")
        live = self.top(cached_hidden[:, self.top.input_state], mask)
        return torch.cat([cached_hidden[:, : self.top.num_states - self.top.k], live], dim=1)

    def forward(self, cached_hidden: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.live_hidden(cached_hidden, mask), mask)


def build_finetune_model(
    backbone: Backbone, k: int, num_classes: int = 4, width: int = 128, pooling: str = "weighted"
) -> nn.Module:
    """The model ``train_head(..., model=...)`` trains: a plain EmotionHead for k = 0, else top k layers + head."""
    spec = backbone.spec
    head = EmotionHead(spec.num_hidden_states, spec.hidden_size, num_classes, width, pooling)
    if k == 0:
        return head
    return FineTunedClassifier(build_top_layers(backbone, k), head)


@torch.no_grad()
def live_features(
    model: nn.Module, features: Mapping[str, Tensor], ids: Sequence[str], batch_size: int = 64
) -> dict[str, Tensor]:
    """Clip id → fp16 [L, F, H] features of the fine-tuned model (cached lower states, live top ones), for probes.

    A plain head (k = 0) has no live layers: the cached features are returned as they are.
    """
    if not isinstance(model, FineTunedClassifier):
        return {i: features[i] for i in ids}
    model.eval()
    device = module_device(model)
    order = sorted(ids, key=lambda i: features[i].shape[1])  # similar lengths together: less padding
    out: dict[str, Tensor] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        hidden, mask = collate(features, chunk)
        live = model.live_hidden(hidden.to(device), mask.to(device)).to("cpu", torch.float16)
        for b, clip_id in enumerate(chunk):
            out[clip_id] = live[b, :, : features[clip_id].shape[1]].clone()
    return out


def with_trained_top(backbone: Backbone, top_layers: TopLayers) -> Backbone:
    """A frozen copy of ``backbone`` whose top k layers are the trained ones: the fine-tuned model from the
    waveform, for attacks and FLOPs. Its spec is the original's, so do not extract into the original's cache
    key with it (its features differ)."""
    if top_layers.num_states != backbone.spec.num_hidden_states or (
        top_layers.first_layer + top_layers.k != len(backbone.encoder_layers())
    ):
        raise ValueError(f"these top layers were not built from a {backbone.spec.name} backbone")
    twin = copy.deepcopy(backbone)
    top_layers.install_into(twin)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin

"""Build a backbone by name: resolve its weights, let its family build it, return it frozen in eval mode."""

from __future__ import annotations

import logging
import warnings

import torch

from trustser.backbones.base import Backbone
from trustser.backbones.registry import get_backbone_spec
from trustser.backbones.weights import WeightsSource, materialise, resolve_weights

log = logging.getLogger(__name__)

RANDOM_WARNING = (
    "backbone '{name}' is built with RANDOM weights (--random-init): results are NOT those of a pretrained model"
)


def load_backbone(
    name: str,
    weights: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    source: WeightsSource | None = None,
    offline: bool | None = None,
) -> tuple[Backbone, WeightsSource]:
    """``offline`` None reads HF_HUB_OFFLINE (see trustser.backbones.weights for the resolution order)."""
    spec = get_backbone_spec(name)
    source = source or resolve_weights(spec, weights, random_init, seed, offline)
    if source.is_random:
        message = RANDOM_WARNING.format(name=name)
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        torch.manual_seed(seed)
    backbone = spec.backbone_family.build(spec, materialise(spec, source))
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone, source

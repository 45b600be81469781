"""Build a backbone by name: resolve its weights, pick its family's builder, return it frozen in eval mode."""

from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch

from trustser.backbones.base import Backbone, BackboneSpec
from trustser.backbones.registry import get_backbone_spec
from trustser.backbones.weights import WeightsSource, materialise, resolve_weights

log = logging.getLogger(__name__)

RANDOM_WARNING = (
    "backbone '{name}' is built with RANDOM weights (--random-init): results are NOT those of a pretrained model"
)


def _whisper(spec: BackboneSpec, path):  # imports stay lazy: transformers/s3prl take seconds to import
    from trustser.backbones.whisper import build_whisper_encoder

    return build_whisper_encoder(spec, path)


def _ssl(spec: BackboneSpec, path):
    from trustser.backbones.hf_ssl import build_ssl

    return build_ssl(spec, path)


def _s3prl(spec: BackboneSpec, path):
    from trustser.backbones.s3prl_models import build_s3prl

    return build_s3prl(spec, path)


FAMILIES: dict[str, Callable[[BackboneSpec, object], Backbone]] = {"whisper": _whisper, "ssl": _ssl, "s3prl": _s3prl}


def load_backbone(name: str, weights: str | None = None, random_init: bool = False, seed: int = 0,
                  source: WeightsSource | None = None, offline: bool | None = None) -> tuple[Backbone, WeightsSource]:
    """``offline`` None reads HF_HUB_OFFLINE (see trustser.backbones.weights for the resolution order)."""
    spec = get_backbone_spec(name)
    source = source or resolve_weights(spec, weights, random_init, seed, offline)
    if source.is_random:
        message = RANDOM_WARNING.format(name=name)
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        torch.manual_seed(seed)
    backbone = FAMILIES[spec.family](spec, materialise(spec, source))
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone, source

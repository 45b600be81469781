"""What is counted and measured: a backbone's exact architecture on random weights, its head, and one clip.

Operation counts and CPU cost do not depend on the weight values, so no checkpoint is needed.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import Tensor

from trustser.backbones.base import Backbone, BackboneSpec
from trustser.backbones.registry import get_backbone_spec
from trustser.head import EmotionHead

SAMPLE_RATE = 16_000
CLIP_SECONDS = 6.0
NUM_CLASSES = 4
HEAD_WIDTH = 128


def build_architecture(name: str | BackboneSpec, seed: int = 0) -> tuple[Backbone, EmotionHead]:
    """The backbone's exact architecture with random weights (quietly: no warning, s3prl's prints swallowed), and
    the method's head sized for it. Operation counts and CPU cost do not depend on the weight values."""
    spec = name if isinstance(name, BackboneSpec) else get_backbone_spec(name)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        backbone = spec.backbone_family.build(spec, None)
        head = EmotionHead(spec.num_hidden_states, spec.hidden_size, NUM_CLASSES, HEAD_WIDTH)
    backbone.eval()
    head.eval()
    for p in [*backbone.parameters(), *head.parameters()]:
        p.requires_grad_(False)
    return backbone, head


def _inputs(seconds: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    samples = int(round(seconds * SAMPLE_RATE))
    generator = torch.Generator().manual_seed(seed)
    waves = 0.1 * torch.randn(1, samples, generator=generator)
    return waves, torch.tensor([samples])

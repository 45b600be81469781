"""wav2vec 2.0 and WavLM (transformers) as backbones.

Their base models use GroupNorm over time in the first convolution (``feat_extract_norm="group"``), so a clip's
output changes when it is zero-padded inside a batch, and transformers documents that no attention mask should be
passed for them. To keep features a function of the clip alone we run each clip at its own length and pad the
outputs afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.backbones.base import Backbone, BackboneOutput, BackboneSpec, lengths_to_mask

MODEL_CLASSES = {"wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}
CONFIG_CLASSES = {"wav2vec2": "Wav2Vec2Config", "wavlm": "WavLMConfig"}


def zero_mean_unit_var(wave: Tensor) -> Tensor:
    """Wav2Vec2FeatureExtractor's per-clip normalisation (``do_normalize``), in differentiable torch."""
    return (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)


class SelfSupervisedBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, model: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        self.normalize = normalize

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.model._get_feat_extract_output_lengths(lengths).long()

    def encoder_layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:
        per_clip = []
        for i, n in enumerate(lengths.tolist()):
            wave = waves[i, :n]
            if self.normalize:
                wave = zero_mean_unit_var(wave)
            out = self.model(wave[None], output_hidden_states=True)
            per_clip.append(torch.stack(out.hidden_states, dim=1)[0])  # [layers, frames, hidden]
        frames = self.output_lengths(lengths)
        longest = int(frames.max())
        hidden = torch.stack([F.pad(h, (0, 0, 0, longest - h.shape[1])) for h in per_clip])
        return BackboneOutput(hidden, lengths_to_mask(frames, longest))


def build_ssl(spec: BackboneSpec, weights_dir: Any | None) -> SelfSupervisedBackbone:
    import transformers

    model_type = spec.config["model_type"]
    model_cls = getattr(transformers, MODEL_CLASSES[model_type])
    normalize = bool(spec.front_end.get("do_normalize", False))
    if weights_dir is None:
        config = getattr(transformers, CONFIG_CLASSES[model_type])(**spec.config)
        model = model_cls(config)
    else:
        model = model_cls.from_pretrained(str(weights_dir), local_files_only=True)
        normalize = _read_do_normalize(weights_dir, normalize)
    model.eval()
    return SelfSupervisedBackbone(spec, model, normalize)


def _read_do_normalize(weights_dir: Any, default: bool) -> bool:
    """The checkpoint's own preprocessor config decides the waveform normalisation when it ships one."""
    import json
    from pathlib import Path

    path = Path(weights_dir) / "preprocessor_config.json"
    if path.is_file():
        return bool(json.loads(path.read_text()).get("do_normalize", default))
    return default

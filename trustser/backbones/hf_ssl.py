"""Self-supervised speech models from transformers (wav2vec 2.0, WavLM, HuBERT) as backbones.

Their base models use GroupNorm over time in the first convolution (``feat_extract_norm="group"``), so a clip's
output changes when it is zero-padded inside a batch, and transformers documents that no attention mask should be
passed for them. To keep features a function of the clip alone we run each clip at its own length and pad the
outputs afterwards.

One rule finds every class: the config's ``model_type`` names transformers' config class (``hubert`` →
``HubertConfig``), and the wav2vec 2.0 family of models in transformers names the rest after it (``HubertModel``,
``HubertAttention``, ``HubertEncoderLayer``). :class:`TransformersSslFamily` builds on that rule, so a new model of
this family (HuBERT was added so) is one config file and one ``register_backbone`` call; the contract tests check
the rule for every registered one.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.backbones.base import (
    Backbone,
    BackboneFamily,
    BackboneOutput,
    BackboneSpec,
    FrontEndSplit,
    lengths_to_mask,
    tiny_spec,
)
from trustser.backbones.top_layers import TopLayers, additive_mask
from trustser.errors import ConfigError


def class_prefix(model_type: str) -> str:
    """transformers' class-name prefix of a model type: ``wav2vec2`` → ``Wav2Vec2``, ``hubert`` → ``Hubert``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    try:
        return CONFIG_MAPPING_NAMES[model_type].removesuffix("Config")
    except KeyError:
        raise ConfigError(f"model_type '{model_type}' is not a transformers model type") from None


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

    prefix = class_prefix(spec.config["model_type"])
    model_cls = getattr(transformers, f"{prefix}Model")
    normalize = bool(spec.front_end.get("do_normalize", False))
    if weights_dir is None:
        config = getattr(transformers, f"{prefix}Config")(**spec.config)
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


class PostLnTop(TopLayers):
    """Post-LN encoders of the wav2vec 2.0 family (wav2vec 2.0 Base, HuBERT Base): state 0 = LN(x + conv position
    embedding), state i = output of layer i-1; no norm after the loop."""

    def __init__(self, backbone: Backbone, k: int) -> None:
        super().__init__(backbone.encoder_layers(), k, backbone.spec.num_hidden_states)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        attn = additive_mask(mask, x.dtype)
        states = []
        for layer in self.layers:
            x = layer(x, attention_mask=attn)[0]
            states.append(x)
        return states


class WavLMTop(TopLayers):
    """Post-LN WavLM (Base+): as wav2vec 2.0, plus the relative position bias. Layer 0's attention turns bucketed
    relative positions into a [heads, T, T] bias that every layer receives un-gated (each gates it with its own
    input). It is a function of the length alone, so the top layers recompute it from a frozen copy of layer 0's
    bucket embedding; when k = L, layer 0 itself is trained and its own (trainable) embedding is used."""

    def __init__(self, backbone: Backbone, k: int) -> None:
        stack = backbone.encoder_layers()
        super().__init__(stack, k, backbone.spec.num_hidden_states)
        if self.first_layer > 0:  # layer 0 stays frozen: keep only its bucket embedding, frozen
            self.frozen_bias_table = copy.deepcopy(stack[0].attention.rel_attn_embed).requires_grad_(False)

    def bias_table(self) -> nn.Embedding:
        return self.frozen_bias_table if self.first_layer > 0 else self.layers[0].attention.rel_attn_embed

    def position_bias(self, batch: int, frames: int) -> Tensor:
        """WavLMAttention.compute_bias of layer 0, repeated per clip: [B * heads, F, F]."""
        table = self.bias_table()
        positions = torch.arange(frames, device=table.weight.device)
        buckets = self.layers[0].attention._relative_positions_bucket(positions[None, :] - positions[:, None])
        bias = table(buckets).permute(2, 0, 1)  # [heads, F, F]
        return bias[None].repeat(batch, 1, 1, 1).view(-1, frames, frames)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        bias = self.position_bias(x.shape[0], x.shape[1]).to(x.dtype)
        attention_mask = mask.long()  # WavLM's attention takes the [B, F] 0/1 mask (key padding)
        states = []
        with warnings.catch_warnings():
            # WavLM's attention always pairs a bool key-padding mask with the float position bias (transformers'
            # own model does the same); torch warns about the mixed types on every new call site
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")
            for offset, layer in enumerate(self.layers):
                x, bias = layer(x, attention_mask=attention_mask, position_bias=bias, index=self.first_layer + offset)[
                    :2
                ]
                states.append(x)
        return states


class TransformersSslFamily(BackboneFamily):
    """transformers' wav2vec 2.0-style models: a conv feature encoder, a transformer encoder, every hidden state."""

    name = "ssl"

    def build(self, spec: BackboneSpec, weights: Path | None) -> SelfSupervisedBackbone:
        return build_ssl(spec, weights)

    def front_end(self, backbone: Backbone) -> FrontEndSplit:
        return FrontEndSplit(backbone.model.feature_extractor, backbone)  # the conv feature encoder

    def dropout_like(self, spec: BackboneSpec) -> frozenset[str]:
        # transformers 4.57: <Prefix>Attention uses self.training for attention-probability dropout only; its
        # parents do more (<Prefix>Model: SpecAugment, <Prefix>Encoder: LayerDrop, the feature encoder: a
        # requires_grad switch), and the layers' own dropouts are nn.Dropout modules
        return frozenset({f"{class_prefix(spec.config['model_type'])}Attention"})

    def top_layers(self, backbone: Backbone, k: int) -> TopLayers:
        # keyed by the encoder layer's class: it names the exact computation, so a variant whose state alignment
        # differs (a stable-layer-norm wav2vec 2.0 Large: ...EncoderLayerStableLayerNorm) fails loudly
        layer_kind = type(backbone.encoder_layers()[0]).__name__
        if layer_kind == "WavLMEncoderLayer":
            return WavLMTop(backbone, k)
        if layer_kind == f"{class_prefix(backbone.spec.config['model_type'])}EncoderLayer":
            return PostLnTop(backbone, k)
        raise ConfigError(
            f"fine-tuning is not supported for {backbone.spec.name}: encoder layers of type "
            f"{layer_kind}; the ssl family fine-tunes post-LN encoder layers (wav2vec 2.0, HuBERT, "
            "WavLM Base)"
        )

    def tiny(self, spec: BackboneSpec) -> BackboneSpec:
        conv_layers = len(spec.config["conv_dim"])
        config = {
            **spec.config,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "conv_dim": [32] * conv_layers,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        }
        return tiny_spec(spec, config, num_layers=2, hidden_size=32)

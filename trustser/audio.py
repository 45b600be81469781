"""Audio loading and validation shared by every corpus.

Rules (documented in the README, applied identically everywhere):
- multi-channel audio is mixed to mono by averaging channels;
- any sample rate is resampled to 16 kHz (torchaudio's band-limited sinc resampler);
- clips longer than ``max_seconds`` keep their first ``max_seconds`` (the method caps audio at 6 s; the onset of
  an acted utterance carries its emotion as much as any other part, and cropping from the start is deterministic);
- unreadable files, empty or all-zero audio, NaN/inf samples and clips shorter than ``MIN_SECONDS`` raise
  :class:`AudioError` with a reason tag; corpus loaders count and log those as skips;
- a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds is ``truncated``: decoders read
  what is there without complaint, so a copy cut short by an interrupted download would otherwise train on half a
  clip. The sizes 0 and 0xFFFFFFFF are what streaming writers (and RF64) leave when the length was not known up
  front, so they are not taken as a claim about the length.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from trustser import MAX_SECONDS, SAMPLE_RATE
from trustser.errors import AudioError

MIN_SECONDS = 0.1
"""Shortest usable clip: 100 ms covers every backbone's receptive field (wav2vec2's 400-sample / 25 ms first frame,
Whisper's 2 mel frames, APC/TERA's 25 ms fbank window) with room for more than one output frame."""

SKIP_REASONS = ("unreadable", "truncated", "empty", "silent", "non_finite", "too_short")

UNKNOWN_CHUNK_SIZES = frozenset({0, 0xFFFFFFFF})
"""``data`` sizes that say "length not written" (streaming writers, RF64's placeholder), not "this many bytes"."""


def load_audio(path: Path | str, max_seconds: float = MAX_SECONDS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` and return mono float32 samples at ``sample_rate``, cropped to ``max_seconds``.

    Raises AudioError naming the file and the reason when the clip cannot be used.
    """
    import soundfile as sf

    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt/truncated input
        raise AudioError(path, "unreadable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    missing = wav_missing_bytes(path)
    if missing:
        raise AudioError(path, "truncated", missing)
    if data.size == 0:
        raise AudioError(path, "empty")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioError(path, "non_finite", "NaN or inf samples")
    if file_rate != sample_rate:
        mono = resample(mono, file_rate, sample_rate)
    mono = mono[: int(round(max_seconds * sample_rate))]
    if mono.shape[0] < int(MIN_SECONDS * sample_rate):
        raise AudioError(path, "too_short", f"{mono.shape[0] / sample_rate:.3f} s < {MIN_SECONDS} s")
    if not np.any(mono):
        raise AudioError(path, "silent", "all samples are zero")
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (imported lazily: it is heavy)."""
    import torch
    import torchaudio.functional as taf

    out = taf.resample(torch.from_numpy(np.ascontiguousarray(samples)), int(from_rate), int(to_rate))
    return out.numpy().astype(np.float32, copy=False)


def wav_missing_bytes(path: Path | str) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk is cut short, say how much is missing; otherwise None.

    Walks the chunk headers only (a few reads, no decoding). Chunks are word-aligned: an odd-sized chunk is followed
    by a pad byte, which is counted when stepping to the next chunk but not required after ``data`` (the last
    chunk's pad byte is often left out and nothing is lost without it). Non-RIFF files (FLAC, ...) and files whose
    chunk list cannot be followed return None: soundfile's own checks are all we have for those.
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        handle.seek(0, 2)
        file_size = handle.tell()
        offset = 12
        while offset + 8 <= file_size:
            handle.seek(offset)
            chunk_id, size = struct.unpack(f"{endian}4sI", handle.read(8))
            if chunk_id == b"data":
                present = file_size - (offset + 8)
                if size in UNKNOWN_CHUNK_SIZES or present >= size:
                    return None
                return f"data chunk declares {size} bytes, file holds {present}"
            offset += 8 + size + (size & 1)
    return None

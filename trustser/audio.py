"""Audio loading and validation shared by every corpus.

Rules (documented in the README, applied identically everywhere):
- multi-channel audio is mixed to mono by averaging channels;
- any sample rate is resampled to 16 kHz (torchaudio's band-limited sinc resampler);
- clips longer than ``max_seconds`` keep their first ``max_seconds`` (the method caps audio at 6 s; the onset of
  an acted utterance carries its emotion as much as any other part, and cropping from the start is deterministic);
- unreadable/truncated files, empty or all-zero audio, NaN/inf samples and clips shorter than
  ``MIN_SECONDS`` raise :class:`AudioError` with a reason tag; corpus loaders count and log those as skips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trustser import MAX_SECONDS, SAMPLE_RATE
from trustser.errors import AudioError

MIN_SECONDS = 0.1
"""Shortest usable clip: 100 ms covers every backbone's receptive field (wav2vec2's 400-sample / 25 ms first frame,
Whisper's 2 mel frames, APC/TERA's 25 ms fbank window) with room for more than one output frame."""

SKIP_REASONS = ("unreadable", "empty", "silent", "non_finite", "too_short")


def load_audio(path: Path | str, max_seconds: float = MAX_SECONDS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` and return mono float32 samples at ``sample_rate``, cropped to ``max_seconds``.

    Raises AudioError naming the file and the reason when the clip cannot be used.
    """
    import soundfile as sf

    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt/truncated input
        raise AudioError(path, "unreadable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
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

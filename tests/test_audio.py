"""Audio rules shared by every corpus: documented handling (mono, resample, crop) or a named, counted skip."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from trustser.audio import MIN_SECONDS, load_audio
from trustser.errors import AudioError


def tone(seconds, rate=16000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write(path, data, rate=16000, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_stereo_is_mixed_to_mono_by_averaging_channels(tmp_path):
    left, right = tone(1.0), np.zeros(16000)
    path = write(tmp_path / "s.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left / 2).astype(np.float32), atol=1e-6)


def test_other_sample_rates_are_resampled_to_16k(tmp_path):
    path = write(tmp_path / "r.wav", tone(2.0, rate=44100), rate=44100)
    assert load_audio(path).shape[0] == 32000


def test_clips_longer_than_six_seconds_keep_their_first_six(tmp_path):
    data = tone(9.0)
    path = write(tmp_path / "l.wav", data, subtype="FLOAT")
    out = load_audio(path)
    assert out.shape[0] == 96000
    np.testing.assert_allclose(out, data[:96000].astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), "unreadable"),
    (lambda p: p.write_bytes(b""), "unreadable"),
    (lambda p: write(p, np.zeros(16000)), "silent"),
    (lambda p: write(p, tone(MIN_SECONDS / 2)), "too_short"),
    (lambda p: write(p, np.full(16000, np.nan), subtype="FLOAT"), "non_finite"),
    (lambda p: p.write_bytes(open(write(p, tone(2.0)), "rb").read()[:30]), "unreadable"),  # truncated header
])
def test_unusable_audio_raises_an_error_naming_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason == reason and str(path) in str(info.value)


def test_a_wav_with_no_frames_is_empty(tmp_path):
    path = write(tmp_path / "e.wav", np.zeros(0))
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason in ("empty", "unreadable")

"""Audio rules shared by every corpus: documented handling (mono, resample, crop) or a named, counted skip."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from trustser.audio import MIN_SECONDS, load_audio, wav_missing_bytes
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


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), "unreadable"),
        (lambda p: p.write_bytes(b""), "unreadable"),
        (lambda p: write(p, np.zeros(16000)), "silent"),
        (lambda p: write(p, tone(MIN_SECONDS / 2)), "too_short"),
        (lambda p: write(p, np.full(16000, np.nan), subtype="FLOAT"), "non_finite"),
        (lambda p: p.write_bytes(open(write(p, tone(2.0)), "rb").read()[:30]), "unreadable"),  # truncated header
    ],
)
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


# --- truncated WAVs: the header promises more data than the file holds ----------------------------------------------


def riff(*chunks: tuple[bytes, bytes], pad: bool = True) -> bytes:
    """A RIFF/WAVE file from (id, payload) chunks, each padded to an even length as the format requires."""
    body = b"".join(
        cid + struct.pack("<I", len(data)) + data + (b"\0" if pad and len(data) % 2 else b"") for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def pcm16_fmt(rate: int = 16000) -> bytes:
    return struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)


def set_data_size(raw: bytes, size: int) -> bytes:
    at = raw.index(b"data") + 4
    return raw[:at] + struct.pack("<I", size) + raw[at + 4 :]


def test_a_wav_cut_in_half_is_skipped_as_truncated_naming_the_file(tmp_path):
    whole = write(tmp_path / "whole.wav", tone(2.0)).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason == "truncated" and str(path) in str(info.value)
    assert "declares 64000 bytes" in str(info.value)


def test_a_complete_wav_still_loads(tmp_path):
    path = write(tmp_path / "whole.wav", tone(2.0))
    assert wav_missing_bytes(path) is None and load_audio(path).shape[0] == 32000


def test_wave_format_extensible_is_checked_like_plain_pcm(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(str(path), tone(1.0, channels=2), 16000, subtype="PCM_24", format="WAVEX")
    assert wav_missing_bytes(path) is None and load_audio(path).shape[0] == 16000
    path.write_bytes(path.read_bytes()[:-1000])
    assert wav_missing_bytes(path).startswith("data chunk declares")


def test_an_odd_sized_chunk_before_data_is_stepped_over_with_its_pad_byte(tmp_path):
    samples = (tone(1.0) * 32767).astype("<i2").tobytes()
    path = tmp_path / "odd.wav"
    path.write_bytes(riff((b"fmt ", pcm16_fmt()), (b"LIST", b"INFOabc"), (b"data", samples)))
    assert wav_missing_bytes(path) is None and load_audio(path).shape[0] == 16000
    path.write_bytes(path.read_bytes()[:-2])
    assert wav_missing_bytes(path) == "data chunk declares 32000 bytes, file holds 31998"


def test_an_odd_sized_data_chunk_without_its_final_pad_byte_is_complete(tmp_path):
    path = tmp_path / "oddpad.wav"
    path.write_bytes(
        riff((b"fmt ", struct.pack("<HHIIHH", 1, 1, 16000, 16000, 1, 8)), (b"data", b"\x90" * 3201), pad=False)
    )
    assert wav_missing_bytes(path) is None


@pytest.mark.parametrize("placeholder", [0xFFFFFFFF, 0])
def test_streaming_writers_unknown_data_size_is_not_flagged(tmp_path, placeholder):
    raw = write(tmp_path / "s.wav", tone(1.0)).read_bytes()
    path = tmp_path / "stream.wav"
    path.write_bytes(set_data_size(raw, placeholder))
    assert wav_missing_bytes(path) is None


def test_non_riff_files_are_left_to_the_decoder(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(str(path), tone(1.0), 16000, format="FLAC")
    assert wav_missing_bytes(path) is None and load_audio(path).shape[0] == 16000


def test_extraction_skips_a_truncated_clip_counts_it_and_drops_it_from_the_folds(mini_emodb):
    from trustser.backbones.loading import load_backbone
    from trustser.corpora import load_corpus
    from trustser.features import drop_unusable, extract_features

    index = load_corpus("emodb", mini_emodb)
    cut, kept = sorted(index.clips)[:2]
    raw = index.clips[cut].path.read_bytes()
    index.clips[cut].path.write_bytes(raw[: len(raw) // 2])
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    features, stats = extract_features(index, backbone, source, clip_ids=[cut, kept], progress=False)
    assert list(features) == [kept] and stats.skipped == {"truncated": 1}
    assert [(c, reason) for c, reason, _ in stats.dropped] == [(cut, "truncated")] and cut in index.clips
    drop_unusable(index, stats)
    assert [(s.item, s.reason) for s in index.skipped] == [(str(mini_emodb / "wav" / f"{cut}.wav"), "truncated")]
    assert index.skip_counts()["truncated"] == 1
    assert all(cut not in part for f in index.folds for part in f.partitions().values())

"""The corruption suite (``trustser.metrics.corruptions``): every additive corruption reaches its SNR to 0.1 dB,
babble never mixes in the clip's own speaker, every corruption is deterministic per clip and keeps the length,
and a codec this machine lacks is skipped with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from trustser.errors import ConfigError
from trustser.metrics import corruptions as C
from trustser.metrics.corruptions import CORRUPTIONS, STANDARD, babble_sources, get_corruption, resolve, snr_db

SR = 16_000


def speech_like(seconds: float = 1.5, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """A voiced-sounding test clip: harmonics of f0 under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (0.1 * voice * envelope + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


CLIPS = [speech_like(1.2 + 0.1 * i, seed=i, f0=110 + 25 * i) for i in range(6)]
SPEAKERS = ["a", "a", "b", "b", "c", "c"]


def apply(name: str, i: int = 0, **kwargs):
    c = get_corruption(name)
    if c.needs_other_speakers:
        chosen = babble_sources(i, SPEAKERS, c.param("talkers"), clip_id=f"clip{i}")
        kwargs.update(others=[CLIPS[k] for k in chosen], sources=chosen)
    return c.apply(CLIPS[i], clip_id=f"clip{i}", **kwargs)


@pytest.mark.parametrize("name", [n for n, c in CORRUPTIONS.items() if c.additive])
def test_every_additive_corruption_reaches_its_snr_within_a_tenth_of_a_db(name):
    target = get_corruption(name).param("snr_db")
    for i in range(len(CLIPS)):
        out = apply(name, i)
        achieved = snr_db(CLIPS[i], out.wave)  # measured on the float32 clip the model receives
        assert abs(achieved - target) < 0.1, (name, i, achieved)
        assert out.achieved_snr_db == pytest.approx(achieved)


def test_babble_never_uses_the_clips_own_speaker_and_spreads_over_the_others():
    speakers = ["f1"] * 5 + ["m1"] * 4 + ["f2"] * 3
    for i, own in enumerate(speakers):
        chosen = babble_sources(i, speakers, talkers=4, seed=3, clip_id=f"c{i}")
        assert len(chosen) == 4 and all(speakers[k] != own for k in chosen)
        assert {speakers[k] for k in chosen} == set(speakers) - {own}  # both other speakers are heard
    assert babble_sources(0, ["only"] * 3, talkers=4) == ()  # nobody else: no babble (the caller skips the clip)


def test_babble_is_the_mix_of_exactly_the_chosen_talkers():
    c = get_corruption("babble_snr10")
    chosen = babble_sources(0, SPEAKERS, c.param("talkers"), clip_id="clip0")
    out = apply("babble_snr10", 0)
    assert out.sources == chosen and not {SPEAKERS[k] for k in chosen} & {"a"}
    # rebuilt by hand from the same seed: the noise is the sum of those clips and nothing else
    rng = np.random.default_rng(C.clip_seed(0, "babble_snr10", "clip0"))
    expected = C.add_at_snr(CLIPS[0], C.babble_noise(CLIPS[0].size, [CLIPS[k] for k in chosen], rng), 10.0)
    np.testing.assert_array_equal(out.wave, expected)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_is_deterministic_per_clip_and_keeps_the_length(name):
    if get_corruption(name).unavailable():
        pytest.skip(get_corruption(name).unavailable())
    a, b = apply(name, 1), apply(name, 1)
    np.testing.assert_array_equal(a.wave, b.wave)
    assert a.wave.dtype == np.float32 and a.wave.shape == CLIPS[1].shape
    assert np.isfinite(a.wave).all() and not np.array_equal(a.wave, CLIPS[1])


def test_the_noise_depends_on_the_clip_and_the_seed_not_on_anything_else():
    c = get_corruption("white_snr10")
    x = CLIPS[0]
    assert not np.array_equal(c.apply(x, clip_id="one").wave, c.apply(x, clip_id="two").wave)
    assert not np.array_equal(c.apply(x, clip_id="one", seed=1).wave, c.apply(x, clip_id="one").wave)


def test_pink_noise_has_a_one_over_f_spectrum():
    noise = C.pink_noise(2**16, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(noise.size)
    low, high = power[(f > 0.001) & (f < 0.002)].mean(), power[(f > 0.1) & (f < 0.2)].mean()
    assert 100 * 0.5 < low / high < 100 * 2  # 100x the frequency, 1/100 the power (20 dB per decade)


def test_telephone_removes_everything_above_4_khz():
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    y = get_corruption("telephone").apply(x).wave
    f = np.fft.rfftfreq(SR, 1 / SR)
    spectrum = lambda v, lo, hi: float(np.mean(np.abs(np.fft.rfft(v))[(f > lo) & (f < hi)] ** 2))
    assert spectrum(y, 4500, 7500) < 1e-3 * spectrum(x, 4500, 7500)
    assert spectrum(y, 1000, 3000) > 0.3 * spectrum(x, 1000, 3000)


def test_reverb_keeps_the_level_and_a_longer_rt60_smears_more():
    x = CLIPS[0]
    short, long_ = get_corruption("reverb_rt60_300ms").apply(x).wave, get_corruption("reverb_rt60_800ms").apply(x).wave
    rms = lambda v: float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))
    assert rms(short) == pytest.approx(rms(x), rel=1e-4) and rms(long_) == pytest.approx(rms(x), rel=1e-4)
    rir = C.room_impulse_response(0.5, 0.0, np.random.default_rng(0))
    tail = rir[1:]
    assert float(np.dot(tail, tail)) == pytest.approx(1.0)  # DRR 0 dB: tail energy = direct energy (1)
    late = tail[int(0.45 * SR) :]
    assert np.sqrt(np.mean(late**2)) < 10 ** (-50 / 20) * np.sqrt(np.mean(tail[:800] ** 2))  # ~54 dB down by 0.45 s


def test_gain_and_clipping_do_what_their_names_say():
    x = CLIPS[2]
    assert np.allclose(get_corruption("gain_minus20db").apply(x).wave, 0.1 * x, rtol=1e-5)
    clipped = get_corruption("clipping_10pct").apply(x).wave
    peak = np.max(np.abs(clipped))
    assert np.mean(np.abs(x) >= peak) == pytest.approx(0.10, abs=0.01)  # 10 % of the samples at the ceiling


@pytest.mark.parametrize("name", ["mp3_16kbps", "opus_12kbps"])
def test_codecs_reach_their_bitrate_and_stay_aligned_with_the_clip(name):
    c = get_corruption(name)
    if c.unavailable():
        pytest.skip(c.unavailable())
    x = np.concatenate([CLIPS[3]] * 4)  # 5 s: the container's headers weigh little
    out = c.apply(x, clip_id="long")
    assert out.bitrate_kbps == pytest.approx(c.param("kbps"), rel=0.3)
    assert snr_db(x, out.wave) > 3.0  # aligned: a misaligned decode would be near 0 dB or below


def test_a_codec_this_machine_lacks_is_skipped_with_its_reason(monkeypatch):
    import soundfile

    C.unavailable_reason.cache_clear()
    monkeypatch.setattr(soundfile, "available_subtypes", lambda fmt=None: {})
    try:
        reason = get_corruption("mp3_16kbps").unavailable()
        assert reason and "MPEG_LAYER_III" in reason and "FFmpeg" in reason
    finally:
        C.unavailable_reason.cache_clear()


def test_names_and_aliases_resolve_and_unknown_names_are_named_in_the_error():
    assert [c.name for c in resolve("standard")] == list(STANDARD)
    assert [c.name for c in resolve("white_snr10, telephone,white_snr10")] == ["white_snr10", "telephone"]
    assert len(resolve(["all"])) == len(CORRUPTIONS)
    assert len({c.kind for c in resolve("standard")}) >= 8  # one entry per kind
    with pytest.raises(ConfigError, match="unknown corruption 'vinyl'.*standard"):
        resolve(["white_snr10", "vinyl"])

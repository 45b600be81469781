"""Corruptions: what a deployed model meets long before an adversary — noise, other talkers, phone lines, codecs,
rooms, levels. Each is a registry entry (name, kind, parameters) and a pure function of one clip.

Every corruption maps a clip ``x`` (float32, mono, 16 kHz, as ``trustser.audio.load_audio`` reads it) to a clip of
the same length; whatever is random (the noise, the babble talkers and their offsets, the room) is drawn from a
generator seeded by (seed, corruption name, clip id) (:func:`clip_seed`), so a clip is corrupted the same way
whatever the order or the batch of the clips and in every run.

Kinds and their definitions (``x`` the clip, N its length):

* **white** / **pink** / **babble** (additive, ``snr_db``): ``y = x + n`` with the noise scaled so that
  ``10·log10(‖x‖² / ‖n‖²)`` is the target SNR over the whole clip, exactly (float64, then float32: the achieved
  SNR is within 1e-3 dB of the target; ``tests/test_corruptions.py`` checks 0.1 dB). White: Gaussian. Pink: 1/f power
  spectrum, by shaping a white spectrum with 1/√f (DC removed). Babble: ``talkers`` clips of *other* speakers of
  the same test set (:func:`babble_sources`, never the clip's own speaker), each at unit RMS, started at a random
  offset and looped to N samples, summed. With 2 test speakers (an EmoDB fold) all talkers are the one other
  speaker: a competing talker rather than a crowd; the sources are recorded per clip.
* **telephone**: the narrow band of a phone line: resampled to 8 kHz (torchaudio's sinc resampler, so band-limited to
  4 kHz), high-passed at 300 Hz (a biquad), companded by 8-bit μ-law (G.711's law: torchaudio's
  ``mu_law_encoding``/``decoding``), and resampled back to 16 kHz.
* **codec** (``mp3`` / ``opus`` at ``kbps``): encoded and decoded by libsndfile (through soundfile, a dependency
  already): MP3 (LAME, constant bitrate) and Ogg Opus. torchaudio's own codec paths (``apply_codec``,
  ``torchaudio.io.AudioEffector``) need the FFmpeg libraries, absent on many machines (and on the one this was
  written on: "Failed to intialize FFmpeg extension"); ``apply_codec`` is removed in torchaudio 2.9. libsndfile sets
  the bitrate through a compression level in [0, 1]: for MP3 at 16 kHz (MPEG-2) it is ``160 − 152·level`` kbps, for
  Opus ``6 + 250·(1 − level)`` kbps (libsndfile 1.2's mappings; the achieved bitrate, container included, is
  measured and reported). The decoded clip is aligned to the original (the codec's delay, found by
  cross-correlation within ±``MAX_CODEC_DELAY`` samples) and cut or zero-padded to N. Where this libsndfile lacks
  the codec the corruption is skipped with the reason (:func:`unavailable_reason`), never an error.
* **reverb** (``rt60_s``, ``drr_db``): convolution with a synthetic room impulse response: a direct path (a unit
  impulse) and a Gaussian-noise tail whose envelope falls by 60 dB in RT60 (``exp(−6.91·t / RT60)``), scaled so the
  direct-to-reverberant energy ratio is ``drr_db``; the output keeps the first N samples and the clean clip's RMS
  (reverberation, not a level change).
* **gain** (``db``): ``y = 10^(db/20)·x``, not clipped (the pipeline is float): level sensitivity alone.
* **clipping** (``share``): ``y = clip(x, −t, t)`` with t the (1 − share) quantile of |x|: ``share`` of the samples
  are clipped whatever the recording level.

Names encode the severity (``white_snr10``, ``mp3_16kbps``); ``resolve`` also takes the aliases ``standard`` (one
entry per kind at a moderate severity, :data:`STANDARD`) and ``all``.

    from trustser.metrics.corruptions import get_corruption
    y = get_corruption("pink_snr10").apply(x, clip_id="03a01Fa").wave
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from trustser import SAMPLE_RATE
from trustser.errors import ConfigError, UnknownNameError

MAX_CODEC_DELAY = 4096
"""Largest codec delay (samples) searched when aligning a decoded clip: LAME's delay plus its resampling at low
bitrates is about 1.1k samples at 16 kHz (measured); Opus's pre-skip is removed by the decoder."""

DECAY_60DB = math.log(1000.0)  # amplitude envelope exp(-6.91 t / RT60): energy down 60 dB at t = RT60


# ---------------------------------------------------------------------------------------------- helpers
def clip_seed(seed: int, name: str, clip_id: str) -> int:
    """The per-clip seed of one corruption: independent of clip order, batch and of the other corruptions."""
    return zlib.crc32(f"{seed}:{name}:{clip_id}".encode())


def snr_db(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """``10·log10(‖x‖² / ‖y − x‖²)`` in float64; NaN for a silent clip, +inf for an unchanged one."""
    x = np.asarray(clean, dtype=np.float64)
    d = np.asarray(corrupted, dtype=np.float64) - x
    signal, noise = float(np.dot(x, x)), float(np.dot(d, d))
    if signal == 0.0:
        return float("nan")
    return float("inf") if noise == 0.0 else 10.0 * math.log10(signal / noise)


def add_at_snr(x: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``x + a·noise`` with a chosen so the mixture's SNR over the whole clip is ``snr`` dB (float64 inside)."""
    x64, n64 = np.asarray(x, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    power_x, power_n = float(np.dot(x64, x64)), float(np.dot(n64, n64))
    if power_x == 0.0 or power_n == 0.0:
        return np.asarray(x, dtype=np.float32).copy()
    scale = math.sqrt(power_x / power_n * 10.0 ** (-snr / 10.0))
    return (x64 + scale * n64).astype(np.float32)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(x, dtype=np.float64))))) if x.size else 0.0


# --------------------------------------------------------------------------------------------- noises
def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f power spectrum: a white spectrum times 1/√f, DC removed (zero mean)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n)
    shaping = np.zeros_like(f)
    shaping[1:] = 1.0 / np.sqrt(f[1:])
    return np.fft.irfft(spectrum * shaping, n)


def babble_sources(
    index: int, speakers: Sequence[Any], talkers: int, seed: int = 0, clip_id: str = ""
) -> tuple[int, ...]:
    """Positions (in ``speakers``) of the ``talkers`` clips mixed into clip ``index``'s babble: never a clip of its own
    speaker. Talkers are spread over the other speakers (each used once before any is used twice, in a seeded
    order); within a speaker, distinct clips while there are some. Empty when no other speaker exists."""
    own = speakers[index]
    by_speaker: dict[Any, list[int]] = {}
    for i, s in enumerate(speakers):
        if s != own:
            by_speaker.setdefault(s, []).append(i)
    if not by_speaker or talkers < 1:
        return ()
    rng = np.random.default_rng(clip_seed(seed, "babble_sources", clip_id or str(index)))
    others = sorted(by_speaker, key=str)
    order = [others[i] for i in rng.permutation(len(others))]
    pools = {s: [by_speaker[s][i] for i in rng.permutation(len(by_speaker[s]))] for s in order}
    chosen = []
    for t in range(talkers):
        speaker = order[t % len(order)]
        pool = pools[speaker]
        used = t // len(order)
        chosen.append(pool[used % len(pool)])
    return tuple(chosen)


def babble_noise(n: int, sources: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The sum of the sources, each at unit RMS, started at a random offset and looped to ``n`` samples."""
    out = np.zeros(n, dtype=np.float64)
    for s in sources:
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        rms = _rms(s)
        if s.size == 0 or rms == 0.0:
            continue
        start = int(rng.integers(s.size))
        out += np.resize(np.roll(s, -start), n) / rms
    return out


# ------------------------------------------------------------------------------------------ channels
def telephone(
    x: np.ndarray,
    band_rate: int = 8000,
    highpass_hz: float = 300.0,
    mu_channels: int = 256,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """A phone line: down to ``band_rate``, high-passed, μ-law companded, back to ``sample_rate``."""
    import torch
    import torchaudio.functional as AF

    wave = torch.from_numpy(np.asarray(x, dtype=np.float32)).double()
    narrow = AF.resample(wave, sample_rate, band_rate)
    if highpass_hz > 0:
        narrow = AF.highpass_biquad(narrow, band_rate, highpass_hz)
    coded = AF.mu_law_decoding(AF.mu_law_encoding(narrow.clamp(-1.0, 1.0), mu_channels), mu_channels)
    return _fit_length(AF.resample(coded.double(), band_rate, sample_rate).numpy(), len(x))


CODECS: dict[str, tuple[str, str]] = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
"""Codec name → libsndfile (format, subtype)."""


def codec_level(codec: str, kbps: float, sample_rate: int = SAMPLE_RATE) -> float:
    """libsndfile's compression level for a bitrate (see the module docstring for its two mappings)."""
    if codec == "mp3":
        top, bottom = (320.0, 32.0) if sample_rate >= 32000 else (160.0, 8.0) if sample_rate >= 16000 else (64.0, 8.0)
        # libsndfile truncates its float bitrate to an int: aim half a kbps above so kbps itself is kept
        level = (top - min(kbps + 0.5, top)) / (top - bottom)
    elif codec == "opus":
        level = 1.0 - (kbps - 6.0) / 250.0
    else:
        raise UnknownNameError("codec", codec, list(CODECS))
    return min(1.0, max(0.0, level))


def _encode(x: np.ndarray, codec: str, kbps: float, sample_rate: int) -> bytes:
    import soundfile as sf

    fmt, subtype = CODECS[codec]
    buffer = io.BytesIO()
    extra = {"bitrate_mode": "CONSTANT"} if codec == "mp3" else {}  # libsndfile's Opus takes no bitrate mode
    sf.write(
        buffer,
        np.asarray(x, dtype=np.float32),
        sample_rate,
        format=fmt,
        subtype=subtype,
        compression_level=codec_level(codec, kbps, sample_rate),
        **extra,
    )
    return buffer.getvalue()


@lru_cache(maxsize=None)
def unavailable_reason(codec: str, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Why ``codec`` cannot run here (None when it can): probed once by encoding and decoding 0.1 s of a tone."""
    try:
        import soundfile as sf
    except Exception as exc:  # pragma: no cover - soundfile is a dependency
        return f"soundfile is not importable ({exc})"
    fmt, subtype = CODECS[codec]
    version = getattr(sf, "__libsndfile_version__", "?")
    if subtype not in sf.available_subtypes(fmt):
        return f"libsndfile {version} has no {fmt}/{subtype} encoder (and torchaudio's codecs need FFmpeg)"
    try:
        tone = (0.1 * np.sin(np.arange(sample_rate // 10) * 0.2)).astype(np.float32)
        data, _ = sf.read(io.BytesIO(_encode(tone, codec, 32.0, sample_rate)), dtype="float32")
        if data.size == 0:
            return f"libsndfile {version} decoded {codec} to nothing"
    except Exception as exc:
        return f"libsndfile {version} cannot encode {codec}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    return None


def _delay(clean: np.ndarray, decoded: np.ndarray, max_delay: int) -> int:
    """The lag (samples, ≥ −max_delay, ≤ max_delay) at which ``decoded`` best matches ``clean``."""
    n = clean.size + decoded.size
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(clean, size)), size)
    lags = np.concatenate((np.arange(0, max_delay + 1), np.arange(-max_delay, 0)))
    values = corr[lags % size]
    return int(lags[int(np.argmax(values))])


def codec(x: np.ndarray, name: str, kbps: float, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Encode and decode ``x``; returns the aligned clip of the same length and the achieved bitrate (kbps, container
    included)."""
    import soundfile as sf

    data = _encode(x, name, kbps, sample_rate)
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    if rate != sample_rate:  # pragma: no cover - libsndfile decodes at the encoded rate
        raise RuntimeError(f"{name} decoded at {rate} Hz, expected {sample_rate}")
    decoded = decoded.reshape(-1) if decoded.ndim == 1 else decoded.mean(axis=1)
    lag = _delay(np.asarray(x, dtype=np.float64), decoded.astype(np.float64), MAX_CODEC_DELAY)
    aligned = decoded[lag:] if lag >= 0 else np.concatenate((np.zeros(-lag, dtype=np.float32), decoded))
    return _fit_length(aligned, len(x)), len(data) * 8 / (len(x) / sample_rate) / 1000.0


def room_impulse_response(
    rt60_s: float, drr_db: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A unit direct path then an exponentially decaying noise tail (60 dB down at ``rt60_s``) whose energy is
    ``drr_db`` below the direct path's."""
    n = max(2, int(round(rt60_s * sample_rate)))
    t = np.arange(1, n) / sample_rate
    tail = rng.standard_normal(n - 1) * np.exp(-DECAY_60DB * t / rt60_s)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.dot(tail, tail)))
    return np.concatenate(([1.0], tail))


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir`` (torchaudio's FFT convolution), first N samples, at the clean clip's RMS."""
    import torch
    import torchaudio.functional as AF

    wet = AF.fftconvolve(torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(rir)).numpy()[: len(x)]
    rms_wet, rms_dry = _rms(wet), _rms(np.asarray(x))
    return (wet * (rms_dry / rms_wet if rms_wet > 0 else 1.0)).astype(np.float32)


def clip_share(x: np.ndarray, share: float) -> np.ndarray:
    """Hard clipping at the (1 − share) quantile of |x|."""
    threshold = float(np.quantile(np.abs(x), 1.0 - share))
    return np.clip(x, -threshold, threshold).astype(np.float32)


# ------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Corrupted:
    """One corrupted clip and what was measured on it: the achieved SNR (additive kinds; NaN otherwise), the
    achieved bitrate (codecs) and the babble sources (positions given by the caller)."""

    wave: np.ndarray
    achieved_snr_db: float = float("nan")
    bitrate_kbps: float = float("nan")
    sources: tuple[int, ...] = ()


@dataclass(frozen=True)
class Corruption:
    """A registry entry: a name, its kind and parameters (logged as they are), and what it does."""

    name: str
    kind: str
    params: tuple[tuple[str, Any], ...]
    description: str
    additive: bool = False  # y − x is noise at params["snr_db"]

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    def as_params(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.params)}

    @property
    def needs_other_speakers(self) -> bool:
        return self.kind == "babble"

    def unavailable(self) -> str | None:
        """Why this corruption cannot run on this machine (a codec libsndfile lacks), or None."""
        return unavailable_reason(self.param("codec")) if self.kind == "codec" else None

    def apply(
        self,
        x: np.ndarray,
        clip_id: str = "",
        seed: int = 0,
        others: Sequence[np.ndarray] = (),
        sources: tuple[int, ...] = (),
    ) -> Corrupted:
        """Corrupt one clip. ``others``: the babble talkers' clips (``babble_sources`` of the caller's list, passed
        in ``sources`` to be recorded); babble without them is an error (the caller skips such clips)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        rng = np.random.default_rng(clip_seed(seed, self.name, clip_id))
        p = dict(self.params)
        if self.kind in ("white", "pink", "babble"):
            if self.kind == "babble":
                if not others:
                    raise ValueError(f"{self.name}: babble needs clips of other speakers")
                noise = babble_noise(x.size, others, rng)
            else:
                noise = (white_noise if self.kind == "white" else pink_noise)(x.size, rng)
            y = add_at_snr(x, noise, p["snr_db"])
            return Corrupted(y, snr_db(x, y), sources=tuple(sources))
        if self.kind == "telephone":
            return Corrupted(telephone(x, p["band_rate"], p["highpass_hz"], p["mu_channels"]))
        if self.kind == "codec":
            y, kbps = codec(x, p["codec"], p["kbps"])
            return Corrupted(y, bitrate_kbps=kbps)
        if self.kind == "reverb":
            return Corrupted(reverberate(x, room_impulse_response(p["rt60_s"], p["drr_db"], rng)))
        if self.kind == "gain":
            return Corrupted((x.astype(np.float64) * 10.0 ** (p["db"] / 20.0)).astype(np.float32))
        if self.kind == "clipping":
            return Corrupted(clip_share(x, p["share"]))
        raise ValueError(f"unknown corruption kind '{self.kind}'")  # pragma: no cover - registry entries only


def _entries() -> list[Corruption]:
    out = []
    for kind, what in (
        ("white", "white Gaussian noise"),
        ("pink", "pink (1/f) noise"),
        ("babble", "babble: 4 clips of other test speakers, mixed"),
    ):
        for snr in (20, 10, 0):
            params: tuple[tuple[str, Any], ...] = (("snr_db", float(snr)),)
            if kind == "babble":
                params += (("talkers", 4),)
            out.append(Corruption(f"{kind}_snr{snr}", kind, params, f"{what} at {snr} dB SNR", additive=True))
    out.append(
        Corruption(
            "telephone",
            "telephone",
            (("band_rate", 8000), ("highpass_hz", 300.0), ("mu_channels", 256)),
            "phone line: 8 kHz, 300 Hz high-pass, 8-bit mu-law, back to 16 kHz",
        )
    )
    out.append(Corruption("mp3_16kbps", "codec", (("codec", "mp3"), ("kbps", 16.0)), "MP3 (LAME) at 16 kbps CBR"))
    out.append(Corruption("opus_12kbps", "codec", (("codec", "opus"), ("kbps", 12.0)), "Ogg Opus at 12 kbps"))
    for ms in (300, 800):
        out.append(
            Corruption(
                f"reverb_rt60_{ms}ms",
                "reverb",
                (("rt60_s", ms / 1000), ("drr_db", 0.0)),
                f"synthetic room, RT60 {ms} ms, direct-to-reverberant ratio 0 dB",
            )
        )
    out.append(Corruption("gain_minus20db", "gain", (("db", -20.0),), "20 dB quieter (not clipped)"))
    out.append(Corruption("gain_plus10db", "gain", (("db", 10.0),), "10 dB louder (not clipped)"))
    for pct in (1, 10):
        out.append(
            Corruption(
                f"clipping_{pct}pct",
                "clipping",
                (("share", pct / 100),),
                f"hard clipping of the loudest {pct} % of the samples",
            )
        )
    return out


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _entries()}

STANDARD: tuple[str, ...] = (
    "white_snr10",
    "pink_snr10",
    "babble_snr10",
    "telephone",
    "mp3_16kbps",
    "opus_12kbps",
    "reverb_rt60_800ms",
    "gain_minus20db",
    "clipping_10pct",
)
"""One entry per kind at a moderate severity: what ``--corruptions standard`` runs."""

ALIASES: dict[str, tuple[str, ...]] = {"standard": STANDARD, "all": tuple(CORRUPTIONS)}


def get_corruption(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise UnknownNameError("corruption", name, [*CORRUPTIONS, *ALIASES])
    return CORRUPTIONS[name]


def resolve(names: Sequence[str] | str) -> tuple[Corruption, ...]:
    """Registry entries for names and aliases (a comma-separated string works too), in order, each once."""
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    out: dict[str, Corruption] = {}
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"a corruption name must be text, got {name!r}")
        for member in ALIASES.get(name, (name,)):
            out.setdefault(member, get_corruption(member))
    return tuple(out.values())


__all__ = [
    "ALIASES",
    "CORRUPTIONS",
    "STANDARD",
    "Corrupted",
    "Corruption",
    "add_at_snr",
    "babble_sources",
    "clip_seed",
    "get_corruption",
    "resolve",
    "snr_db",
    "unavailable_reason",
]

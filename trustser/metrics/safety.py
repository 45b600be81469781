"""Safety: how easily a perturbation of the raw waveform, too quiet to matter to a listener, flips the emotion.

Definitions (per clip; x = its samples, N = its length, y = its label, f = backbone + head, L = cross-entropy):

* SNR of a perturbation δ: ``10·log10(‖x‖² / ‖δ‖²)`` dB. Undefined for a silent clip (‖x‖ = 0): such clips are
  skipped, counted and given a reason, never attacked.
* **FGSM**: ``δ = ε·sign(∇ₓ L(f(x), y))``. With every gradient entry nonzero ‖δ‖² = ε²·N, so the target SNR gives
  ``ε = ‖x‖/√N · 10^(−SNR/20)`` (:func:`snr_epsilon`). Where some entries are exactly zero (Whisper's STFT drops
  the last ≤ 119 samples; digital silence under a log-mel floor) sign() is 0 there, and ε is computed over the
  N_nz nonzero entries instead, so the achieved SNR still equals the target (``match_nonzero_gradient``, default
  on; the reference code does the same by dividing by rms(sign g)). The direction sign(g) does not depend on ε, so
  one gradient serves every SNR of a sweep.
* **PGD**: the same L∞ budget, ``|δᵢ| ≤ ε`` with ε the nominal one above, ``pgd_steps`` (10) signed-gradient
  steps of ``alpha = pgd_alpha_ratio·ε`` (ε/4: 10 steps can travel 2.5ε, enough to cross the ball) from a uniform
  random start in the ball (torchattacks' default). ‖δ‖² ≤ ε²·N, so its achieved SNR is ≥ the target: reported.
* **Gaussian**: white Gaussian noise scaled to the target SNR exactly, the same noise direction at every SNR of a
  sweep. Not an attack: the baseline saying how much of an ASR is plain noise sensitivity.
* **Attack success rate (ASR)**: over the clips the model classifies correctly (clean prediction == label), the
  share whose prediction under the perturbation differs from the clean one. NaN with a reason when no clip is
  correctly classified. Predictions (clean and perturbed) are always made in eval mode.

How the attacks run. FGSM and PGD are torchattacks' own; torchattacks wants inputs in [0, 1] and one scalar ε.
Each clip is therefore shown to it as ``u ∈ [0, 1]`` through an affine map (:class:`UnitIntervalView`,
``x = offset + scale·u`` with offset = min(x) − 2ε, scale = max(x) − min(x) + 4ε), so the clip's budget is the
scalar ``ε/scale`` and the clean clip sits at least 2ε (in waveform units) inside both bounds: any point of the
attack's L∞ ball (PGD's random start included) stays ≥ ε inside, so torchattacks' clamp to [0, 1] never binds and
the waveform budget is exactly ε. The attack runs in float64 in u (ε/scale can be ~1e-5; float32 would round the
steps), the model in float32.

Model mode. Eval by default. ``train_mode=True`` reproduces the reference code, which took the gradient with the
model in train mode, but only its dropout: :meth:`WaveformClassifier.train` switches on dropout modules and the
transformers modules whose sole train-time behaviour is functional dropout, never BatchNorm statistics,
wav2vec2/WavLM SpecAugment masking, LayerDrop or the feature encoder's requires_grad switch (the reference's
``model.train()`` had SpecAugment and LayerDrop on as well). Whisper's configs set every dropout to 0, so for Whisper
train mode changes nothing. Nothing is ever updated: backbone parameters stay frozen, no optimiser runs, gradients
are taken w.r.t. the input only. The model sees fp16-rounded features, as the head did in training (the cache stores
fp16), with a straight-through gradient.

Cost. FGSM costs one forward + backward per clip for all SNRs (its clean forward is reused as the clean
prediction in eval mode), plus one forward over the SNRs' perturbed versions; PGD costs ``pgd_steps`` forward +
backward per clip and SNR. The functions here are pure: no logging, no files; :func:`sweep_figure` returns a
matplotlib figure for the caller to log.

Batches. FGSM and Gaussian noise run ``batch_size`` clips per forward/backward (:class:`AttackSettings`; 1 = one
clip at a time, today's path exactly). Clips are length-sorted (within windows of ``SORT_WINDOW_BATCHES``
batches, so lazy waveforms keep memory flat), zero-padded to the longest of their batch and passed with their
lengths: the perturbation is masked to zero on the padding, ε comes from each clip's own energy (so each clip's SNR
is what it is alone), Gaussian seeds stay per clip (:func:`_clip_seed`), and the batch loss is the mean, which
scales each clip's gradient by 1/B and leaves its sign alone. This is sound because a clip's output does not
depend on its batch: every backbone guarantees it (``trustser.backbones.base``) — Whisper computes the log-mel per
clip, zeroes conv1 beyond the clip and masks padded positions out of attention, so it really batches; wav2vec 2.0 /
WavLM (GroupNorm over time: padding would change the output) and the s3prl models (APC, TERA) run each clip alone
inside their forward, so for them batching is still exact but saves only the head and the per-call overhead — no
backbone needs a per-clip fallback. What batching changes is float rounding (a batched matmul sums in another
order): logits differ by ~1e-6 relative, and a gradient entry that is ~0 may change sign; predictions, statuses and
flips agree (``tests/test_metrics_safety.py`` compares them on every backbone family). PGD (per-clip random
start from the global generator) and ``train_mode`` (per-clip dropout draws) stay one clip at a time. On the CPU
batching saves calls and thread synchronisation, not arithmetic (a clip's matmuls are already large, padding and
larger activations cost): measured, it pays at 2 threads on busy cores and not at 1 thread, hence the small
default.

    from trustser.metrics.safety import WaveformClassifier, ClipWaves, attack_success_rate
    report = attack_success_rate(WaveformClassifier(backbone, head), ClipWaves(paths), labels, "fgsm", 45.0,
                                 clip_ids=ids, clean_predictions=y_pred)
"""

from __future__ import annotations

import math
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trustser import MAX_SECONDS
from trustser.devices import module_device
from trustser.errors import UnknownNameError

DEFAULT_SNR_DB = 45.0
"""The method's operating point: perturbations 45 dB below the clip."""

SWEEP_SNRS_DB: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)

STATUSES = ("attacked", "incorrect", "clean_mismatch", "silent")
"""A clip's fate: attacked (correct, counted in the ASR); incorrect (clean prediction != label, not attacked);
clean_mismatch (the caller's clean prediction said correct but the waveform path's did not: excluded, counted);
silent (‖x‖ = 0, SNR undefined: skipped)."""


# ------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AttackSettings:
    """Everything that changes an attack's outcome besides the model, the clips and the SNR; logged as params."""

    pgd_steps: int = 10
    pgd_alpha_ratio: float = 0.25  # alpha = ratio·ε
    pgd_random_start: bool = True
    train_mode: bool = False  # gradient with dropout on, as the reference code did
    match_nonzero_gradient: bool = True  # FGSM: ε over the nonzero-gradient samples, so SNR == target exactly
    seed: int = 0  # per-clip seeds derive from it and the clip id: results do not depend on clip order
    # FGSM / Gaussian clips per forward (module docstring, "Batches"): how it is computed, not what; 1 = per clip.
    # 2, measured (real Whisper Base, 40 EmoDB clips, 7 SNRs, 2 busy CPU cores; scripts/bench.py attack_batching):
    # at 1 thread 1.0x per clip's speed (4: 0.9x, 8: 0.8x), at 2 threads 2.5x (4: 2.3x, 8: 1.7x)
    batch_size: int = 2

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {self.pgd_steps}")
        if not 0 < self.pgd_alpha_ratio <= 1:
            raise ValueError(f"pgd_alpha_ratio must be in (0, 1], got {self.pgd_alpha_ratio}")

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- the model
def is_dropout_like(module: nn.Module) -> bool:
    """An ``nn.Dropout``, or a module whose only use of ``self.training`` is functional dropout, as its backbone
    family declares (``BackboneFamily.dropout_like``: WhisperAttention, Wav2Vec2Attention, ...). Their parents are
    left in eval on purpose: the models (SpecAugment time masking), the encoders (LayerDrop) and the feature
    encoders (a requires_grad switch) train differently, not just more noisily."""
    from trustser.backbones.families import dropout_like_module_names

    return isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ in dropout_like_module_names()


class WaveformClassifier(nn.Module):
    """Backbone + head as one model from waveforms ``[B, T]`` (with ``lengths``) to logits: what is attacked.

    ``feature_dtype`` (fp16 by default) rounds the hidden states as the feature cache stores them, so the head
    sees the numbers it was trained and evaluated on and a clip's clean prediction matches the cached one. The
    rounding is straight-through for the gradient (an fp16 gradient would underflow).

    ``train()`` switches on dropout-like modules only (see :func:`is_dropout_like`); ``eval()`` all off.
    It is built in eval mode.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dtype: torch.dtype | None = torch.float16) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dtype = feature_dtype
        self.eval()  # an attack wrapper starts in inference mode, whatever mode its parts arrived in

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        if waves.dim() == 1:
            waves = waves[None]
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        out = self.backbone(waves, lengths)
        hidden = out.hidden
        if self.feature_dtype is not None and hidden.dtype != self.feature_dtype:
            rounded = hidden.to(self.feature_dtype).to(hidden.dtype)
            hidden = hidden + (rounded - hidden).detach() if hidden.requires_grad else rounded
        return self.head(hidden, out.mask)

    def train(self, mode: bool = True) -> "WaveformClassifier":
        for m in self.modules():
            m.training = bool(mode) and (m is self or is_dropout_like(m))
        return self


class UnitIntervalView(nn.Module):
    """One clip shown to torchattacks as ``u ∈ [0, 1]``; the model sees ``x + (u − u₀)·scale`` in float32.

    offset = min(x) − 2ε and scale = max(x) − min(x) + 4ε put u₀ = (x − offset)/scale inside
    [2ε/scale, 1 − 2ε/scale]; the attack's ball of radius ``eps_unit = ε/scale`` around u₀ therefore stays in
    [ε/scale, 1 − ε/scale] and the clamp to [0, 1] never binds. Writing the waveform as x plus a difference (not
    offset + scale·u) keeps the clean input bit-identical to x. The first forward's logits are kept: in an
    eval-mode FGSM that forward is at the clean clip, so it doubles as the clean prediction.
    """

    def __init__(self, classifier: nn.Module, x: Tensor, eps: float) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.classifier = classifier
        self.x = x.detach().reshape(-1)
        x64 = self.x.double()
        lo, hi = float(x64.min()), float(x64.max())
        self.offset = lo - 2.0 * eps
        self.scale = (hi - lo) + 4.0 * eps
        self.u0 = (x64 - self.offset) / self.scale
        self.eps_unit = eps / self.scale
        self.lengths = torch.tensor([self.x.numel()], device=self.x.device)
        self.first_logits: Tensor | None = None
        self.training = False  # torchattacks restores a model to train mode if it found it there

    def to_wave(self, u: Tensor) -> Tensor:
        return self.x + ((u.reshape(-1) - self.u0) * self.scale).to(self.x.dtype)

    def forward(self, u: Tensor) -> Tensor:
        logits = self.classifier(self.to_wave(u)[None], self.lengths)
        if self.first_logits is None:
            self.first_logits = logits.detach()
        return logits

    def check_inside(self, u: Tensor) -> None:
        """The clamp to [0, 1] must not have bound: anything touching a bound means the budget was altered."""
        _check_inside(u)


def _check_inside(u: Tensor) -> None:
    lo, hi = float(u.min()), float(u.max())
    if not (0.0 < lo and hi < 1.0):
        raise RuntimeError(f"attack reached the [0, 1] bound (min {lo}, max {hi}): the affine headroom failed")


def _pad(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """1-D clips → a zero-padded batch [B, longest] and their lengths."""
    lengths = torch.tensor([w.numel() for w in waves], device=waves[0].device)
    batch = waves[0].new_zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w.reshape(-1)
    return batch, lengths


class PaddedUnitIntervalView(nn.Module):
    """Several clips, zero-padded to the longest, shown to torchattacks as one batch ``u ∈ [0, 1]^{B×T}``.

    Each clip's row is its :class:`UnitIntervalView` (its own offset, scale and 2ε headroom from its own ε, the
    same float64 arithmetic). Padding sits at u = 0.5 and is masked out of the waveform: the model sees exact zeros
    there whatever u does, so the gradient, and any step taken, is zero there. torchattacks takes one scalar budget:
    ``eps_unit`` is the smallest clip's ``ε/scale``, inside every clip's headroom; FGSM uses only the sign of the
    step, so one budget serves every clip.
    """

    def __init__(self, classifier: nn.Module, xs: Sequence[Tensor], eps: Sequence[float]) -> None:
        super().__init__()
        if not all(e > 0 for e in eps):
            raise ValueError(f"eps must be > 0, got {list(eps)}")
        self.classifier = classifier
        self.x, self.lengths = _pad([x.detach().reshape(-1) for x in xs])
        self.mask = self.x.new_zeros(self.x.shape, dtype=torch.bool)
        offsets, scales = [], []
        for i, (x, e) in enumerate(zip(xs, eps)):
            x64 = x.detach().reshape(-1).double()
            lo, hi = float(x64.min()), float(x64.max())
            offsets.append(lo - 2.0 * e)
            scales.append((hi - lo) + 4.0 * e)
            self.mask[i, : x.numel()] = True
        as64 = dict(dtype=torch.float64, device=self.x.device)
        self.scale = torch.tensor(scales, **as64)[:, None]
        self.u0 = ((self.x.double() - torch.tensor(offsets, **as64)[:, None]) / self.scale).masked_fill(~self.mask, 0.5)
        self.eps_unit = min(e / s for e, s in zip(eps, scales))
        self.first_logits: Tensor | None = None
        self.training = False

    def to_wave(self, u: Tensor) -> Tensor:
        return self.x + ((u - self.u0) * self.scale).masked_fill(~self.mask, 0.0).to(self.x.dtype)

    def forward(self, u: Tensor) -> Tensor:
        logits = self.classifier(self.to_wave(u), self.lengths)
        if self.first_logits is None:
            self.first_logits = logits.detach()
        return logits

    def check_inside(self, u: Tensor) -> None:
        _check_inside(u)


# ------------------------------------------------------------------------------------------------ SNR and ε
def snr_db(clean: Tensor, perturbed: Tensor) -> float:
    """10·log10(‖x‖² / ‖x̃ − x‖²) in float64; NaN for a silent clip, +inf for a zero perturbation."""
    x = clean.detach().double().reshape(-1)
    d = perturbed.detach().double().reshape(-1) - x
    signal, noise = float(x.square().sum()), float(d.square().sum())
    if signal == 0.0:
        return float("nan")
    if noise == 0.0:
        return float("inf")
    return 10.0 * math.log10(signal / noise)


def snr_epsilon(x: Tensor, snr: float, n_active: int | None = None) -> float:
    """ε with ‖ε·s‖ at ``snr`` dB below ‖x‖ for a sign vector s of ``n_active`` (default: all) nonzero entries.

    ``ε = ‖x‖ / √n_active · 10^(−SNR/20)``: the FGSM ε, PGD's L∞ radius, and the Gaussian noise's standard
    deviation (all equal rms(x)·10^(−SNR/20) when n_active = N).
    """
    n = x.numel() if n_active is None else int(n_active)
    if n <= 0:
        raise ValueError("n_active must be > 0")
    norm = float(x.detach().double().norm())
    return norm / math.sqrt(n) * 10.0 ** (-snr / 20.0)


# --------------------------------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class ClipResult:
    """One clip under one attack at one SNR."""

    clip_id: str
    label: int
    status: str  # one of STATUSES
    target_snr_db: float
    clean_pred: int | None = None
    adv_pred: int | None = None
    flipped: bool | None = None
    eps: float = float("nan")  # FGSM ε, PGD L∞ radius, Gaussian σ (waveform units)
    achieved_snr_db: float = float("nan")
    n_samples: int = 0
    n_unperturbed: int = 0  # samples with δᵢ = 0 (FGSM: zero gradient)


@dataclass(frozen=True)
class AttackReport:
    """The ASR of one attack at one SNR, with the counts it rests on and every clip's record."""

    attack: str
    target_snr_db: float
    asr: float
    n_attacked: int
    n_flipped: int
    n_incorrect: int
    n_clean_mismatch: int
    n_silent: int
    mean_snr_db: float  # achieved SNR over attacked clips (finite values; a zero-gradient clip has +inf)
    min_snr_db: float
    max_snr_db: float
    records: tuple[ClipResult, ...]
    settings: AttackSettings
    reason: str | None = None  # why asr is NaN; also notes skipped clips

    @property
    def n_clips(self) -> int:
        return len(self.records)

    def to_dict(self) -> dict[str, float]:
        """Flat scalar view for logging; NaN stays NaN."""
        return {
            "asr": self.asr, "n_attacked": float(self.n_attacked), "n_flipped": float(self.n_flipped),
            "n_incorrect": float(self.n_incorrect), "n_clean_mismatch": float(self.n_clean_mismatch),
            "n_silent": float(self.n_silent), "target_snr_db": self.target_snr_db,
            "achieved_snr_db_mean": self.mean_snr_db, "achieved_snr_db_min": self.min_snr_db,
            "achieved_snr_db_max": self.max_snr_db,
        }

    def records_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.records], columns=list(ClipResult.__dataclass_fields__))


def summarise(attack: str, snr: float, records: Sequence[ClipResult], settings: AttackSettings) -> AttackReport:
    attacked = [r for r in records if r.status == "attacked"]
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    n_flipped = sum(bool(r.flipped) for r in attacked)
    snrs = np.array([r.achieved_snr_db for r in attacked], dtype=float)
    finite = snrs[np.isfinite(snrs)]
    stats = (float(finite.mean()), float(finite.min()), float(finite.max())) if finite.size else (math.nan,) * 3
    notes = []
    if not attacked:
        notes.append(f"no correctly classified clip to attack ({len(records)} clips: {counts['incorrect']} "
                     f"misclassified, {counts['clean_mismatch']} clean-prediction mismatches, "
                     f"{counts['silent']} silent)")
    if counts["silent"]:
        notes.append(f"{counts['silent']} silent clip(s) skipped: SNR undefined for ‖x‖ = 0")
    asr = n_flipped / len(attacked) if attacked else math.nan
    return AttackReport(attack, float(snr), asr, len(attacked), n_flipped, counts["incorrect"],
                        counts["clean_mismatch"], counts["silent"], *stats, tuple(records), settings,
                        "; ".join(notes) or None)


# ------------------------------------------------------------------------------------------------ the attacks
def _clip_seed(seed: int, clip_id: str) -> int:
    return zlib.crc32(f"{seed}:{clip_id}".encode())


def _gradient_context(model: nn.Module, device: torch.device):
    """cuDNN computes an RNN's backward only in train mode (APC's GRUs stay in eval here): use the native kernels."""
    if device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return torch.backends.cudnn.flags(enabled=False)
    return nullcontext()


@torch.no_grad()
def _predict(model: WaveformClassifier, waves: Tensor) -> list[int]:
    model.eval()
    lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
    return model(waves, lengths).argmax(-1).tolist()


@torch.no_grad()
def _predict_padded(model: WaveformClassifier, waves: Sequence[Tensor]) -> list[int]:
    """Predictions for clips of any lengths from one padded forward (a clip's output ignores its batch)."""
    model.eval()
    return model(*_pad(waves)).argmax(-1).tolist()


def _torchattack(model: WaveformClassifier, attack: Any, u0: Tensor, labels: Sequence[int],
                 train_mode: bool) -> Tensor:
    if train_mode:
        attack.set_model_training_mode(model_training=True, batchnorm_training=False, dropout_training=True)
    target = torch.tensor(list(labels), device=u0.device)
    try:
        with _gradient_context(model, u0.device):
            return attack(u0, target)
    finally:
        model.eval()  # torchattacks leaves a model it switched to train mode there


def _run_torchattack(model: WaveformClassifier, attack: Any, view: UnitIntervalView, label: int,
                     train_mode: bool) -> Tensor:
    u_adv = _torchattack(model, attack, view.u0[None], [label], train_mode)[0]
    view.check_inside(u_adv)
    return u_adv


@dataclass
class _Perturbed:
    waves: list[Tensor]  # float32, one per SNR
    eps: list[float]
    clean_logits: Tensor | None = None  # captured for free (eval-mode FGSM), else None


def _fgsm(model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings,
          seed: int) -> _Perturbed:
    import torchattacks

    view = UnitIntervalView(model, x, snr_epsilon(x, snrs[0]))
    u_adv = _run_torchattack(model, torchattacks.FGSM(view, eps=view.eps_unit), view, label, settings.train_mode)
    direction = torch.sign(u_adv - view.u0)  # ±1, 0 where the gradient is exactly zero
    waves, eps = _fgsm_steps(x, direction, snrs, settings)
    return _Perturbed(waves, eps, None if settings.train_mode else view.first_logits)


def _fgsm_steps(x: Tensor, direction: Tensor, snrs: Sequence[float],
                settings: AttackSettings) -> tuple[list[Tensor], list[float]]:
    """x + ε·direction at each SNR, ε over the nonzero entries of the direction (``match_nonzero_gradient``)."""
    n_active = int(direction.count_nonzero())
    x64, waves, eps = x.double(), [], []
    for snr in snrs:
        e = snr_epsilon(x, snr, n_active if settings.match_nonzero_gradient else None) if n_active else 0.0
        waves.append((x64 + e * direction).to(x.dtype))
        eps.append(e)
    return waves, eps


def _fgsm_batch(model: WaveformClassifier, xs: Sequence[Tensor], labels: Sequence[int], snrs: Sequence[float],
                settings: AttackSettings, seeds: Sequence[int]) -> list[_Perturbed]:
    """:func:`_fgsm` for several clips in one forward + backward (eval mode only: the forward is the clean one)."""
    import torchattacks

    view = PaddedUnitIntervalView(model, xs, [snr_epsilon(x, snrs[0]) for x in xs])
    u_adv = _torchattack(model, torchattacks.FGSM(view, eps=view.eps_unit), view.u0, labels, train_mode=False)
    view.check_inside(u_adv)
    direction = torch.sign(u_adv - view.u0)  # 0 on the padding: masked out of the wave, so no gradient there
    out = []
    for i, x in enumerate(xs):
        waves, eps = _fgsm_steps(x, direction[i, : x.numel()], snrs, settings)
        out.append(_Perturbed(waves, eps, view.first_logits[i : i + 1]))
    return out


def _pgd(model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings,
         seed: int) -> _Perturbed:
    import torchattacks

    waves, eps = [], []
    for snr in snrs:
        e = snr_epsilon(x, snr)
        view = UnitIntervalView(model, x, e)
        attack = torchattacks.PGD(view, eps=view.eps_unit, alpha=settings.pgd_alpha_ratio * view.eps_unit,
                                  steps=settings.pgd_steps, random_start=settings.pgd_random_start)
        u_adv = _run_torchattack(model, attack, view, label, settings.train_mode)
        waves.append(view.to_wave(u_adv).detach())
        eps.append(e)
    return _Perturbed(waves, eps)


def _gaussian(model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings,
              seed: int) -> _Perturbed:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.numel(), generator=generator, dtype=torch.float64).to(x.device)
    unit = noise / noise.norm() * math.sqrt(x.numel())  # rms exactly 1
    x64 = x.double()
    eps = [snr_epsilon(x, snr) for snr in snrs]
    return _Perturbed([(x64 + e * unit).to(x.dtype) for e in eps], eps)


def _gaussian_batch(model: WaveformClassifier, xs: Sequence[Tensor], labels: Sequence[int], snrs: Sequence[float],
                    settings: AttackSettings, seeds: Sequence[int]) -> list[_Perturbed]:
    """Noise is drawn per clip from the clip's own seed (no model call): what batching saves is the forwards."""
    return [_gaussian(model, x, y, snrs, settings, s) for x, y, s in zip(xs, labels, seeds)]


@dataclass(frozen=True)
class AttackSpec:
    """A registry entry. ``perturb(model, x, label, snrs, settings, seed)`` gives the perturbed clip per SNR;
    ``perturb_batch(model, xs, labels, snrs, settings, seeds)`` (None: the attack runs per clip) the same for
    several clips at once, eval mode, equal to ``perturb`` per clip up to float rounding, drawing no global random
    numbers."""

    name: str
    description: str
    perturb: Callable[..., _Perturbed]
    first_forward_is_clean: bool  # in eval mode its first model call is at the clean clip: reuse it
    perturb_batch: Callable[..., list[_Perturbed]] | None = None


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fgsm", "FGSM (torchattacks): one signed-gradient step of ε, one gradient for all SNRs",
                       _fgsm, True, _fgsm_batch),
    "pgd": AttackSpec("pgd", "PGD (torchattacks): L∞ ball of radius ε, random start, steps of alpha", _pgd, False),
    "gaussian": AttackSpec("gaussian", "white Gaussian noise at the target SNR (a baseline, not an attack)",
                           _gaussian, False, _gaussian_batch),
}


def get_attack_spec(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise UnknownNameError("attack", name, list(ATTACKS))
    return ATTACKS[name]


def _as_wave(wave: Any, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(wave) if not isinstance(wave, Tensor) else wave,
                           dtype=torch.float32).reshape(-1).to(device)


def _unattacked(x: Tensor, clip_id: str, label: int, snrs: tuple[float, ...], status: str,
                clean_pred: int | None = None) -> list[ClipResult]:
    return [ClipResult(clip_id=clip_id, label=label, status=status, target_snr_db=snr, clean_pred=clean_pred,
                       n_samples=int(x.numel())) for snr in snrs]


def _skipped(x: Tensor, clip_id: str, label: int, given: int | None,
             snrs: tuple[float, ...]) -> list[ClipResult] | None:
    """The records of a clip skipped without any model call (silent, or known misclassified), else None."""
    if float(x.double().square().sum()) == 0.0:
        return _unattacked(x, clip_id, label, snrs, "silent")
    if given is not None and given != label:
        return _unattacked(x, clip_id, label, snrs, "incorrect", given)
    return None


def _attacked(x: Tensor, clip_id: str, label: int, snrs: tuple[float, ...], clean_pred: int, out: _Perturbed,
              adv_preds: Sequence[int]) -> list[ClipResult]:
    return [ClipResult(clip_id=clip_id, label=label, status="attacked", target_snr_db=snr, clean_pred=clean_pred,
                       adv_pred=int(adv), flipped=int(adv) != clean_pred, eps=float(e),
                       achieved_snr_db=snr_db(x, wave), n_samples=int(x.numel()),
                       n_unperturbed=int((wave == x).sum()))
            for snr, wave, e, adv in zip(snrs, out.waves, out.eps, adv_preds)]


def _attack_clip(classifier: WaveformClassifier, spec: AttackSpec, x: Tensor, clip_id: str, label: int,
                 given: int | None, snrs: tuple[float, ...], settings: AttackSettings) -> list[ClipResult]:
    """One clip's record at each SNR: skipped with its status, or attacked."""

    def unattacked(status: str, clean_pred: int | None = None) -> list[ClipResult]:
        return _unattacked(x, clip_id, label, snrs, status, clean_pred)

    skipped = _skipped(x, clip_id, label, given, snrs)
    if skipped is not None:
        return skipped
    failed = "incorrect" if given is None else "clean_mismatch"
    captured = spec.first_forward_is_clean and not settings.train_mode
    if not captured:
        clean_pred = _predict(classifier, x[None])[0]
        if clean_pred != label:
            return unattacked(failed, clean_pred)
    seed = _clip_seed(settings.seed, clip_id)
    device = x.device
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)  # PGD's random start and train-mode dropout
        out = spec.perturb(classifier, x, label, snrs, settings, seed)
    if captured:
        clean_pred = int(out.clean_logits.argmax(-1)[0])
        if clean_pred != label:
            return unattacked(failed, clean_pred)
    adv_preds = _predict(classifier, torch.stack(out.waves))  # every SNR's version in one batch
    return _attacked(x, clip_id, label, snrs, clean_pred, out, adv_preds)


def _attack_batch(classifier: WaveformClassifier, spec: AttackSpec, xs: Sequence[Tensor], clip_ids: Sequence[str],
                  labels: Sequence[int], given: Sequence[int | None], snrs: tuple[float, ...],
                  settings: AttackSettings) -> list[list[ClipResult]]:
    """:func:`_attack_clip` for clips that need the model (none silent or known misclassified), eval mode, in
    padded batches: one clean forward (Gaussian) or one forward + backward (FGSM, whose forward is the clean one),
    then one forward over every clip's perturbed versions."""
    failed = ["incorrect" if g is None else "clean_mismatch" for g in given]
    records: list[list[ClipResult] | None] = [None] * len(xs)
    clean: list[int | None] = [None] * len(xs)
    if not spec.first_forward_is_clean:
        clean = list(_predict_padded(classifier, xs))
        for k, (pred, label) in enumerate(zip(clean, labels)):
            if pred != label:
                records[k] = _unattacked(xs[k], clip_ids[k], label, snrs, failed[k], pred)
    todo = [k for k in range(len(xs)) if records[k] is None]
    if todo:
        outs = spec.perturb_batch(classifier, [xs[k] for k in todo], [labels[k] for k in todo], snrs, settings,
                                  [_clip_seed(settings.seed, clip_ids[k]) for k in todo])
        survivors = []
        for k, out in zip(todo, outs):
            if spec.first_forward_is_clean:
                clean[k] = int(out.clean_logits.argmax(-1)[0])
            if clean[k] != labels[k]:
                records[k] = _unattacked(xs[k], clip_ids[k], labels[k], snrs, failed[k], clean[k])
            else:
                survivors.append((k, out))
        if survivors:  # every survivor's every SNR in one padded forward
            adv = _predict_padded(classifier, [w for _, out in survivors for w in out.waves])
            for j, (k, out) in enumerate(survivors):
                records[k] = _attacked(xs[k], clip_ids[k], labels[k], snrs, int(clean[k]), out,
                                       adv[j * len(snrs): (j + 1) * len(snrs)])
    return records  # type: ignore[return-value]


SORT_WINDOW_BATCHES = 16
"""Batched attacks read this many batches' worth of clips at a time and sort them by length: little padding, and
memory bounded by the window for a lazy sequence of waveforms."""


def _attack_batched(classifier: WaveformClassifier, spec: AttackSpec, waves: Sequence[Any], labels: Sequence[int],
                    clip_ids: Sequence[str], given: Sequence[int | None], snrs: tuple[float, ...],
                    settings: AttackSettings, device: torch.device, bar: Any) -> list[list[ClipResult]]:
    """Every clip's records, in input order, with the clips that need the model attacked in length-sorted batches."""
    records: list[list[ClipResult] | None] = [None] * len(waves)
    window = settings.batch_size * SORT_WINDOW_BATCHES
    for start in range(0, len(waves), window):
        todo = []
        for i in range(start, min(start + window, len(waves))):
            x = _as_wave(waves[i], device)
            records[i] = _skipped(x, clip_ids[i], int(labels[i]), given[i], snrs)
            if records[i] is None:
                todo.append((i, x))
            else:
                bar.update(1)
        todo.sort(key=lambda item: item[1].numel())
        for b in range(0, len(todo), settings.batch_size):
            group = todo[b: b + settings.batch_size]
            index = [i for i, _ in group]
            results = _attack_batch(classifier, spec, [x for _, x in group], [clip_ids[i] for i in index],
                                    [int(labels[i]) for i in index], [given[i] for i in index], snrs, settings)
            for i, result in zip(index, results):
                records[i] = result
            bar.update(len(group))
    return records  # type: ignore[return-value]


def run_attack(classifier: WaveformClassifier, waves: Sequence[Any], labels: Sequence[int], attack: str = "fgsm",
               snrs: Sequence[float] = (DEFAULT_SNR_DB,), clip_ids: Sequence[str] | None = None,
               clean_predictions: Sequence[int] | None = None, settings: AttackSettings = AttackSettings(),
               progress: bool = False) -> dict[float, AttackReport]:
    """Attack every clip at every SNR; one :class:`AttackReport` per SNR.

    ``waves``: any sequence of 1-D waveforms (tensors or arrays; a lazy one such as :class:`ClipWaves` keeps memory
    flat). ``clean_predictions`` (e.g. the cached-feature predictions the performance metric used) lets clips
    already known to be misclassified be skipped without any compute; the clean prediction of the waveform path
    is still checked, and a disagreement is excluded as ``clean_mismatch``. The classifier's mode is restored.
    FGSM and Gaussian noise run ``settings.batch_size`` clips at a time (module docstring, "Batches"); PGD and
    ``train_mode`` one at a time.
    """
    spec = get_attack_spec(attack)
    snrs = tuple(dict.fromkeys(float(s) for s in snrs))
    if not snrs:
        raise ValueError("at least one SNR is needed")
    if len(labels) != len(waves) or (clip_ids is not None and len(clip_ids) != len(waves)) or (
            clean_predictions is not None and len(clean_predictions) != len(waves)):
        raise ValueError("waves, labels, clip_ids and clean_predictions must have the same length")
    from tqdm.auto import tqdm

    device = module_device(classifier)
    was_training = classifier.training
    records: dict[float, list[ClipResult]] = {snr: [] for snr in snrs}
    ids = [str(clip_ids[i]) if clip_ids is not None else str(i) for i in range(len(waves))]
    given = [None if clean_predictions is None else int(clean_predictions[i]) for i in range(len(waves))]
    batched = settings.batch_size > 1 and spec.perturb_batch is not None and not settings.train_mode
    try:
        classifier.eval()
        with tqdm(total=len(waves), desc=f"{attack} attack", unit="clip", disable=not progress) as bar:
            if batched:
                per_clip = _attack_batched(classifier, spec, waves, labels, ids, given, snrs, settings, device, bar)
            else:
                per_clip = []
                for i in range(len(waves)):
                    per_clip.append(_attack_clip(classifier, spec, _as_wave(waves[i], device), ids[i],
                                                 int(labels[i]), given[i], snrs, settings))
                    bar.update(1)
        for results in per_clip:
            for snr, result in zip(snrs, results):
                records[snr].append(result)
    finally:
        classifier.train(was_training)
    return {snr: summarise(attack, snr, records[snr], settings) for snr in snrs}


def attack_success_rate(classifier: WaveformClassifier, waves: Sequence[Any], labels: Sequence[int],
                        attack: str = "fgsm", snr: float = DEFAULT_SNR_DB, **kwargs: Any) -> AttackReport:
    """The ASR of one attack at one SNR (the method's metric: FGSM at 45 dB); see :func:`run_attack`."""
    return run_attack(classifier, waves, labels, attack, (snr,), **kwargs)[float(snr)]


# ----------------------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class SweepResult:
    """ASR per attack per SNR."""

    reports: Mapping[str, Mapping[float, AttackReport]]

    def asr(self, attack: str, snr: float) -> float:
        return self.reports[attack][float(snr)].asr

    def table(self):
        """One row per (attack, SNR): ASR, counts and achieved SNR."""
        import pandas as pd

        rows = [{"attack": a, "snr_db": s, **r.to_dict()} for a, by_snr in self.reports.items()
                for s, r in sorted(by_snr.items())]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, float]:
        """``asr_{attack}_snr{SNR}`` → ASR, for logging as metrics."""
        return {f"asr_{a}_snr{s:g}": r.asr for a, by_snr in self.reports.items() for s, r in by_snr.items()}


def snr_sweep(classifier: WaveformClassifier, waves: Sequence[Any], labels: Sequence[int],
              attacks: Sequence[str] = ("fgsm", "pgd", "gaussian"), snrs: Sequence[float] = SWEEP_SNRS_DB,
              **kwargs: Any) -> SweepResult:
    """ASR of each attack at each SNR. FGSM and Gaussian take one gradient/noise draw per clip for all SNRs."""
    for a in attacks:
        get_attack_spec(a)
    return SweepResult({a: run_attack(classifier, waves, labels, a, snrs, **kwargs) for a in attacks})


def sweep_figure(sweep: SweepResult, title: str = ""):
    """ASR (%) against SNR (dB), one line per attack; matplotlib Agg, returned for the caller to save or log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=110)
    for attack, by_snr in sweep.reports.items():
        snrs = sorted(by_snr)
        ax.plot(snrs, [100 * by_snr[s].asr for s in snrs], marker="o", label=attack)
    ax.set_xlabel("SNR of the perturbation (dB; higher = quieter)")
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------ audio
@dataclass(frozen=True)
class ClipWaves(Sequence[Tensor]):
    """Waveforms read on access, as the feature extractor read them (mono, 16 kHz, first ``max_seconds``)."""

    paths: Sequence[Path | str]
    max_seconds: float = MAX_SECONDS

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        from trustser.audio import load_audio

        if isinstance(i, slice):
            return ClipWaves(self.paths[i], self.max_seconds)
        return torch.from_numpy(load_audio(self.paths[i], max_seconds=self.max_seconds))

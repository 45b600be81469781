"""The perturbations, and their registry :data:`ATTACKS` (the one list of attack names the run configuration checks
against): each gives one clip's (or one batch's) perturbed waveforms at every SNR asked for. Imports
:mod:`.settings`, :mod:`.snr`, :mod:`.model` and :mod:`.views`.

Definitions (per clip; x = its samples, N = its length, y = its label, f = backbone + head, L = cross-entropy; SNR as
in :mod:`trustser.metrics.safety.snr`):

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

FGSM and PGD run through torchattacks on the [0, 1] views of :mod:`trustser.metrics.safety.views`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from trustser.errors import UnknownNameError
from trustser.metrics.safety.model import WaveformClassifier
from trustser.metrics.safety.settings import AttackSettings
from trustser.metrics.safety.snr import snr_epsilon
from trustser.metrics.safety.views import PaddedUnitIntervalView, UnitIntervalView


def _gradient_context(model: nn.Module, device: torch.device):
    """cuDNN computes an RNN's backward only in train mode (APC's GRUs stay in eval here): use the native kernels."""
    if device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return torch.backends.cudnn.flags(enabled=False)
    return nullcontext()


def _torchattack(model: WaveformClassifier, attack: Any, u0: Tensor, labels: Sequence[int], train_mode: bool) -> Tensor:
    if train_mode:
        attack.set_model_training_mode(model_training=True, batchnorm_training=False, dropout_training=True)
    target = torch.tensor(list(labels), device=u0.device)
    try:
        with _gradient_context(model, u0.device):
            return attack(u0, target)
    finally:
        model.eval()  # torchattacks leaves a model it switched to train mode there


def _run_torchattack(
    model: WaveformClassifier, attack: Any, view: UnitIntervalView, label: int, train_mode: bool
) -> Tensor:
    u_adv = _torchattack(model, attack, view.u0[None], [label], train_mode)[0]
    view.check_inside(u_adv)
    return u_adv


@dataclass
class _Perturbed:
    waves: list[Tensor]  # float32, one per SNR
    eps: list[float]
    clean_logits: Tensor | None = None  # captured for free (eval-mode FGSM), else None


def _fgsm(
    model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings, seed: int
) -> _Perturbed:
    import torchattacks

    view = UnitIntervalView(model, x, snr_epsilon(x, snrs[0]))
    u_adv = _run_torchattack(model, torchattacks.FGSM(view, eps=view.eps_unit), view, label, settings.train_mode)
    direction = torch.sign(u_adv - view.u0)  # ±1, 0 where the gradient is exactly zero
    waves, eps = _fgsm_steps(x, direction, snrs, settings)
    return _Perturbed(waves, eps, None if settings.train_mode else view.first_logits)


def _fgsm_steps(
    x: Tensor, direction: Tensor, snrs: Sequence[float], settings: AttackSettings
) -> tuple[list[Tensor], list[float]]:
    """x + ε·direction at each SNR, ε over the nonzero entries of the direction (``match_nonzero_gradient``)."""
    n_active = int(direction.count_nonzero())
    x64, waves, eps = x.double(), [], []
    for snr in snrs:
        e = snr_epsilon(x, snr, n_active if settings.match_nonzero_gradient else None) if n_active else 0.0
        waves.append((x64 + e * direction).to(x.dtype))
        eps.append(e)
    return waves, eps


def _fgsm_batch(
    model: WaveformClassifier,
    xs: Sequence[Tensor],
    labels: Sequence[int],
    snrs: Sequence[float],
    settings: AttackSettings,
    seeds: Sequence[int],
) -> list[_Perturbed]:
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


def _pgd(
    model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings, seed: int
) -> _Perturbed:
    import torchattacks

    waves, eps = [], []
    for snr in snrs:
        e = snr_epsilon(x, snr)
        view = UnitIntervalView(model, x, e)
        attack = torchattacks.PGD(
            view,
            eps=view.eps_unit,
            alpha=settings.pgd_alpha_ratio * view.eps_unit,
            steps=settings.pgd_steps,
            random_start=settings.pgd_random_start,
        )
        u_adv = _run_torchattack(model, attack, view, label, settings.train_mode)
        waves.append(view.to_wave(u_adv).detach())
        eps.append(e)
    return _Perturbed(waves, eps)


def _gaussian(
    model: WaveformClassifier, x: Tensor, label: int, snrs: Sequence[float], settings: AttackSettings, seed: int
) -> _Perturbed:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.numel(), generator=generator, dtype=torch.float64).to(x.device)
    unit = noise / noise.norm() * math.sqrt(x.numel())  # rms exactly 1
    x64 = x.double()
    eps = [snr_epsilon(x, snr) for snr in snrs]
    return _Perturbed([(x64 + e * unit).to(x.dtype) for e in eps], eps)


def _gaussian_batch(
    model: WaveformClassifier,
    xs: Sequence[Tensor],
    labels: Sequence[int],
    snrs: Sequence[float],
    settings: AttackSettings,
    seeds: Sequence[int],
) -> list[_Perturbed]:
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
    "fgsm": AttackSpec(
        "fgsm",
        "FGSM (torchattacks): one signed-gradient step of ε, one gradient for all SNRs",
        _fgsm,
        True,
        _fgsm_batch,
    ),
    "pgd": AttackSpec("pgd", "PGD (torchattacks): L∞ ball of radius ε, random start, steps of alpha", _pgd, False),
    "gaussian": AttackSpec(
        "gaussian",
        "white Gaussian noise at the target SNR (a baseline, not an attack)",
        _gaussian,
        False,
        _gaussian_batch,
    ),
}


def get_attack_spec(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise UnknownNameError("attack", name, list(ATTACKS))
    return ATTACKS[name]

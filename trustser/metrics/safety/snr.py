"""SNR and ε: pure maths on a clip's samples x (N = its length), float64 throughout; imports nothing from the package.

* SNR of a perturbation δ: ``10·log10(‖x‖² / ‖δ‖²)`` dB. Undefined for a silent clip (‖x‖ = 0): such clips are
  skipped, counted and given a reason, never attacked.
* ε for a target SNR (:func:`snr_epsilon`): the budget that puts a sign vector at that SNR, derived with FGSM in
  :mod:`trustser.metrics.safety.attacks`.
"""

from __future__ import annotations

import math

from torch import Tensor


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

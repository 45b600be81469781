"""The clips as torchattacks sees them: in [0, 1], with one scalar budget (imports :mod:`.model` only).

How the attacks run. FGSM and PGD are torchattacks' own; torchattacks wants inputs in [0, 1] and one scalar ε.
Each clip is therefore shown to it as ``u ∈ [0, 1]`` through an affine map (:class:`UnitIntervalView`,
``x = offset + scale·u`` with offset = min(x) − 2ε, scale = max(x) − min(x) + 4ε), so the clip's budget is the
scalar ``ε/scale`` and the clean clip sits at least 2ε (in waveform units) inside both bounds: any point of the
attack's L∞ ball (PGD's random start included) stays ≥ ε inside, so torchattacks' clamp to [0, 1] never binds and
the waveform budget is exactly ε. The attack runs in float64 in u (ε/scale can be ~1e-5; float32 would round the
steps), the model in float32.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from trustser.metrics.safety.model import _pad


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

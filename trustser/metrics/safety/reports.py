"""What an attack reports: each clip's fate at each SNR (:data:`STATUSES`, :class:`ClipResult`) and, per attack and
SNR, the ASR with the counts it rests on (:class:`AttackReport`, :func:`summarise`). Imports :mod:`.settings` only.

* **Attack success rate (ASR)**: over the clips the model classifies correctly (clean prediction == label), the
  share whose prediction under the perturbation differs from the clean one. NaN with a reason when no clip is
  correctly classified. Predictions (clean and perturbed) are always made in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from trustser.metrics.safety.settings import AttackSettings


STATUSES = ("attacked", "incorrect", "clean_mismatch", "silent")
"""A clip's fate: attacked (correct, counted in the ASR); incorrect (clean prediction != label, not attacked);
clean_mismatch (the caller's clean prediction said correct but the waveform path's did not: excluded, counted);
silent (‖x‖ = 0, SNR undefined: skipped)."""


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
            "asr": self.asr,
            "n_attacked": float(self.n_attacked),
            "n_flipped": float(self.n_flipped),
            "n_incorrect": float(self.n_incorrect),
            "n_clean_mismatch": float(self.n_clean_mismatch),
            "n_silent": float(self.n_silent),
            "target_snr_db": self.target_snr_db,
            "achieved_snr_db_mean": self.mean_snr_db,
            "achieved_snr_db_min": self.min_snr_db,
            "achieved_snr_db_max": self.max_snr_db,
        }

    def waveform_predictions(self) -> list[int | None]:
        """Each clip's clean prediction on the waveform path where this attack made it (attacked: correct;
        clean_mismatch: the waveform path disagreed with the caller), None where it did not run the model (silent,
        or skipped as known misclassified). In input order; another attack on the same classifier can reuse them
        (``run_attack(waveform_predictions=...)``)."""
        return [r.clean_pred if r.status in ("attacked", "clean_mismatch") else None for r in self.records]

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
        notes.append(
            f"no correctly classified clip to attack ({len(records)} clips: {counts['incorrect']} "
            f"misclassified, {counts['clean_mismatch']} clean-prediction mismatches, "
            f"{counts['silent']} silent)"
        )
    if counts["silent"]:
        notes.append(f"{counts['silent']} silent clip(s) skipped: SNR undefined for ‖x‖ = 0")
    asr = n_flipped / len(attacked) if attacked else math.nan
    return AttackReport(
        attack,
        float(snr),
        asr,
        len(attacked),
        n_flipped,
        counts["incorrect"],
        counts["clean_mismatch"],
        counts["silent"],
        *stats,
        tuple(records),
        settings,
        "; ".join(notes) or None,
    )

"""What an attack runs with, besides the model and the clips: the method's operating point, the sweep's SNRs and
:class:`AttackSettings` (logged as params). The bottom of the package: imports nothing from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


DEFAULT_SNR_DB = 45.0
"""The method's operating point: perturbations 45 dB below the clip."""

SWEEP_SNRS_DB: tuple[float, ...] = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0)


@dataclass(frozen=True)
class AttackSettings:
    """Everything that changes an attack's outcome besides the model, the clips and the SNR; logged as params."""

    pgd_steps: int = 10
    pgd_alpha_ratio: float = 0.25  # alpha = ratio·ε
    pgd_random_start: bool = True
    train_mode: bool = False  # gradient with dropout on, as the reference code did
    match_nonzero_gradient: bool = True  # FGSM: ε over the nonzero-gradient samples, so SNR == target exactly
    seed: int = 0  # per-clip seeds derive from it and the clip id: results do not depend on clip order
    # FGSM / Gaussian clips per forward (runner's docstring, "Batches"): how it is computed, not what; 1 = per clip.
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

"""The clips' audio for the attacks: waveforms read on access (:class:`ClipWaves`), so a run over many clips keeps
memory flat. Imports nothing from the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from trustser import MAX_SECONDS


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

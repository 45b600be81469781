"""The downstream head of the method: a pure nn.Module, no training logic.

softmax-normalised learnable layer weights → weighted sum of hidden states → Conv1d(hidden→width, k=1) → ReLU →
Conv1d(width→width, k=1) → mean over the unpadded frames → Linear → ReLU → Linear → classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLINGS = ("weighted", "last")


class EmotionHead(nn.Module):
    def __init__(self, num_layers: int, hidden_size: int, num_classes: int = 4, width: int = 128,
                 pooling: str = "weighted") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.pooling = pooling
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.conv1 = nn.Conv1d(hidden_size, width, kernel_size=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=1)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, num_classes)

    def layer_weights(self) -> Tensor:
        return F.softmax(self.layer_logits, dim=0)

    def combine_layers(self, hidden: Tensor) -> Tensor:
        """[B, L, T, H] → [B, T, H]."""
        if self.pooling == "last":
            return hidden[:, -1]
        return torch.einsum("l,blth->bth", self.layer_weights().to(hidden.dtype), hidden)

    def embed(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Utterance embedding [B, width]: the masked time-mean of the conv stack's output."""
        return self._pool(self.combine_layers(hidden), mask)

    def _pool(self, combined: Tensor, mask: Tensor) -> Tensor:
        x = self.conv2(F.relu(self.conv1(combined.transpose(1, 2))))  # [B, width, T]
        m = mask[:, None, :].to(x.dtype)
        return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(self.embed(hidden, mask))))

    def forward_clips(self, clips: list[Tensor]) -> Tensor:
        """Logits for unpadded clips [L, T_i, H] (any float dtype), equal to ``forward`` on their padded batch.

        The layer sum is taken per clip *before* padding, so the padded tensor is [B, T, H] instead of
        [B, L, T, H]: L times less memory traffic, which dominates training time on cached features.
        """
        combined = [self.combine_layers(c.float()[None])[0] for c in clips]
        longest = max(c.shape[0] for c in combined)
        batch = torch.stack([F.pad(c, (0, 0, 0, longest - c.shape[0])) for c in combined])
        lengths = torch.tensor([c.shape[0] for c in combined])
        mask = torch.arange(longest)[None, :] < lengths[:, None]
        return self.fc2(F.relu(self.fc1(self._pool(batch, mask))))

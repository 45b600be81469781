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
        x = self.combine_layers(hidden).transpose(1, 2)  # [B, H, T]
        x = self.conv2(F.relu(self.conv1(x)))
        m = mask[:, None, :].to(x.dtype)
        return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(self.embed(hidden, mask))))

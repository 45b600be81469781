"""The downstream head of the method: a pure nn.Module, no training logic.

softmax-normalised learnable layer weights → weighted sum of hidden states → Conv1d(hidden→width, k=1) → ReLU →
Conv1d(width→width, k=1) → mean over the unpadded frames → Linear → ReLU → Linear → classes.

Optionally each layer's hidden states are standardised first ((x − mean) / std per layer and dimension, statistics
fitted on the training clips: ``trustser.standardize``). The statistics are buffers of the head, saved and loaded
with it; a head without them computes exactly what the method's head computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.layer_sum import scaled_layer_sum
from trustser.run_config import POOLINGS


class EmotionHead(nn.Module):
    def __init__(
        self, num_layers: int, hidden_size: int, num_classes: int = 4, width: int = 128, pooling: str = "weighted"
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.pooling = pooling
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.conv1 = nn.Conv1d(hidden_size, width, kernel_size=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=1)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, num_classes)
        # standardisation statistics (identity until set_standardization); persistent, so they travel with the model
        self.register_buffer("feat_mean", torch.zeros(num_layers, hidden_size))
        self.register_buffer("feat_inv_std", torch.ones(num_layers, hidden_size))
        self.register_buffer("standardized", torch.tensor(False))

    def set_standardization(self, mean: Tensor, std: Tensor, min_std: float = 1e-5) -> None:
        """Standardise every layer's dimensions with these [L, H] statistics (fitted on training clips only)."""
        if mean.shape != self.feat_mean.shape or std.shape != self.feat_mean.shape:
            raise ValueError(
                f"standardisation statistics must be {tuple(self.feat_mean.shape)}, got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}"
            )
        self.feat_mean.copy_(mean)
        self.feat_inv_std.copy_(1.0 / std.clamp(min=min_std))
        self.standardized.fill_(True)

    def layer_weights(self) -> Tensor:
        return F.softmax(self.layer_logits, dim=0)

    def combine_layers(self, hidden: Tensor) -> Tensor:
        """[B, L, T, H] → [B, T, H] (padded frames of a standardised head are not zero; pooling masks them)."""
        if bool(self.standardized):
            hidden = (hidden.float() - self.feat_mean[:, None, :]) * self.feat_inv_std[:, None, :]
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

        Everything between the layer sum and the time-mean acts on each frame alone (k=1 convolutions, ReLU), so
        the frames of all clips are concatenated and processed as one [sum T_i, H] matrix: no padding, no
        transposes, one large matmul instead of B small ones. The layer sum is taken per clip *before*
        concatenating, so only [T_i, H] per clip is copied instead of every layer's [L, T_i, H] (autograd keeps the
        clips by reference for the layer-weight gradient): measured 1.7x faster per training step with bit-identical
        logits (scripts/bench.py, "head training step"). This path dominates training and probe time on cached
        features. A standardised head's layer sum is :func:`trustser.layer_sum.scaled_layer_sum` (no [L, T_i, H]
        products) with the standardisation offset folded into conv1's bias: the step measured 106 → 88 ms
        (median of 8 interleaved repeats, 64 clips of Whisper Base's 7 × 512 features, 2 threads), logits equal
        to float rounding.
        """
        lengths = torch.tensor([c.shape[1] for c in clips])
        w1, b1 = self.conv1.weight.squeeze(-1), self.conv1.bias
        standardized = bool(self.standardized)
        if standardized and self.pooling != "last":
            combined, offset = self._standardized_sum(clips)
            b1 = b1 - w1 @ offset  # W(s − o) + b = Ws + (b − Wo): the offset never touches the [N, H] sum
        elif standardized:
            combined = (torch.cat([c[-1] for c in clips]).float() - self.feat_mean[-1]) * self.feat_inv_std[-1]
        elif self.pooling == "last":
            combined = torch.cat([c[-1] for c in clips]).float()  # [N, H]
        else:
            weights = self.layer_weights()
            combined = torch.cat([torch.einsum("l,lth->th", weights, c.float()) for c in clips])
        x = F.relu(F.linear(combined, w1, b1))
        x = F.linear(x, self.conv2.weight.squeeze(-1), self.conv2.bias)  # [N, width]
        lengths = lengths.to(x.device)
        segment = torch.repeat_interleave(torch.arange(len(clips), device=x.device), lengths)
        pooled = torch.zeros(len(clips), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, segment, x)
        pooled = pooled / lengths[:, None].clamp(min=1).to(x.dtype)
        return self.fc2(F.relu(self.fc1(pooled)))

    def _standardized_sum(self, clips: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Σ_l w_l (x_l − μ_l) / σ_l of every frame as (Σ_l s_l ⊙ x_l [N, H], its offset Σ_l s_l ⊙ μ_l [H]) with
        s_l = w_l / σ_l: the standardised features are never materialised (the step reads each cached frame once
        forward, as without standardisation), and the caller folds the offset into the first projection's bias
        instead of subtracting it from every frame (that subtraction and its backward were ~11 % of a step)."""
        scale = self.layer_weights()[:, None] * self.feat_inv_std  # [L, H]
        return scaled_layer_sum(clips, scale), (scale * self.feat_mean).sum(0)

"""Train a head on cached features; the same function trains the emotion model and the privacy probes.

``train_head`` is a plain function returning the best-on-validation head and its history, so a single run, a
probe and a study trial all call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.devices import module_device
from trustser.head import EmotionHead
from trustser.metrics.performance import uar
from trustser.run_config import SCHEDULES, TrainConfig  # noqa: F401 (re-exported: the schema owns them)
from trustser.standardize import fit_standardization


@dataclass
class TrainResult:
    head: nn.Module  # an EmotionHead, or any module mapping (hidden, mask) to logits
    best_epoch: int
    best_val_uar: float
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimiser steps taken
    stop_reason: str = ""  # "epochs" (ran the budget), "early_stop" (patience ran out), "max_epochs"
    standardization: Any = None  # trustser.standardize.Standardization fitted on the training clips, or None

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> dict[str, float]:
        """What to log about how training went: convergence can be checked from these."""
        return {
            "best_epoch": float(self.best_epoch),
            "best_val_uar": self.best_val_uar,
            "epochs_run": float(self.epochs_run),
            "train_steps": float(self.steps),
            "stopped_early": float(self.stop_reason == "early_stop"),
            "best_at_last_epoch": float(self.best_epoch == self.epochs_run),
        }


def collate(features: Mapping[str, Tensor], ids: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Pad clips [L, T_i, H] to a batch [B, L, T_max, H] (fp32) and its frame mask [B, T_max]."""
    items = [features[i] for i in ids]
    longest = max(x.shape[1] for x in items)
    num_layers, hidden = items[0].shape[0], items[0].shape[2]
    batch = torch.zeros(len(items), num_layers, longest, hidden)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for b, x in enumerate(items):
        batch[b, :, : x.shape[1]] = x
        mask[b, : x.shape[1]] = True
    return batch, mask


def clip_frames(features: Mapping[str, Tensor], clip_id: str) -> int:
    """A clip's frame count; an out-of-core store (``FeatureStore.frames``) answers without reading the clip."""
    frames = getattr(features, "frames", None)
    return frames(clip_id) if frames is not None else features[clip_id].shape[1]


def batch_logits(model: nn.Module, features: Mapping[str, Tensor], ids: Sequence[str]) -> Tensor:
    """Logits of a batch of cached clips, on the model's device: the per-clip fast path where the model has one,
    else a padded batch. (Moving a CPU tensor to the CPU is a no-op: CPU runs are unchanged.)"""
    device = module_device(model)
    if hasattr(model, "forward_clips"):
        return model.forward_clips([features[i].to(device) for i in ids])
    hidden, mask = collate(features, ids)
    return model(hidden.to(device), mask.to(device))


@torch.no_grad()
def predict_logits(head: nn.Module, features: Mapping[str, Tensor], ids: Sequence[str], batch_size: int = 64) -> Tensor:
    head.eval()
    # sorting by length cuts padding; results are put back in the caller's order
    order = sorted(range(len(ids)), key=lambda i: clip_frames(features, ids[i]))
    chunks = []
    for start in range(0, len(ids), batch_size):
        chunk = order[start : start + batch_size]
        chunks.append(batch_logits(head, features, [ids[i] for i in chunk]).cpu())
    logits = torch.cat(chunks)
    out = torch.empty_like(logits)
    out[torch.tensor(order)] = logits
    return out


def predict(head: nn.Module, features: Mapping[str, Tensor], ids: Sequence[str], batch_size: int = 64) -> np.ndarray:
    return predict_logits(head, features, ids, batch_size).argmax(-1).numpy()


def train_head(
    features: Mapping[str, Tensor],
    labels: Mapping[str, int],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    num_classes: int,
    config: TrainConfig = TrainConfig(),
    progress: bool = False,
    desc: str = "train",
    model: nn.Module | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Adam on cross-entropy; keeps the epoch with the best validation UAR.

    ``model`` defaults to a fresh EmotionHead sized from the features; a fine-tuning model (top encoder layers run
    live on cached lower states, then the head) is passed in instead and trained the same way. ``device``: where it
    trains (default: where ``model`` is, the CPU for a fresh head); the returned head stays there.
    """
    if not train_ids or not val_ids:
        raise ValueError(f"{desc}: empty train ({len(train_ids)}) or validation ({len(val_ids)}) partition")
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    first = features[train_ids[0]]
    head = (
        model
        if model is not None
        else EmotionHead(first.shape[0], first.shape[2], num_classes, config.width, config.pooling)
    )
    standardization = None
    if config.standardize:
        standardization = fit_standardization(features, train_ids)  # training clips only: no leakage
        standardized_head(head).set_standardization(standardization.mean, standardization.std)
    if device is not None:
        head.to(device)
    target_device = module_device(head)
    optimiser = torch.optim.Adam(parameter_groups(head, config), lr=config.lr)
    y_val = np.array([labels[i] for i in val_ids])
    best = (-1.0, 0, None)
    history = []
    steps_per_epoch = -(-len(train_ids) // config.batch_size)
    must_run, may_run = config.epoch_budget(steps_per_epoch)
    stop_reason = "epochs" if config.schedule == "paper" else "max_epochs"
    for epoch in tqdm(range(1, may_run + 1), desc=desc, unit="epoch", disable=not progress):
        head.train()
        perm = torch.randperm(len(train_ids), generator=generator).tolist()
        total, seen = 0.0, 0
        for start in range(0, len(perm), config.batch_size):
            ids = [train_ids[i] for i in perm[start : start + config.batch_size]]
            target = torch.tensor([labels[i] for i in ids], device=target_device)
            loss = F.cross_entropy(batch_logits(head, features, ids), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(ids)
            seen += len(ids)
        val_uar = uar(y_val, predict(head, features, val_ids, config.batch_size), num_classes)
        history.append({"epoch": epoch, "train_loss": total / seen, "val_uar": val_uar})
        if val_uar > best[0]:
            best = (val_uar, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        if config.schedule == "converge" and epoch >= must_run and epoch - best[1] >= config.patience:
            stop_reason = "early_stop"
            break
    head.load_state_dict(best[2])
    head.eval()
    return TrainResult(head, best[1], best[0], history, len(history) * steps_per_epoch, stop_reason, standardization)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: every trainable parameter at ``config.lr``, except a fine-tuning model's
    unfrozen encoder layers (its ``.top``) at ``config.top_lr`` when that is set — pretrained layers usually want a
    smaller step than a head trained from scratch. One group otherwise, exactly as before the option existed."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    top = getattr(model, "top", None)
    if config.top_lr is None or not isinstance(top, nn.Module):
        return [{"params": trainable}]
    in_top = {id(p) for p in top.parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in in_top]},
        {"params": [p for p in trainable if id(p) in in_top], "lr": config.top_lr},
    ]


def standardized_head(model: nn.Module) -> EmotionHead:
    """The EmotionHead inside ``model`` (itself, or a fine-tuning model's ``.head``) that takes the statistics."""
    head = model if isinstance(model, EmotionHead) else getattr(model, "head", None)
    if not isinstance(head, EmotionHead):
        raise TypeError(f"cannot standardise features for {type(model).__name__}: no EmotionHead inside")
    return head

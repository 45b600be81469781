"""How a head trains: the converge schedule (step floor, early stopping on validation UAR), the paper schedule
(exactly its epochs), and feature standardisation fitted on training clips only and carried by the head."""

from __future__ import annotations

import pytest
import torch

from trustser.errors import ConfigError
from trustser.head import EmotionHead
from trustser.standardize import fit_standardization
from trustser.training import TrainConfig, train_head


def separable(n_per_class: int = 8, layers: int = 3, hidden: int = 6, scale: float = 50.0, seed: int = 0):
    """Clips whose class shows in the mean of one dimension, on badly scaled features (offset and scale 50)."""
    g = torch.Generator().manual_seed(seed)
    features, labels = {}, {}
    for k in range(4):
        for i in range(n_per_class):
            x = torch.randn(layers, 5 + i % 3, hidden, generator=g)
            x[:, :, 0] += 2.0 * k
            features[f"c{k}_{i}"] = (scale * x + 100.0).half()
            labels[f"c{k}_{i}"] = k
    ids = sorted(features)
    train = [c for c in ids if int(c.split("_")[1]) < n_per_class // 2]
    val = [c for c in ids if c not in train]
    return features, labels, train, val


def test_paper_schedule_trains_exactly_its_epochs():
    features, labels, train, val = separable()
    result = train_head(features, labels, train, val, 4, TrainConfig(schedule="paper", epochs=7))
    assert result.epochs_run == 7 and result.stop_reason == "epochs"


def test_converge_stops_when_validation_uar_has_not_improved_for_patience_epochs():
    features, labels, train, val = separable()
    config = TrainConfig(patience=4, max_epochs=500, batch_size=8, min_steps=0)
    result = train_head(features, labels, train, val, 4, config)
    assert result.stop_reason == "early_stop"
    assert result.epochs_run == result.best_epoch + 4 < 500
    # the kept head is the best epoch's: its validation UAR is the best in the history
    assert result.best_val_uar == max(h["val_uar"] for h in result.history)


def test_converge_trains_at_least_the_step_floor_before_it_may_stop():
    features, labels, train, val = separable()
    steps_per_epoch = -(-len(train) // 8)  # 16 training clips, batch 8: 2 steps per epoch
    config = TrainConfig(patience=1, min_steps=60, batch_size=8)
    result = train_head(features, labels, train, val, 4, config)
    assert result.epochs_run >= 60 // steps_per_epoch
    assert result.steps == result.epochs_run * steps_per_epoch >= 60


def test_converge_stops_at_max_epochs_when_still_improving_and_says_so():
    features, labels, train, val = separable()
    result = train_head(features, labels, train, val, 4, TrainConfig(patience=1000, max_epochs=3))
    assert result.epochs_run == 3 and result.stop_reason == "max_epochs"


def test_bad_schedule_settings_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match="train.schedule"):
        TrainConfig(schedule="forever")
    with pytest.raises(ConfigError, match="train.patience"):
        TrainConfig(patience=0)


def test_standardisation_statistics_come_from_training_clips_only():
    features, labels, train, val = separable()
    result = train_head(features, labels, train, val, 4, TrainConfig(schedule="paper", epochs=1))
    frames = torch.cat([features[c].float() for c in train], dim=1)  # [L, sum T, H]
    torch.testing.assert_close(result.head.feat_mean, frames.mean(1))
    torch.testing.assert_close(1.0 / result.head.feat_inv_std, frames.std(1, unbiased=False), rtol=1e-4, atol=1e-4)
    # changing every validation (or test) clip changes nothing in the statistics: no leakage
    leaked = {**features, **{c: features[c] * 3 for c in val}}
    other = train_head(leaked, labels, train, val, 4, TrainConfig(schedule="paper", epochs=1))
    torch.testing.assert_close(other.head.feat_mean, result.head.feat_mean)
    torch.testing.assert_close(other.head.feat_inv_std, result.head.feat_inv_std)


def test_a_standardised_head_equals_the_plain_head_on_standardised_features():
    torch.manual_seed(0)
    clips = [torch.randn(3, n, 8) * 30 + 5 for n in (4, 7, 2)]
    stats = fit_standardization({str(i): c for i, c in enumerate(clips)}, ["0", "1", "2"])
    for pooling in ("weighted", "last"):
        head = EmotionHead(3, 8, pooling=pooling)
        head.layer_logits.data = torch.randn(3)
        plain = EmotionHead(3, 8, pooling=pooling)
        plain.load_state_dict(head.state_dict())
        head.set_standardization(stats.mean, stats.std)
        standardised = [(c - stats.mean[:, None]) / stats.std[:, None] for c in clips]
        torch.testing.assert_close(head.forward_clips(clips), plain.forward_clips(standardised), rtol=1e-4, atol=1e-5)
        # and the padded-batch path agrees with the per-clip path
        batch = torch.zeros(3, 3, 7, 8)
        mask = torch.zeros(3, 7, dtype=torch.bool)
        for i, c in enumerate(clips):
            batch[i, :, : c.shape[1]] = c
            mask[i, : c.shape[1]] = True
        torch.testing.assert_close(head(batch, mask), head.forward_clips(clips), rtol=1e-4, atol=1e-5)


def test_the_statistics_are_saved_and_loaded_with_the_head():
    head = EmotionHead(2, 4)
    head.set_standardization(torch.full((2, 4), 3.0), torch.full((2, 4), 2.0))
    restored = EmotionHead(2, 4)
    restored.load_state_dict(head.state_dict())
    assert bool(restored.standardized) and float(restored.feat_inv_std[0, 0]) == 0.5


def badly_conditioned(seed: int = 0):
    """The class shows in one quiet dimension; the others are loud noise (as some of Whisper's dimensions are)."""
    features, labels, train, val = separable(n_per_class=16, scale=1.0, seed=seed)
    loud = torch.ones(6)
    loud[1:] = 300.0
    return {c: (x.float() * loud).half() for c, x in features.items()}, labels, train, val


def test_standardisation_lets_the_head_learn_badly_conditioned_features_in_the_same_steps():
    features, labels, train, val = badly_conditioned()
    plain = train_head(features, labels, train, val, 4, TrainConfig(schedule="paper", epochs=15, standardize=False))
    standardised = train_head(features, labels, train, val, 4, TrainConfig(schedule="paper", epochs=15))
    assert standardised.best_val_uar > plain.best_val_uar

"""Fine-tuning the top k layers on cached features: the live top layers reproduce the backbone's own states from
the cached input state, padding does not leak, training touches only the copies and the head (the backbone is
never run), and the fine-tuned weights can be put back into a backbone that reproduces the features from audio."""

from __future__ import annotations

import warnings

import pytest
import torch

from trustser.backbones.loading import load_backbone
from trustser.errors import ConfigError
from trustser.features import compute_hidden
from trustser.finetune import (
    FineTunedClassifier,
    build_finetune_model,
    build_top_layers,
    live_features,
    with_trained_top,
)
from trustser.head import EmotionHead
from trustser.training import TrainConfig, train_head

FAMILIES = ["whisper_tiny", "wav2vec2_base", "wavlm_base_plus", "apc", "tera"]
CASES = [(name, k) for name in FAMILIES for k in (1, 2)]
LENGTHS = (16000, 12000, 8800, 14400, 10400)  # ~1 s clips: 3 to train on, 2 to validate
FP16 = dict(atol=1e-3, rtol=2e-3)  # the cache is fp16: about one fp16 step at |x| ~ 4


class Extracted:
    """One random-init backbone and the fp32 and fp16 (cached) features of a few short random clips."""

    def __init__(self, name: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.backbone, _ = load_backbone(name, random_init=True)
        gen = torch.Generator().manual_seed(7)
        self.waves = {f"clip{i}": torch.randn(n, generator=gen) * 0.1 for i, n in enumerate(LENGTHS)}
        self.fp32 = {i: compute_hidden(self.backbone, w) for i, w in self.waves.items()}
        self.cache = {i: h.to(torch.float16) for i, h in self.fp32.items()}
        self.labels = {i: n % 4 for n, i in enumerate(self.waves)}


_EXTRACTED: dict[str, Extracted] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds spin-waiting, which on a busy 2-core machine
    made this file ~6x slower (190 s against 30 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def extracted(name: str) -> Extracted:
    if name not in _EXTRACTED:  # built once per test session: loading the 95 M-parameter models takes seconds
        _EXTRACTED[name] = Extracted(name)
    return _EXTRACTED[name]


def full_mask(frames: int) -> torch.Tensor:
    return torch.ones(1, frames, dtype=torch.bool)


@pytest.mark.parametrize(
    "name,k", CASES + [("whisper_tiny", 4), ("wavlm_base_plus", 12), ("tera", 3), ("hubert_base", 1)]
)
def test_top_layers_on_the_cached_input_state_reproduce_the_backbones_top_states(name, k):
    ex = extracted(name)
    top = build_top_layers(ex.backbone, k).eval()
    assert top.input_state == ex.backbone.spec.num_hidden_states - 1 - k
    ids = list(ex.fp32)[: 1 if k > 2 else 3]  # the whole-stack cases: one clip is enough
    with torch.no_grad():
        for clip_id in ids:
            states = ex.fp32[clip_id]
            mask = full_mask(states.shape[1])
            from_fp32 = top(states[top.input_state][None], mask)[0]
            from_cache = top(ex.cache[clip_id][top.input_state].float()[None], mask)[0]
            torch.testing.assert_close(from_fp32, states[-k:], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(from_cache, states[-k:], **FP16)
            torch.testing.assert_close(from_cache, ex.cache[clip_id][-k:].float(), **FP16)


@pytest.mark.parametrize("name,k", CASES)
def test_a_padded_batch_gives_each_clip_its_single_clip_states(name, k):
    ex = extracted(name)
    top = build_top_layers(ex.backbone, k).eval()
    ids = list(ex.cache)[:3]
    longest = max(ex.cache[i].shape[1] for i in ids)
    batch = torch.zeros(len(ids), longest, ex.backbone.spec.hidden_size)
    mask = torch.zeros(len(ids), longest, dtype=torch.bool)
    for b, i in enumerate(ids):
        frames = ex.cache[i].shape[1]
        batch[b, :frames], mask[b, :frames] = ex.cache[i][top.input_state].float(), True
    with torch.no_grad():
        together = top(batch, mask)
        for b, i in enumerate(ids):
            frames = ex.cache[i].shape[1]
            alone = top(batch[b : b + 1, :frames], full_mask(frames))[0]
            torch.testing.assert_close(together[b, :, :frames], alone, atol=1e-5, rtol=1e-5)
            assert not together[b, :, frames:].any()  # padded frames stay zero, as in the cache


@pytest.mark.parametrize("name,k", CASES)
def test_training_updates_only_the_top_layer_copies_and_the_head_and_never_runs_the_backbone(name, k, monkeypatch):
    ex = extracted(name)
    torch.manual_seed(0)
    model = build_finetune_model(ex.backbone, k, num_classes=4, width=16)
    assert isinstance(model, FineTunedClassifier)
    backbone_before = {n: t.clone() for n, t in ex.backbone.state_dict().items()}
    model_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the backbone must not be run while fine-tuning on cached features")

    monkeypatch.setattr(ex.backbone, "forward", must_not_run)
    for layer in ex.backbone.encoder_layers():
        monkeypatch.setattr(layer, "forward", must_not_run)
    ids = list(ex.cache)
    train_head(
        ex.cache,
        ex.labels,
        ids[:3],
        ids[3:],
        4,
        TrainConfig(schedule="paper", epochs=1, batch_size=2, lr=1e-3),
        model=model,
    )

    for n, t in ex.backbone.state_dict().items():
        assert torch.equal(t, backbone_before[n]), f"backbone parameter {n} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in model_before if n.startswith(("top.layers.", "top.final_norm.", "head."))}
    for n, p in model.named_parameters():
        assert torch.equal(p, model_before[n]) != (n in trainable), f"{n}: trained={n in trainable}"


@pytest.mark.parametrize("name,k", CASES)
def test_the_backbone_with_trained_top_layers_reproduces_the_fine_tuned_features_from_audio(name, k):
    ex = extracted(name)
    torch.manual_seed(1)
    model = build_finetune_model(ex.backbone, k, num_classes=4, width=16)
    with torch.no_grad():  # stands in for training: any change of the trainable weights
        for p in model.top.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    ids = list(ex.cache)[:2]
    live = live_features(model, ex.cache, ids, batch_size=2)
    twin = with_trained_top(ex.backbone, model.top)
    assert not any(p.requires_grad for p in twin.parameters())
    for i in ids:
        assert live[i].dtype == torch.float16 and live[i].shape == ex.cache[i].shape
        assert torch.equal(live[i][:-k], ex.cache[i][:-k])  # the frozen states are the cached ones
        assert not torch.allclose(live[i][-k:].float(), ex.cache[i][-k:].float(), atol=0.05)
        torch.testing.assert_close(compute_hidden(twin, ex.waves[i]), live[i].float(), **FP16)
    # the original backbone is untouched and still runs (APC's hooks survive the copy)
    torch.testing.assert_close(compute_hidden(ex.backbone, ex.waves[ids[1]]), ex.fp32[ids[1]], atol=0, rtol=0)


def test_k0_is_a_plain_head_and_its_features_are_the_cache():
    ex = extracted("apc")
    model = build_finetune_model(ex.backbone, 0, num_classes=4)
    assert type(model) is EmotionHead
    assert live_features(model, ex.cache, ["clip0"])["clip0"] is ex.cache["clip0"]


@pytest.mark.parametrize("name,k", [("whisper_tiny", 5), ("tera", 4), ("apc", 3), ("whisper_tiny", -1)])
def test_unfreezing_more_layers_than_the_cache_can_feed_is_a_clear_config_error(name, k):
    ex = extracted(name)
    with pytest.raises(ConfigError, match=rf"unfreeze_top={k}: {name} has \d+ encoder layers"):
        build_finetune_model(ex.backbone, k, num_classes=4)


def test_the_wavlm_position_bias_comes_from_a_frozen_copy_of_layer_0_unless_layer_0_is_trained():
    ex = extracted("wavlm_base_plus")
    top = build_top_layers(ex.backbone, 2)
    assert not top.frozen_bias_table.weight.requires_grad
    torch.testing.assert_close(
        top.frozen_bias_table.weight, ex.backbone.encoder_layers()[0].attention.rel_attn_embed.weight
    )
    everything = build_top_layers(ex.backbone, 12)
    assert everything.bias_table() is everything.layers[0].attention.rel_attn_embed
    assert everything.bias_table().weight.requires_grad


@pytest.mark.parametrize("top_lr", [None, 1e-6])
def test_the_unfrozen_layers_take_steps_of_top_lr_and_the_head_of_lr(top_lr):
    """Adam's first step moves every parameter by about its learning rate: one step shows which rate each got."""
    ex = extracted(FAMILIES[0])
    torch.manual_seed(0)
    model = build_finetune_model(ex.backbone, 1, num_classes=4, width=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = list(ex.cache)
    config = TrainConfig(schedule="paper", epochs=1, batch_size=3, lr=1e-3, top_lr=top_lr)  # one step
    train_head(ex.cache, ex.labels, ids[:3], ids[3:], 4, config, model=model)
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()}
    top = max(v for n, v in moved.items() if n.startswith("top."))
    head = max(v for n, v in moved.items() if n.startswith("head."))
    assert head == pytest.approx(1e-3, rel=0.05)
    assert top == pytest.approx(top_lr or 1e-3, rel=0.05)


def test_top_lr_must_be_positive_and_is_part_of_the_configuration_once_set():
    from trustser.run_config import RunConfig, config_hash

    with pytest.raises(ConfigError, match="train.top_lr"):
        TrainConfig(top_lr=0.0)
    assert config_hash(RunConfig(unfreeze_top=1)) != config_hash(
        RunConfig(unfreeze_top=1, train=TrainConfig(top_lr=5e-5))
    )
    # unset, it leaves the hash as it was before it existed: tests/test_robustness_selection.py pins that

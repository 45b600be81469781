"""Sustainability: calflops counts one 6 s inference; the paper convention reproduces TrustSER's Table 4 GFLOPs.

Every backbone is counted once (random init: operation counts do not depend on weights) in a module-scoped
fixture, and the tests read that shared result.
"""

from __future__ import annotations

import json

import pytest
import torch

from trustser.backbones.registry import BACKBONES, get_backbone_spec
from trustser.head import EmotionHead
from trustser.metrics import sustainability as sus

PAPER = ("apc", "tera", "whisper_tiny", "whisper_base", "whisper_small", "wav2vec2_base", "wavlm_base_plus")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One count per paper backbone (about 40 s for all seven on two CPU cores)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRUSTSER_CACHE", str(tmp_path_factory.mktemp("flops-cache")))
        return {name: sus.count_flops(name, use_cache=False) for name in PAPER}


def transformer_layer_macs(d: int, ffn: int, positions: int) -> int:
    """q, k, v, out projections and the two feed-forward linears of one layer (no attention products)."""
    return positions * (4 * d * d + 2 * d * ffn)


def conv_encoder_macs(samples: int, config: dict) -> tuple[int, int]:
    """wav2vec2's conv feature encoder: (MACs, output frames)."""
    macs, length, channels = 0, samples, 1
    for dim, kernel, stride in zip(config["conv_dim"], config["conv_kernel"], config["conv_stride"]):
        length = (length - kernel) // stride + 1
        macs += length * kernel * channels * dim
        channels = dim
    return macs, length


def test_the_default_table_is_the_seven_paper_backbones_then_the_rest_of_the_registry():
    assert tuple(sus.paper_backbones()) == PAPER
    rest = [name for name in BACKBONES if name not in PAPER]
    assert sus.table_backbones() == [*PAPER, *rest] and {"whisper_tiny_en", "hubert_base"} <= set(rest)


@pytest.mark.parametrize("name", PAPER)
def test_paper_convention_reproduces_table_4(reports, name):
    """|ours − paper| ≤ max(1 % of the paper's figure, 0.05 = half the table's 0.1 rounding step)."""
    report = reports[name]
    paper = get_backbone_spec(name).paper.gflops_6s
    assert report.paper_table_gflops == paper
    assert abs(report.paper_gmacs - paper) <= sus.paper_tolerance(paper), (report.paper_gmacs, paper)


def test_paper_convention_is_the_mac_count_of_linear_conv_and_gru_modules(reports):
    """Each backbone's paper figure (without the head) equals its module MACs worked out by hand."""
    samples = 6 * 16000
    bb = {name: r.paper_front_end_macs + r.paper_backbone_macs for name, r in reports.items()}
    # Whisper on its true length: 600 mel frames → conv1 (k3) → conv2 (k3, stride 2) → 300 positions.
    for name, (d, ffn, layers) in {
        "whisper_tiny": (384, 1536, 4),
        "whisper_base": (512, 2048, 6),
        "whisper_small": (768, 3072, 12),
    }.items():
        assert bb[name] == 600 * 3 * 80 * d + 300 * 3 * d * d + layers * transformer_layer_macs(d, ffn, 300)
    # TERA: 601 centred log-mel frames, Linear(80 → 768), three layers.
    assert bb["tera"] == 601 * 80 * 768 + 3 * transformer_layer_macs(768, 3072, 601)
    # APC: 598 fbank frames through GRU(80→512), GRU(512→512) ×2 (three gate matmuls each) and the postnet.
    gru = 3 * 512 * (80 + 512) + 2 * 3 * 512 * (512 + 512)
    assert bb["apc"] == 598 * (gru + 512 * 80)
    # wav2vec2: conv encoder + feature projection + the 128-tap grouped positional conv + twelve layers.
    encoder, frames = conv_encoder_macs(samples, get_backbone_spec("wav2vec2_base").config)
    assert frames == 299
    pos_conv = (frames + 1) * 768 * (768 // 16) * 128
    layers = 12 * transformer_layer_macs(768, 3072, frames)
    assert reports["wav2vec2_base"].paper_front_end_macs == encoder
    assert bb["wav2vec2_base"] == encoder + frames * 512 * 768 + pos_conv + layers
    # WavLM: the same, minus the attention projections (run through F.multi_head_attention_forward, invisible to
    # module hooks), plus the gated relative position bias Linear(64 → 8) per head.
    attention_projections = 12 * frames * 4 * 768 * 768
    gate = 12 * 12 * frames * 64 * 8
    assert bb["wavlm_base_plus"] == bb["wav2vec2_base"] - attention_projections + gate


def test_wavlm_and_wav2vec2_cost_the_same_when_everything_is_counted(reports):
    """The 41.7 vs 33.2 gap of the paper is a counting artefact, not a cheaper model."""
    w2v, wavlm = reports["wav2vec2_base"], reports["wavlm_base_plus"]
    assert wavlm.macs == pytest.approx(w2v.macs, rel=0.01)
    assert w2v.paper_gmacs - wavlm.paper_gmacs > 8.0


def test_hubert_base_costs_exactly_what_wav2vec2_base_costs(reports):
    """HuBERT Base is not in the paper; its encoder is wav2vec 2.0 Base's shape (conv feature encoder, projection,
    positional conv, twelve post-LN layers), so every count, split and parameter agrees; the table has no figure."""
    hubert = sus.count_flops("hubert_base", use_cache=False).as_dict()
    w2v = reports["wav2vec2_base"].as_dict()
    assert hubert.pop("backbone") == "hubert_base" and hubert.pop("paper_table_gflops") is None
    assert hubert == {k: v for k, v in w2v.items() if k not in ("backbone", "paper_table_gflops")}


@pytest.mark.parametrize("name", PAPER)
def test_complete_count_exceeds_the_paper_count_and_splits_exactly(reports, name):
    r = reports[name]
    assert r.macs > r.paper_gmacs * 1e9
    assert r.flops > 2 * r.paper_gmacs * 1e9
    assert r.front_end_flops + r.backbone_flops + r.head_flops == r.flops
    assert r.front_end_macs + r.backbone_macs + r.head_macs == r.macs
    assert r.front_end_flops > 0 and r.head_flops > 0
    assert r.params == r.backbone_params + r.head_params
    assert r.counter.startswith("calflops ")


def test_attention_products_are_in_the_complete_count(reports):
    """Whisper Tiny: QKᵀ and AV are 2·300²·384 MACs per layer, whatever attention kernel transformers picks."""
    r = reports["whisper_tiny"]
    attention = 4 * 2 * 300 * 300 * 384
    assert r.backbone_macs - r.paper_backbone_macs == attention


def test_parameter_counts_match_the_paper(reports):
    for name in ("apc", "tera", "whisper_tiny", "whisper_base", "whisper_small"):
        paper = get_backbone_spec(name).paper.params_m
        assert reports[name].backbone_params / 1e6 == pytest.approx(paper, abs=0.01), name


def test_head_flops_match_a_hand_count_for_a_tiny_config():
    layers, hidden, width, classes, frames = 3, 8, 16, 4, 10
    head = EmotionHead(layers, hidden, classes, width).eval()
    counts = sus.count_module(
        head, {"head": head}, torch.randn(1, layers, frames, hidden), torch.ones(1, frames, dtype=torch.bool)
    )
    macs = hidden * width * frames + width * width * frames + width * width + width * classes
    # The layer-weighted sum is an einsum: calflops gives it no MACs and takes numpy's einsum_path "optimized FLOP
    # count", 2·L·T·H plus 1 for the trailing no-op step numpy includes in its path.
    from calflops.pytorch_ops import _einsum_flops_compute

    einsum = _einsum_flops_compute("l,blth->bth", torch.zeros(layers), torch.zeros(1, layers, frames, hidden))[0]
    assert einsum in (2 * layers * frames * hidden, 2 * layers * frames * hidden + 1)
    flops = (
        layers  # softmax over the layer logits
        + einsum  # weighted sum of the layers
        + 2 * hidden * width * frames
        + width * frames  # conv1 (k=1) + bias
        + width * frames  # ReLU
        + 2 * width * width * frames
        + width * frames  # conv2 + bias
        + 2 * width * width
        + width  # fc1 (calflops' F.linear leaves out the bias) + ReLU
        + 2 * width * classes  # fc2
    )
    assert (counts.macs, counts.flops) == (macs, flops)
    assert macs == 4160 and flops - einsum == 9299 - 480
    assert counts.paper_macs == macs
    assert counts.parts["head"] == (flops, macs, macs) and counts.parts["rest"] == (0, 0, 0)


def test_calflops_does_the_counting(monkeypatch):
    """The count goes through calflops.calculate_flops, and without calflops' patches there is nothing left."""
    import calflops
    from calflops import calculate_pipline

    head = EmotionHead(3, 8, 4, 16).eval()
    args = (torch.randn(1, 3, 10, 8), torch.ones(1, 10, dtype=torch.bool))
    calls = []
    real = calflops.calculate_flops
    monkeypatch.setattr(calflops, "calculate_flops", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert sus.count_module(head, {"head": head}, *args).macs > 0
    assert len(calls) == 1
    for name in ("_patch_functionals", "_patch_tensor_methods", "_reload_functionals", "_reload_tensor_methods"):
        monkeypatch.setattr(calculate_pipline, name, lambda *a, **k: None)
    blind = sus.count_module(head, {"head": head}, *args)
    assert (blind.flops, blind.macs) == (0, 0)


def test_counting_restores_torch(reports):
    import torch.nn.functional as F

    originals = (F.linear, F.scaled_dot_product_attention, torch.matmul, torch.mm, torch.Tensor.__matmul__)
    head = EmotionHead(3, 8).eval()
    sus.count_module(head, {"head": head}, torch.randn(1, 3, 5, 8), torch.ones(1, 5, dtype=torch.bool))
    assert (F.linear, F.scaled_dot_product_attention, torch.matmul, torch.mm, torch.Tensor.__matmul__) == originals
    assert "stft" not in vars(torch._VF)


def test_whisper_padded_to_30s_costs_over_4x_the_true_length():
    ratio = sus.whisper_padding_flops_ratio("whisper_tiny")
    assert ratio >= 4
    with pytest.raises(ValueError):
        sus.whisper_padding_flops_ratio("wav2vec2_base")


def test_counts_are_cached_per_backbone_and_config(reports, monkeypatch):
    path = sus.flops_cache_path("whisper_tiny")
    assert path.parent.name == "flops" and path.name.startswith("whisper_tiny-")
    assert path != sus.flops_cache_path("whisper_tiny", seconds=30.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports["whisper_tiny"].as_dict()))
    monkeypatch.setattr(sus.counts, "_count_backbone", lambda *a: pytest.fail("recounted despite the cache"))
    rows = sus.sustainability_table(["whisper_tiny"])
    assert rows == [reports["whisper_tiny"].as_dict()]
    assert {
        "backbone",
        "params",
        "paper_gmacs",
        "flops",
        "macs",
        "front_end_flops",
        "backbone_flops",
        "head_flops",
        "paper_table_gflops",
    } <= set(rows[0])


def test_latency_is_the_median_of_timed_repeats():
    report = sus.measure_latency("whisper_tiny", repeats=2, warmup=0)
    assert report.repeats == 2 and report.min_s <= report.median_s <= report.max_s
    assert report.real_time_factor > 0
    with pytest.raises(ValueError):
        sus.measure_latency("whisper_tiny", repeats=0)


@pytest.mark.slow
def test_peak_memory_is_measured_in_a_fresh_process():
    report = sus.measure_peak_memory("apc")
    assert report.peak_rss_bytes >= report.rss_before_bytes > 0
    assert report.inference_peak_bytes == report.peak_rss_bytes - report.rss_before_bytes
    assert report.method in ("VmHWM after clear_refs", "ru_maxrss delta")

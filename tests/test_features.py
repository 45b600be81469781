"""The feature cache: computed once, reused without calling the backbone, written atomically, verified on read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trustser.backbones.loading import load_backbone
from trustser.corpora import load_corpus
from trustser.features import CorruptEntry, drop_unusable, extract_features, feature_dir, read_entry, write_entry


class CountingBackbone(torch.nn.Module):
    """Wraps a backbone and counts forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.spec, self.calls = inner, inner.spec, 0

    def forward(self, waves, lengths):
        self.calls += 1
        return self.inner(waves, lengths)


@pytest.fixture
def tiny_setup(mini_emodb):
    index = load_corpus("emodb", mini_emodb)
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    return index, CountingBackbone(backbone), source


def test_second_extraction_reuses_the_cache_without_calling_the_backbone(tiny_setup):
    index, backbone, source = tiny_setup
    first, stats1 = extract_features(index, backbone, source, progress=False)
    calls = backbone.calls
    assert calls == len(index.clips) == stats1.computed
    second, stats2 = extract_features(index, backbone, source, progress=False)
    assert backbone.calls == calls and stats2.reused == len(index.clips) and stats2.computed == 0
    some = next(iter(first))
    assert first[some].dtype == torch.float16
    torch.testing.assert_close(first[some], second[some])


def test_a_corrupted_entry_is_detected_and_rebuilt(tiny_setup):
    index, backbone, source = tiny_setup
    extract_features(index, backbone, source, progress=False)
    entries = sorted(Path(feature_dir_of(backbone, source)).glob("*.safetensors"))
    victim = entries[0]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # flip a byte inside the tensor data
    victim.write_bytes(bytes(data))
    truncated = entries[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    _, stats = extract_features(index, backbone, source, progress=False)
    assert stats.rebuilt_corrupt == 2 and stats.computed == 2
    read_entry(victim)  # valid again


def feature_dir_of(backbone, source):
    from trustser.features import FeatureKey

    return feature_dir(FeatureKey(backbone.spec.name, source.identity))


def test_checksum_mismatch_raises_corrupt_entry(tmp_path):
    path = tmp_path / "x.safetensors"
    write_entry(path, torch.randn(2, 3, 4))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptEntry, match="checksum"):
        read_entry(path)


def test_a_write_killed_midway_leaves_no_entry_under_the_final_name(tmp_path, monkeypatch):
    import safetensors.torch

    def dying_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt  # what a Ctrl-C or kill during the write looks like to Python

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    target = tmp_path / "entry.safetensors"
    with pytest.raises(KeyboardInterrupt):
        write_entry(target, torch.randn(2, 2))
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_corrupt_and_empty_wavs_are_skipped_counted_and_dropped_from_folds(mini_emodb):
    wavs = sorted((mini_emodb / "wav").glob("*.wav"))
    wavs[0].write_bytes(b"RIFF\x00\x00garbage")
    wavs[1].write_bytes(b"")
    index = load_corpus("emodb", mini_emodb)
    n = len(index.clips)
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    features, stats = extract_features(index, backbone, source, progress=False)
    assert sum(stats.skipped.values()) == 2 and stats.skipped["unreadable"] >= 1
    assert len(features) == n - 2 and len(stats.dropped) == 2
    assert len(index.clips) == n  # extraction does not edit the index it reads: the caller drops
    drop_unusable(index, stats)
    assert len(index.clips) == n - 2
    skipped = {s.item for s in index.skipped}
    assert str(wavs[0]) in skipped and str(wavs[1]) in skipped
    assert all(c in index.clips for f in index.folds for part in f.partitions().values() for c in part)


def test_bf16_extraction_is_a_separate_cache_entry_close_to_fp32(mini_emodb):
    index = load_corpus("emodb", mini_emodb)
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    ids = sorted(index.clips)[:2]
    fp32, _ = extract_features(index, backbone, source, clip_ids=ids, progress=False)
    bf16, stats = extract_features(index, backbone, source, clip_ids=ids, progress=False, precision="bf16")
    assert stats.computed == 2  # not served from the fp32 entries
    a, b = fp32[ids[0]].float(), bf16[ids[0]].float()
    assert not torch.equal(a, b)
    assert ((a - b).norm() / a.norm()) < 0.05


def test_unknown_precision_is_a_config_error(mini_emodb):
    from trustser.errors import ConfigError

    index = load_corpus("emodb", mini_emodb)
    backbone, source = load_backbone("whisper_tiny", random_init=True)
    with pytest.raises(ConfigError, match="fp8"):
        extract_features(index, backbone, source, progress=False, precision="fp8")


@pytest.mark.parametrize("name", ["whisper_tiny", "apc", "tera", "wav2vec2_base"])
def test_bf16_extraction_with_bf16_stored_weights_is_bit_identical_to_autocast_alone(name):
    """bf16 extraction runs a twin whose Linear/Conv weights are stored in bf16 (autocast would re-cast them on every
    call); the features must not change, since the cache key does not."""
    from trustser.features import bf16_weights_twin, compute_hidden

    backbone, _ = load_backbone(name, random_init=True)
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(1)) * 0.1
    twin = bf16_weights_twin(backbone)
    assert any(p.dtype == torch.bfloat16 for p in twin.parameters())
    assert all(p.dtype == torch.float32 for p in backbone.parameters())  # the original is untouched
    assert torch.equal(compute_hidden(twin, wave, "bf16"), compute_hidden(backbone, wave, "bf16"))


def test_cache_directory_names_are_unchanged_by_the_removal_of_the_unused_upto_layer_field():
    """Existing caches stay valid: the digest is the one the old key (with its never-set ``upto_layer``) gave."""
    import hashlib
    import json

    from trustser.features import FORMAT_VERSION, FeatureKey

    key = FeatureKey("whisper_base", "pkg:openai-whisper@abc", 6.0, "fp32")
    old_payload = {
        "backbone": "whisper_base",
        "weights_identity": "pkg:openai-whisper@abc",
        "max_seconds": 6.0,
        "precision": "fp32",
        "upto_layer": None,
        "format": FORMAT_VERSION,
    }
    old = hashlib.sha256(json.dumps(old_payload, sort_keys=True).encode()).hexdigest()[:20]
    assert key.digest() == old

"""The feature cache: every layer's hidden states of a clip, computed once per
(backbone, weights identity, clip content, max length, precision) and reused across epochs, folds, probes and trials.

Entries are safetensors files holding fp16 ``hidden`` [layers, frames, hidden] plus a CRC32 of those bytes in the
metadata. They are written to a temporary file in the same directory and renamed into place, so a killed run never
leaves a partial file under a final name; a file that fails its checksum on read is reported, deleted and rebuilt.
Two processes extracting the same clip both write complete files and the last rename wins with identical content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor

from trustser import MAX_SECONDS, SAMPLE_RATE
from trustser.audio import load_audio
from trustser.backbones.base import Backbone
from trustser.backbones.weights import WeightsSource
from trustser.corpora.base import CorpusIndex
from trustser.errors import AudioError
from trustser.paths import cache_dir, write_atomically

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
TRAINING_FP32_BUDGET = int(os.environ.get("TRUSTSER_FP32_BUDGET_GB", "4")) * 2**30


@dataclass(frozen=True)
class FeatureKey:
    """What makes features different; its digest names the cache directory."""

    backbone: str
    weights_identity: str
    max_seconds: float = MAX_SECONDS
    precision: str = "fp32"
    upto_layer: int | None = None  # for partial-unfreezing: hidden states up to (and including) this index only

    def digest(self) -> str:
        payload = json.dumps({**self.__dict__, "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]


def clip_digest(path: Path) -> str:
    """The content hash of an audio file: a renamed or copied corpus hits the same entries, an edited clip does not."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class CorruptEntry(Exception):
    pass


def write_entry(path: Path, hidden: Tensor) -> None:
    from safetensors.torch import save_file

    data = hidden.to(torch.float16).contiguous()
    crc = zlib.crc32(data.numpy().tobytes())
    write_atomically(path, lambda tmp: save_file({"hidden": data}, tmp,
                                                 metadata={"crc32": str(crc), "format": str(FORMAT_VERSION)}))


def read_entry(path: Path) -> Tensor:
    """Load and verify one entry; raises CorruptEntry on any damage (truncation, flipped bytes, bad header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            crc = int(f.metadata()["crc32"])
            hidden = f.get_tensor("hidden")
    except Exception as exc:
        raise CorruptEntry(f"{path}: unreadable ({type(exc).__name__})") from None
    if zlib.crc32(hidden.numpy().tobytes()) != crc:
        raise CorruptEntry(f"{path}: checksum mismatch")
    return hidden


@dataclass
class ExtractionStats:
    computed: int = 0
    reused: int = 0
    rebuilt_corrupt: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_metrics(self) -> dict[str, float]:
        out = {"features_computed": self.computed, "features_reused": self.reused,
               "features_rebuilt_corrupt": self.rebuilt_corrupt, "clips_skipped_audio": sum(self.skipped.values())}
        out.update({f"skipped_{reason}": n for reason, n in self.skipped.items()})
        return out


class FeatureStore(Mapping[str, Tensor]):
    """Clip id → fp16 hidden states [layers, frames, hidden], held in memory after extraction."""

    def __init__(self, features: dict[str, Tensor], key: FeatureKey) -> None:
        self._features = features
        self.key = key

    def __getitem__(self, clip_id: str) -> Tensor:
        return self._features[clip_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def nbytes(self, dtype: torch.dtype = torch.float16) -> int:
        return sum(t.numel() for t in self._features.values()) * torch.empty((), dtype=dtype).element_size()

    def in_float32(self, budget_bytes: int = TRAINING_FP32_BUDGET) -> "FeatureStore":
        """An fp32 copy for training when it fits in ``budget_bytes``, else this fp16 store.

        Training reads every frame of every layer each epoch; converting fp16 → fp32 on the fly costs about a third
        of an epoch (measured: 0.69 → 0.48 s per epoch on Whisper Base-sized EmoDB features), so a corpus that fits is
        converted once. Larger corpora keep fp16 in memory and convert per batch.
        """
        if self.nbytes(torch.float32) > budget_bytes:
            return self
        return FeatureStore({k: v.float() for k, v in self._features.items()}, self.key)


def feature_dir(key: FeatureKey, cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / "features" / key.backbone / key.digest()


def extract_features(index: CorpusIndex, backbone: Backbone, source: WeightsSource,
                     cache: str | Path | None = None, max_seconds: float = MAX_SECONDS,
                     clip_ids: Iterable[str] | None = None, progress: bool = True,
                     stats: ExtractionStats | None = None, precision: str = "fp32",
                     ) -> tuple[FeatureStore, ExtractionStats]:
    """Features for every clip of ``index`` (or ``clip_ids``), from the cache where present.

    Clips whose audio is unusable are removed from the index (and its folds) with their reason, and counted.
    """
    from tqdm.auto import tqdm

    if precision not in PRECISIONS:
        from trustser.errors import ConfigError

        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    key = FeatureKey(backbone.spec.name, source.identity, max_seconds, precision)
    directory = feature_dir(key, cache)
    stats = stats or ExtractionStats()
    features: dict[str, Tensor] = {}
    ids = list(clip_ids) if clip_ids is not None else sorted(index.clips)
    runner = backbone
    for clip_id in tqdm(ids, desc=f"features {backbone.spec.name}", unit="clip", disable=not progress):
        clip = index.clips[clip_id]
        try:
            entry = directory / f"{clip_digest(clip.path)}.safetensors"
        except OSError as exc:
            stats.skipped["unreadable"] += 1
            index.drop(clip_id, "unreadable", str(exc))
            continue
        if entry.exists():
            try:
                features[clip_id] = read_entry(entry)
                stats.reused += 1
                continue
            except CorruptEntry as exc:
                log.warning("feature cache entry corrupt, rebuilding: %s", exc)
                entry.unlink(missing_ok=True)
                stats.rebuilt_corrupt += 1
        try:
            samples = load_audio(clip.path, max_seconds=max_seconds)
        except AudioError as exc:
            log.warning("skipping clip: %s", exc)
            stats.skipped[exc.reason] += 1
            index.drop(clip_id, exc.reason, str(exc))
            continue
        if precision == "bf16" and runner is backbone:
            runner = bf16_weights_twin(backbone)  # built once, on the first clip that needs computing
        hidden = compute_hidden(runner, torch.from_numpy(samples), precision)
        write_entry(entry, hidden)
        features[clip_id] = hidden.to(torch.float16)
        stats.computed += 1
    return FeatureStore(features, key), stats


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
"""Extraction precision: fp32, or bf16 autocast (matmuls in bfloat16 on CPUs with AVX-512 BF16; see
docs/benchmarks.md for its speed and effect on UAR). Part of the cache key and logged with every run."""


def bf16_weights_twin(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` whose Linear/Conv1d weights are stored in bf16, for bf16 extraction.

    Under autocast these ops cast their weights to bf16 anyway, so the twin's outputs are bit-identical to the
    original's (the cache key does not change); what it saves is autocast re-casting every frozen weight on every
    call, because autocast's cast cache keeps only leaf tensors that require grad. Measured on whisper_base:
    1.07x over fp32 with autocast alone, 1.5x with the twin (docs/benchmarks.md).
    """
    import copy

    from torch.nn.utils.parametrize import is_parametrized

    twin = copy.deepcopy(backbone)
    for module in twin.modules():
        # a parametrized weight (wav2vec2/WavLM's weight-normed positional conv) is computed from its parts in
        # fp32 first; storing the parts in bf16 would change the result, so those stay as they are
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)) and not is_parametrized(module):
            module.to(torch.bfloat16)
    return twin.eval()


@torch.inference_mode()
def compute_hidden(backbone: Backbone, samples: Tensor, precision: str = "fp32") -> Tensor:
    """One clip's hidden states [layers, frames, hidden] (fp32 out; the cache stores fp16)."""
    dtype = PRECISIONS[precision]
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        out = backbone(samples[None], torch.tensor([samples.shape[0]]))
    frames = int(out.mask[0].sum())
    return out.hidden[0, :, :frames].float()


def max_samples(max_seconds: float = MAX_SECONDS) -> int:
    return int(round(max_seconds * SAMPLE_RATE))

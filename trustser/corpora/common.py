"""Helpers shared by the corpus loaders: finding metadata files, reading tables, options, skips and fold layouts.

Every loader follows the same conventions, so they live here once:

- a missing root or metadata file raises :class:`CorpusNotFoundError` naming every place that was looked at;
- a metadata file that is unusable as a whole (say, a CSV without a required column) raises
  :class:`MetadataError` naming the file;
- a single malformed metadata line is *skipped* with reason ``malformed_line`` and ``file:line`` in the skip, so
  one bad line in a 100 000-line label file does not make the corpus unusable, and the summary still shows it;
- loaders only stat files, they never decode audio (that is the feature extractor's job), so loading is fast.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from trustser.corpora.base import Clip, Fold, Skip
from trustser.errors import ConfigError, CorpusNotFoundError, TrustserError

PARTITIONS = ("train", "validation", "test")

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "development": "validation",
    "test": "test",
    "testing": "test",
}
"""Partition names as corpora and users spell them, mapped to ours."""


class MetadataError(TrustserError):
    """A metadata file exists but cannot be read as the expected format (wrong header, wrong encoding, ...)."""


# --- locating files -----------------------------------------------------------------------------------------------


def require_root(root: Path, corpus: str) -> Path:
    """Fail early, with the path, when the corpus root itself is missing."""
    if not root.is_dir():
        raise CorpusNotFoundError(f"{corpus} not found: {root} is not a directory")
    return root


def find_first(root: Path, candidates: Sequence[str], corpus: str, what: str, want_dir: bool = False) -> Path:
    """Return the first of ``root/candidate`` that exists (releases differ in names and folders).

    Raises CorpusNotFoundError listing every candidate, so the user sees exactly where we looked.
    """
    for candidate in candidates:
        path = root / candidate
        if path.is_dir() if want_dir else path.is_file():
            return path
    looked = ", ".join(str(root / c) for c in candidates)
    raise CorpusNotFoundError(f"{corpus}: {what} not found; looked for {looked}")


class FileLookup:
    """Existence checks by listing each directory once: a stat per clip is slow on network file systems."""

    def __init__(self) -> None:
        self._listings: dict[Path, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        parent = path.parent
        if parent not in self._listings:
            try:
                self._listings[parent] = frozenset(os.listdir(parent))
            except OSError:
                self._listings[parent] = frozenset()
        return path.name in self._listings[parent]


class ClipCollector:
    """Gathers a loader's clips and skips, applying the checks every corpus shares: audio present, id unique."""

    def __init__(self, skipped: Iterable[Skip] = ()) -> None:
        self.clips: dict[str, Clip] = {}
        self.skipped: list[Skip] = list(skipped)
        self._lookup = FileLookup()

    def add(self, item: Clip | Skip, where: str = "") -> bool:
        """Keep ``item`` if it is a usable clip; otherwise record why not. Returns whether it was kept."""
        if isinstance(item, Skip):
            self.skipped.append(item)
        elif not self._lookup.exists(item.path):
            self.skipped.append(Skip(str(item.path), "missing_audio", where))
        elif item.clip_id in self.clips:
            self.skipped.append(Skip(str(item.path), "duplicate", where))
        else:
            self.clips[item.clip_id] = item
            return True
        return False


# --- skips --------------------------------------------------------------------------------------------------------


def malformed(path: Path, line_no: int, why: str) -> Skip:
    """The one way a bad metadata line is reported: item and detail both carry ``file:line``."""
    return Skip(f"{path}:{line_no}", "malformed_line", f"{path.name}:{line_no}: {why}")


def excerpt(text: str, limit: int = 80) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- tables -------------------------------------------------------------------------------------------------------


def normalise_column(name: str) -> str:
    """``Split_Set``, ``split set`` and ``SplitSet`` are the same column: compare lower-case alphanumerics only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def read_table(
    path: Path,
    columns: Mapping[str, Sequence[str]],
    optional: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[tuple[int, dict[str, str]]], list[Skip]]:
    """Read a CSV whose header names ``columns`` (canonical name → accepted spellings) and maybe ``optional`` ones.

    Returns ``(line number, {canonical: value})`` rows and malformed-row skips. A missing required column raises
    MetadataError naming the file and the columns it does have.
    """
    optional = optional or {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not lines:
        raise MetadataError(f"{path}: empty file, expected a header row")
    header = [normalise_column(h) for h in lines[0]]
    positions = _column_positions(path, header, lines[0], columns, required=True)
    positions.update(_column_positions(path, header, lines[0], optional, required=False))
    rows: list[tuple[int, dict[str, str]]] = []
    skips: list[Skip] = []
    for line_no, fields in enumerate(lines[1:], start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            skips.append(malformed(path, line_no, f"{len(fields)} fields, header has {len(header)}"))
            continue
        rows.append((line_no, {name: fields[i].strip() for name, i in positions.items()}))
    return rows, skips


def _column_positions(
    path: Path, header: list[str], raw_header: list[str], columns: Mapping[str, Sequence[str]], required: bool
) -> dict[str, int]:
    positions: dict[str, int] = {}
    for canonical, spellings in columns.items():
        wanted = [normalise_column(s) for s in (canonical, *spellings)]
        found = next((header.index(w) for w in wanted if w in header), None)
        if found is not None:
            positions[canonical] = found
        elif required:
            raise MetadataError(
                f"{path}: no column {canonical!r} (also accepted: {', '.join(spellings) or 'none'}); "
                f"header is {', '.join(raw_header)}"
            )
    return positions


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a text label file; undecodable bytes become U+FFFD instead of aborting the whole file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            yield line_no, line.rstrip("\r\n")


# --- options ------------------------------------------------------------------------------------------------------


def check_options(options: Mapping[str, object], allowed: Iterable[str], corpus: str) -> None:
    """An option a loader does not know is a typo, not something to ignore silently."""
    allowed = set(allowed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{corpus}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed)) or 'none'}"
        )


def bool_option(options: Mapping[str, object], key: str, default: bool) -> bool:
    """Options come from YAML (bools) or the CLI (strings); accept both spellings."""
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"option {key}={value!r}: expected true or false")


def choice_option(options: Mapping[str, object], key: str, choices: Sequence[str], default: str) -> str:
    value = str(options.get(key, default)).strip()
    lowered = {c.lower(): c for c in choices}
    if value.lower() not in lowered:
        raise ConfigError(f"option {key}={value!r}: expected one of {', '.join(choices)}")
    return lowered[value.lower()]


# --- folds --------------------------------------------------------------------------------------------------------


def rotating_folds(
    clips: Mapping[str, Clip], groups: Sequence[Sequence[str]], key: Callable[[Clip], str | None]
) -> list[Fold]:
    """Fold k tests group k, validates on group k+1 (mod n) and trains on the rest.

    ``groups`` are lists of sessions or speakers; ``key`` reads that attribute off a clip. Validating on the
    *next* group (rather than a random share of training clips) keeps validation speaker-independent too, so model
    selection sees unseen speakers exactly as the test does.
    """
    if len(groups) < 3:
        raise MetadataError(f"need at least 3 groups of speakers for train/validation/test folds, got {len(groups)}")
    membership = {member: g for g, members in enumerate(groups) for member in members}
    by_group: list[list[str]] = [[] for _ in groups]
    for clip_id in sorted(clips):
        value = key(clips[clip_id])
        group = membership.get(value) if value is not None else None
        if group is not None:
            by_group[group].append(clip_id)
    folds = []
    n = len(groups)
    for k in range(n):
        val = (k + 1) % n
        train = tuple(c for g in range(n) if g not in (k, val) for c in by_group[g])
        folds.append(Fold(f"fold{k + 1}", train, tuple(by_group[val]), tuple(by_group[k])))
    return folds


def stratified_groups(speaker_gender: Mapping[str, str | None], n_groups: int) -> list[list[str]]:
    """Deal speakers into ``n_groups`` groups: sorted females, then sorted males, then unknown, round-robin.

    Dealing one list round-robin keeps group sizes within one speaker of each other *and* spreads each gender
    evenly, so every test fold has both genders (the fairness metric needs them) and no randomness is involved.
    """
    order = {"female": 0, "male": 1}
    speakers = sorted(speaker_gender, key=lambda s: (order.get(speaker_gender[s] or "", 2), s))
    n = min(n_groups, len(speakers))
    groups: list[list[str]] = [[] for _ in range(n)]
    for i, speaker in enumerate(speakers):
        groups[i % n].append(speaker)
    return [sorted(g) for g in groups]


def speaker_genders(clips: Iterable[Clip]) -> dict[str, str | None]:
    """Each speaker's gender as the clips give it (the first non-None one wins)."""
    genders: dict[str, str | None] = {}
    for clip in clips:
        if genders.get(clip.speaker) is None:
            genders[clip.speaker] = clip.gender
    return genders


def split_fold(clips: Mapping[str, Clip], name: str = "official") -> Fold:
    """One fold from each clip's corpus-defined ``split`` (train / validation / test)."""
    parts: dict[str, list[str]] = {p: [] for p in PARTITIONS}
    for clip_id in sorted(clips):
        split = clips[clip_id].split
        if split in parts:
            parts[split].append(clip_id)
    return Fold(name, *(tuple(parts[p]) for p in PARTITIONS))

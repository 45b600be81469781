"""A corpus described by a manifest file, for data that has no loader of its own.

Three formats, picked by the file's suffix (anything other than ``.json`` / ``.jsonl`` is read as CSV):

- **CSV** with a header, e.g. ``path,speaker,gender,emotion[,split|fold]``::

      path,speaker,gender,emotion,split
      /corpora/mine/s01_0001.wav,s01,female,happy,train

- **JSON** as SpeechBrain's recipes write it: an object keyed by utterance id (a list of records also works)::

      {"s01_0001": {"wav": "{data_root}/s01_0001.wav", "spk_id": "s01", "gender": "female", "emo": "hap"}}

- **JSONL** as EmoBox ships its metadata: one object per line, e.g.
  ``{"key": "iemocap-Ses01F_impro04_F000", "wav": "downloads/iemocap/...wav", "emo": "neu", "length": 4.39}``.

One schema serves all three: a field (CSV column or JSON key, compared like column names: case, ``_`` and spaces
ignored) is found under its name or an alias in ``FIELDS``: ``path`` (file, filename, wav, audio), ``speaker``
(speaker_id, spkr, spk_id, spk), ``gender`` (sex), ``emotion`` (label, emotion_label, emo), and optionally ``split``
(partition, set; train / validation / test, with dev, val and development accepted) *or* ``fold`` (the fold whose
test set the clip belongs to). Other fields (EmoBox's ``length``, ``dataset``, ``channel`` ...) are ignored.

Where the manifest is: option ``manifest`` (a path), else ``--data-root`` itself when it is a file, else the first of
``manifest.csv``, ``manifest.json``, ``manifest.jsonl`` in ``--data-root``.

Audio paths: an absolute path is taken as listed (the user who lists a file means it). A relative one, and the
placeholder ``{data_root}`` (also ``$data_root``, as SpeechBrain's CSVs write it), are resolved against the *data
root*: option ``data_root`` when given (EmoBox's paths are relative to the EmoBox folder, not to the JSONL), else the
manifest's folder. ``~`` is expanded, ``..`` folded lexically (symlinks are not followed, so a root whose audio is a
symlinked folder still works). Option ``confine=true`` keeps only paths inside the data root; the others are skipped
as ``path_outside_root`` (for a manifest you did not write yourself). The same audio listed twice is a ``duplicate``.

Emotions: the four class names (any case), or what option ``emotion_map`` maps to them, e.g.
``emotion_map="joy=happy,anger=angry,fear=skip"`` (``skip`` marks a label as outside the task). Anything else is
``unknown_label``. Gender: female/f, male/m, or empty / unknown / absent: the clip is kept with gender None and a
caveat ``unknown_gender`` (left out of the gender metrics, like MSP-Podcast's unknown genders).

Speakers are required: speaker-independent folds, the speaker-disjointness check and the speaker probe all need
them. A manifest without a speaker field at all is a MetadataError saying so (EmoBox's metadata and SpeechBrain's
IEMOCAP JSON carry none: add one per record); an entry whose speaker is empty is a ``malformed_line``.

Bad entries: a CSV line with the wrong number of fields, a JSONL line that is not a JSON object, or a record whose
path or speaker is missing is skipped as ``malformed_line`` with ``file:line`` (JSON: ``file:record N (id)``), as in
every corpus. A ``.json`` file that does not parse is a MetadataError naming the file and line. EmoBox records that
cut a segment out of a longer file (``start_time`` / ``end_time``) are skipped as ``segment``: the whole file
would carry the segment's label. When nothing is usable the error lists every skip reason with its count, the first
skipped entry with its values, and what to change.

Folds: from ``split`` (one fold), from ``fold`` (fold k tests fold k and validates on the next one), or, with
neither, 5 deterministic speaker-independent folds with gender-stratified speaker groups, as for CREMA-D.
User-given splits are checked for speaker overlap like every other corpus.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from trustser import EMOTIONS
from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Fold, Skip
from trustser.corpora.common import (
    SPLIT_ALIASES,
    ClipCollector,
    MetadataError,
    bool_option,
    check_options,
    excerpt,
    find_first,
    normalise_column,
    read_lines,
    read_table,
    rotating_folds,
    speaker_genders,
    split_fold,
    stratified_groups,
)
from trustser.corpora.registry import register_corpus
from trustser.errors import ConfigError, CorpusNotFoundError

OPTIONS = ("manifest", "emotion_map", "data_root", "confine")
DEFAULT_NAMES = ("manifest.csv", "manifest.json", "manifest.jsonl")
N_FOLDS = 5
SKIP_LABEL = "skip"
GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male"}
UNKNOWN_GENDERS = frozenset({"", "unknown", "na", "n/a", "none", "?"})

FIELDS = {
    "path": ("file", "filename", "wav", "audio"),
    "speaker": ("speaker_id", "spkr", "spk_id", "spk"),
    "gender": ("sex",),
    "emotion": ("label", "emotion_label", "emo"),
    "split": ("partition", "set"),
    "fold": (),
}
"""Canonical field → the other names it is accepted under, in every format."""
REQUIRED = ("path", "speaker", "emotion")
ID_FIELDS = ("key", "id", "utt_id", "utterance_id")
"""Where a JSON list or JSONL record keeps its id (shown in messages only: clips are identified by their audio)."""
SEGMENT_FIELDS = ("start_time", "end_time")
PLACEHOLDER = re.compile(r"\$?\{data_root\}|\$data_root(?![A-Za-z0-9_])")


class NoUsableClipsError(CorpusNotFoundError):
    """Every entry of a manifest was skipped; the message says why, with counts and the first skipped entry."""


@dataclass(frozen=True)
class Entry:
    """One manifest row or record, its fields under their canonical names (absent fields are left out)."""

    source: Path
    place: str  # "7" (a line) or "record 3 (utt_id)"
    values: Mapping[str, str]
    segment: bool = False

    @property
    def where(self) -> str:
        return f"{self.source.name}:{self.place}"

    def malformed(self, why: str) -> Skip:
        return Skip(f"{self.source}:{self.place}", "malformed_line", f"{self.where}: {why}")


def load_manifest(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, OPTIONS, "manifest")
    source = manifest_path(root, options)
    base = data_root(source, options)
    confine = bool_option(options, "confine", False)
    emotions = emotion_table(str(options.get("emotion_map", "") or ""))
    entries = read_manifest(source)
    if any(e.values.get("split") for e in entries if isinstance(e, Entry)) and any(
        e.values.get("fold") for e in entries if isinstance(e, Entry)
    ):
        raise MetadataError(f"{source}: give either a split or a fold for the clips, not both")
    collector = ClipCollector()
    caveats: list[Skip] = []
    fold_of: dict[str, str] = {}
    unknown_labels: Counter = Counter()
    first: tuple[Entry | Skip, Skip] | None = None
    for entry in entries:
        item = entry if isinstance(entry, Skip) else make_clip(entry, base, confine, emotions)
        kept = collector.add(item, entry.where if isinstance(entry, Entry) else "")
        if not kept:
            first = first or (entry, collector.skipped[-1])
            if isinstance(entry, Entry) and isinstance(item, Skip) and item.reason == "unknown_label":
                unknown_labels[entry.values.get("emotion", "")] += 1
            continue
        assert isinstance(entry, Entry) and isinstance(item, Clip)  # only entries become kept clips
        if item.gender is None:
            shown = entry.values.get("gender")
            why = "no gender field" if shown is None else f"gender {shown or 'empty'}"
            caveats.append(Skip(str(item.path), "unknown_gender", f"{entry.where}: {why}: not in the gender metrics"))
        if entry.values.get("fold"):
            fold_of[item.clip_id] = entry.values["fold"]
    if not collector.clips:
        raise NoUsableClipsError(no_clips_message(source, base, collector.skipped, first, unknown_labels))
    folds = manifest_folds(collector.clips, fold_of, source)
    return CorpusIndex("manifest", base, collector.clips, folds, collector.skipped, caveats)


# --- where things are ---------------------------------------------------------------------------------------------


def manifest_path(root: Path, options: Mapping[str, object]) -> Path:
    explicit = options.get("manifest")
    if explicit or root.is_file():
        path = (Path(str(explicit)).expanduser() if explicit else root).resolve()
        if not path.is_file():
            raise CorpusNotFoundError(f"manifest: file not found: {path}")
        return path
    return find_first(root, DEFAULT_NAMES, "manifest", "manifest file").resolve()


def data_root(source: Path, options: Mapping[str, object]) -> Path:
    """What relative audio paths and ``{data_root}`` mean: option ``data_root``, else the manifest's folder."""
    given = options.get("data_root")
    if not given:
        return source.parent
    path = Path(str(given)).expanduser().resolve()
    if not path.is_dir():
        raise CorpusNotFoundError(f"manifest: option data_root: {path} is not a directory")
    return path


def resolve_audio(listed: str, base: Path) -> Path:
    """The file a manifest entry means: placeholder replaced, ``~`` expanded, relative to ``base``, ``..`` folded."""
    text = os.path.expanduser(PLACEHOLDER.sub(lambda _: str(base), listed))  # an unknown ~user stays as written
    return Path(os.path.normpath(base / text))  # base / an absolute path is that absolute path


# --- reading the three formats ------------------------------------------------------------------------------------


def read_manifest(source: Path) -> list[Entry | Skip]:
    """The manifest's entries in file order; entries unreadable on their own are already ``malformed_line`` skips."""
    suffix = source.suffix.lower()
    if suffix == ".json":
        entries = read_json(source)
    elif suffix == ".jsonl":
        entries = read_jsonl(source)
    else:
        return read_csv(source)
    check_fields(source, [e for e in entries if isinstance(e, Entry)])
    return entries


def read_csv(source: Path) -> list[Entry | Skip]:
    required = {name: FIELDS[name] for name in REQUIRED}
    optional = {name: spellings for name, spellings in FIELDS.items() if name not in REQUIRED}
    rows, malformed_rows = read_table(source, required, optional)
    entries: list[tuple[int, Entry | Skip]] = [(n, Entry(source, str(n), values)) for n, values in rows]
    entries += [(int(skip.item.rsplit(":", 1)[1]), skip) for skip in malformed_rows]  # item is "file:line"
    return [entry for _, entry in sorted(entries, key=lambda pair: pair[0])]


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so that an utterance id listed twice is counted, not dropped."""


def read_json(source: Path) -> list[Entry | Skip]:
    try:
        data = json.loads(read_text(source), object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        hint = "; one JSON object per line belongs in a .jsonl file" if exc.msg == "Extra data" else ""
        raise MetadataError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno}){hint}") from None
    if isinstance(data, _Pairs):
        records: Iterable[tuple[object, object]] = data
    elif isinstance(data, list):
        records = ((record_id(r), r) for r in data)
    else:
        raise MetadataError(
            f"{source}: expected a JSON object keyed by utterance id (or a list of records), "
            f"found {type(data).__name__}"
        )
    return [entry_of(source, f"record {i} ({key})", record) for i, (key, record) in enumerate(records, start=1)]


def read_jsonl(source: Path) -> list[Entry | Skip]:
    entries: list[Entry | Skip] = []
    for line_no, line in read_lines(source):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            entries.append(
                Entry(source, str(line_no), {}).malformed(
                    f"not valid JSON: {exc.msg} (column {exc.colno}): {excerpt(line)}"
                )
            )
            continue
        entries.append(entry_of(source, str(line_no), record))
    return entries


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def record_id(record: object) -> str:
    if isinstance(record, _Pairs):
        fields = dict(record)
        return next((str(fields[k]) for k in ID_FIELDS if k in fields), "no id")
    return "no id"


def entry_of(source: Path, place: str, record: object) -> Entry | Skip:
    """An Entry from one JSON record: its fields found under their canonical names or aliases, as text."""
    if not isinstance(record, _Pairs):
        return Entry(source, place, {}).malformed(f"expected a JSON object, found {excerpt(json.dumps(record))}")
    fields = {normalise_column(str(k)): v for k, v in record}
    values: dict[str, str] = {}
    for canonical, spellings in FIELDS.items():
        name = next((normalise_column(n) for n in (canonical, *spellings) if normalise_column(n) in fields), None)
        if name is None:
            continue
        value = fields[name]
        if isinstance(value, list):  # objects and arrays both arrive as lists
            found = excerpt(json.dumps(value))
            return Entry(source, place, values).malformed(f"field {canonical}: expected text, found {found}")
        values[canonical] = "" if value is None else str(value).strip()
    segment = any(fields.get(normalise_column(f)) is not None for f in SEGMENT_FIELDS)
    return Entry(source, place, values, segment)


def check_fields(source: Path, entries: Sequence[Entry]) -> None:
    """A required field that no record has is a property of the file, not of its records: say so once."""
    seen = {name for entry in entries for name in entry.values}
    for name in REQUIRED:
        if entries and name not in seen:
            why = (
                " Speaker-independent folds, the speaker-disjointness check and the speaker probe need the speaker "
                "of every clip; add it to each record (EmoBox metadata and SpeechBrain's IEMOCAP JSON have none)."
                if name == "speaker"
                else ""
            )
            raise MetadataError(
                f"{source}: no record has a {name!r} field (also accepted: {', '.join(FIELDS[name])}).{why}"
            )


# --- one entry → one clip -----------------------------------------------------------------------------------------


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


def make_clip(entry: Entry, base: Path, confine: bool, emotions: Mapping[str, str | None]) -> Clip | Skip:
    row, where = entry.values, entry.where
    if not row.get("path"):
        return entry.malformed("no audio path")
    if not row.get("speaker"):
        return entry.malformed("no speaker")
    path = resolve_audio(row["path"], base)
    inside = path.is_relative_to(base)
    if path == base or not path.name:
        return entry.malformed(f"path {row['path']!r} names a folder, not a file")
    if confine and not inside:
        return Skip(str(path), "path_outside_root", f"{where}: resolves outside {base} (confine=true)")
    if entry.segment:
        return Skip(str(path), "segment", f"{where}: start_time/end_time cut a segment out of the file")
    label = row.get("emotion", "").lower()
    if label not in emotions:
        return Skip(str(path), "unknown_label", f"{where}: {row.get('emotion', '')}")
    emotion = emotions[label]
    if emotion is None:
        return Skip(str(path), "emotion_not_in_task", f"{where}: {row['emotion']}")
    gender_text = row.get("gender", "").lower()
    if gender_text not in GENDERS and gender_text not in UNKNOWN_GENDERS:
        return entry.malformed(f"gender {row['gender']!r}: expected female, male or unknown")
    split = None
    if row.get("split"):
        split = SPLIT_ALIASES.get(row["split"].lower())
        if split is None:
            return entry.malformed(f"split {row['split']!r}: expected train, validation or test")
    clip_id = (path.relative_to(base) if inside else path).with_suffix("").as_posix()
    return Clip(clip_id, path, row["speaker"], GENDERS.get(gender_text), emotion, split=split)


# --- when nothing is usable ---------------------------------------------------------------------------------------


def no_clips_message(
    source: Path,
    base: Path,
    skipped: Sequence[Skip],
    first: tuple[Entry | Skip, Skip] | None,
    unknown_labels: Counter,
) -> str:
    """Every skip reason with its count, the first skipped entry with its values, and what to change."""
    if not skipped:
        return f"manifest: no usable clips in {source}: it lists no entries"
    counts = Counter(s.reason for s in skipped).most_common()
    entries = "the only entry was" if len(skipped) == 1 else f"all {len(skipped)} entries were"
    lines = [
        f"manifest: no usable clips in {source}: {entries} skipped "
        f"({', '.join(f'{reason} {n}' for reason, n in counts)})"
    ]
    if first is not None:
        lines += describe(*first)
    hints = {
        "path_outside_root": f"confine=true keeps only audio under {base}; without it every listed path is read",
        "missing_audio": f"absolute paths are read as listed; relative ones and {{data_root}} are resolved against "
        f"{base}: give --corpus-option data_root=DIR when they are relative to another folder",
        "unknown_label": "labels seen: "
        + ", ".join(f"{label or '(empty)'} {n}" for label, n in unknown_labels.most_common(6))
        + f"; the classes are {', '.join(EMOTIONS)}: map labels with --corpus-option "
        f"emotion_map={suggested_map(unknown_labels)} (LABEL=skip leaves a label out)",
        "malformed_line": "a .jsonl manifest holds one JSON object per line; one JSON document belongs in a .json file"
        if source.suffix.lower() == ".jsonl"
        else "",
        "segment": "segments of longer files are not supported: cut them into files of their own",
    }
    lines += [f"hint: {hints[reason]}" for reason, _ in counts if hints.get(reason)]
    return "\n".join(lines)


def suggested_map(labels: Counter) -> str:
    """``hap=happy,neu=neutral`` for abbreviations of the classes (3 letters or more), else the general form."""
    pairs = [
        f"{label}={cls}"
        for label, _ in labels.most_common()
        if len(label) >= 3
        for cls in EMOTIONS
        if cls != label.lower() and cls.startswith(label.lower()[:3])
    ]
    return ",".join(pairs) if pairs else "LABEL=CLASS,..."


def describe(entry: Entry | Skip, skip: Skip) -> list[str]:
    """The first skipped entry as listed, then why: ``first skipped entry, manifest.csv:2: path=..., speaker=...``."""
    if isinstance(entry, Skip):  # unreadable on its own: its detail (file:line: what is wrong) is all there is
        return [f"first skipped entry, {entry.detail}", f"  skipped as {entry.reason}"]
    why = {"missing_audio": f"no such file {skip.item}", "duplicate": f"{skip.item} is listed before"}.get(
        skip.reason, skip.detail.removeprefix(f"{entry.where}: ")
    )
    values = ", ".join(f"{name}={entry.values[name]}" for name in FIELDS if name in entry.values)
    return [f"first skipped entry, {entry.where}: {values or 'no known fields'}", f"  skipped as {skip.reason}: {why}"]


# --- folds --------------------------------------------------------------------------------------------------------


def manifest_folds(clips: Mapping[str, Clip], fold_of: Mapping[str, str], source: Path) -> list[Fold]:
    """The folds the manifest asks for: its split, its fold column, or generated speaker folds."""
    with_split = [c for c in clips.values() if c.split]
    if with_split:
        if len(with_split) != len(clips):
            missing = len(clips) - len(with_split)
            raise MetadataError(f"{source}: split is empty for {missing} clip(s); fill it in for all")
        return [split_fold(clips, "manifest")]
    if fold_of:
        if len(fold_of) != len(clips):
            missing = len(clips) - len(fold_of)
            raise MetadataError(f"{source}: fold is empty for {missing} clip(s); fill it in for all")
        names = sorted(set(fold_of.values()), key=lambda f: (len(f), f))  # "2" before "10"
        return rotating_folds(clips, [[n] for n in names], key=lambda c: fold_of[c.clip_id])
    groups = stratified_groups(speaker_genders(clips.values()), N_FOLDS)
    return rotating_folds(clips, groups, key=lambda c: c.speaker)


MANIFEST = register_corpus(
    CorpusSpec(
        name="manifest",
        description="any corpus described by a manifest: CSV (path, speaker, gender, emotion[, split|fold]), "
        "SpeechBrain-style JSON or EmoBox-style JSONL",
        loader=load_manifest,
        protocol="the manifest's split or fold, else 5 gender-stratified speaker folds",
    )
)

"""What every corpus loader produces: an index of clips, the clips it skipped and why, and the folds.

Besides the skips, an index lists its *caveats*: clips that were kept although some of their metadata is missing
(say, an actor absent from the demographics file, so gender unknown). They train and test like any clip, leave the
gender metrics as unknown-gender clips do, and are counted by reason so the summary says why gender is unknown.

A loader only reads metadata (file names, label files); audio is validated when features are extracted, and those
skips are merged into the same report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from trustser import EMOTIONS

GENDERS = ("female", "male")
UNKNOWN_SPEAKER = "unknown"
"""The speaker id a loader gives clips whose speaker the corpus does not know: many people may share it, so the
disjointness check and the speaker probe leave it out."""


@dataclass(frozen=True)
class Clip:
    """One labelled utterance. ``gender`` is None where the corpus does not know it."""

    clip_id: str
    path: Path
    speaker: str
    gender: str | None
    emotion: str
    session: str | None = None
    split: str | None = None  # a corpus-defined split (train/validation/test), if any

    @property
    def label(self) -> int:
        return EMOTIONS.index(self.emotion)


@dataclass(frozen=True)
class Skip:
    """A clip or metadata line that was left out, with a short reason tag and where it came from."""

    item: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Fold:
    """Clip ids per partition. Speaker-disjointness is checked by :func:`check_speaker_disjoint`."""

    name: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def partitions(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass
class CorpusIndex:
    """A loaded corpus: its clips (by id), the skips and the protocol's folds."""

    name: str
    root: Path
    clips: dict[str, Clip]
    folds: list[Fold]
    skipped: list[Skip] = field(default_factory=list)
    caveats: list[Skip] = field(default_factory=list)  # kept clips with missing metadata, same shape as a skip

    def speakers(self, clip_ids: tuple[str, ...] | list[str]) -> list[str]:
        return sorted({self.clips[c].speaker for c in clip_ids})

    def class_counts(self) -> Counter:
        return Counter(c.emotion for c in self.clips.values())

    def skip_counts(self) -> Counter:
        return Counter(s.reason for s in self.skipped)

    def caveat_counts(self) -> Counter:
        return Counter(s.reason for s in self.caveats)

    def drop(self, clip_id: str, reason: str, detail: str = "") -> None:
        """Remove a clip found unusable after loading (e.g. corrupt audio) from the index and every fold."""
        clip = self.clips.pop(clip_id)
        self.skipped.append(Skip(str(clip.path), reason, detail))
        self.caveats = [c for c in self.caveats if c.item != str(clip.path)]  # a dropped clip is no longer kept
        self.folds = [
            Fold(f.name, *(tuple(c for c in part if c != clip_id) for part in (f.train, f.validation, f.test)))
            for f in self.folds
        ]


class FoldLeakError(AssertionError):
    """A speaker appears in two partitions of one fold."""


def check_speaker_disjoint(index: CorpusIndex, unidentified: frozenset[str] = frozenset()) -> None:
    """Raise FoldLeakError if any fold shares a speaker between train, validation and test.

    ``unidentified`` are speaker ids that mean "nobody knows who this is" (MSP-Podcast's ``unknown``): clips under
    such an id may well come from several people, so they prove nothing either way and are left out of the check.
    Every identified speaker is still checked.
    """
    for fold in index.folds:
        parts = {name: set(index.speakers(ids)) - unidentified for name, ids in fold.partitions().items()}
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            shared = parts[a] & parts[b]
            if shared:
                raise FoldLeakError(f"{index.name} fold {fold.name}: speakers {sorted(shared)} in both {a} and {b}")


Loader = Callable[[Path, Mapping[str, object]], CorpusIndex]


@dataclass(frozen=True)
class CorpusSpec:
    """A registry entry: how to find and read one corpus."""

    name: str
    description: str
    loader: Loader
    default_root: str | None = None  # relative to the project root, for corpora we ship
    protocol: str = ""
    unidentified_speakers: frozenset[str] = frozenset()  # ids meaning "speaker not known", exempt from the check

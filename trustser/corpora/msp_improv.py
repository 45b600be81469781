"""MSP-Improv in its release layout.

- Labels: ``Evalution.txt`` (the release's own misspelling; ``Evaluation.txt`` is accepted too), at the root or in
  ``Labels/``. Each utterance starts with a consensus line::

      UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:4.000000; V:2.000000; D:2.500000 ; N:3.000000;

  (file, consensus category, mean arousal, valence, dominance, naturalness) followed by one line per annotator,
  which we do not need. Consensus letters: N, H, S, A are the task's classes; O (other) and X (no majority) are
  ``emotion_not_in_task``.
- Audio: ``Audio/session<n>/<sentence>/<type>/MSP-IMPROV-<id>.wav`` (``Audio/`` may be absent: ``session<n>/``
  directly under the root is accepted). The label file names the ``.avi`` with a ``UTD-`` prefix; the wav of
  ``UTD-IMPROV-S01A-F01-S-FM01.avi`` is ``MSP-IMPROV-S01A-F01-S-FM01.wav``.

Ids read ``S01A-F01-S-FM01``: sentence ``S01`` with target emotion ``A``; speaker ``F01`` = the female actor of
session 1 (gender = first letter, session = the digits); the recording type ``S|R|T|P`` (read target sentences,
improvisations, natural interaction between takes), which is also the audio sub-folder; the last token numbers
the turn. All four types are used, as in the reference code.

Protocol: 6 folds; fold k tests session k, validates on session k+1 (mod 6), trains on the other four.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Skip
from trustser.corpora.common import (
    ClipCollector,
    check_options,
    excerpt,
    find_first,
    malformed,
    read_lines,
    require_root,
    rotating_folds,
)
from trustser.corpora.registry import register_corpus
from trustser.errors import CorpusNotFoundError

SESSIONS = tuple(f"session{n}" for n in range(1, 7))
LABEL_FILES = ("Evalution.txt", "Evaluation.txt", "Labels/Evalution.txt", "Labels/Evaluation.txt")
CONSENSUS = {"N": "neutral", "H": "happy", "S": "sad", "A": "angry"}
OTHER_CONSENSUS = frozenset({"O", "X"})
GENDERS = {"F": "female", "M": "male"}

UTTERANCE_ID = re.compile(
    r"^(?P<sentence>S\d\d[A-Z])-(?P<speaker>(?P<gender>[FM])(?P<session>\d\d))-(?P<type>[A-Z])-(?P<turn>[A-Za-z0-9]+)$"
)
FIRST_FIELD = re.compile(r"^UTD-IMPROV-(?P<id>\S+)\.avi$", re.IGNORECASE)


def load_msp_improv(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, (), "MSP-Improv")
    require_root(root, "MSP-Improv")
    label_file = find_first(root, LABEL_FILES, "MSP-Improv", "label file")
    audio_base = audio_folder(root)
    collector = ClipCollector()
    for line_no, line in read_lines(label_file):
        if is_utterance_line(line):  # skips annotator lines and blank lines
            collector.add(parse_consensus_line(audio_base, label_file, line_no, line), f"{label_file.name}:{line_no}")
    require_every_session(collector.clips, audio_base)
    folds = rotating_folds(collector.clips, [[s] for s in SESSIONS], key=lambda c: c.session)
    return CorpusIndex("msp_improv", root, collector.clips, folds, collector.skipped)


def audio_folder(root: Path) -> Path:
    """The folder holding ``session1`` … ``session6``: ``Audio/`` in the release, the root in some copies."""
    for base in (root / "Audio", root):
        if any((base / s).is_dir() for s in SESSIONS):
            return base
    raise CorpusNotFoundError(
        f"MSP-Improv: audio not found; looked for {root / 'Audio' / 'session<n>'} and {root / 'session<n>'}"
    )


def is_utterance_line(line: str) -> bool:
    """Consensus lines name the clip's .avi in their first field; annotator lines start with a rater id."""
    first = line.split(";", 1)[0].strip()
    return first.upper().startswith("UTD-IMPROV-") or first.lower().endswith(".avi")


def parse_consensus_line(audio_base: Path, label_file: Path, line_no: int, line: str) -> Clip | Skip:
    fields = [f.strip() for f in line.split(";")]
    first = FIRST_FIELD.match(fields[0])
    if not first or len(fields) < 2 or not fields[1]:
        return malformed(label_file, line_no, f"expected 'UTD-IMPROV-<id>.avi; <class>; ...': {excerpt(line)}")
    parts = UTTERANCE_ID.match(first["id"])
    if not parts:
        return malformed(label_file, line_no, f"id {first['id']!r} is not S<nn><E>-<F|M><nn>-<type>-<turn>")
    name = f"MSP-IMPROV-{first['id']}"
    session = f"session{int(parts['session'])}"
    path = audio_base / session / parts["sentence"] / parts["type"] / f"{name}.wav"
    code = fields[1].upper()
    if code not in CONSENSUS:
        return Skip(str(path), "emotion_not_in_task" if code in OTHER_CONSENSUS else "unknown_label", code)
    return Clip(name, path, parts["speaker"], GENDERS[parts["gender"]], CONSENSUS[code], session=session)


def require_every_session(clips: Mapping[str, Clip], audio_base: Path) -> None:
    """A session without clips would leave a fold with an empty test set: say which one instead."""
    present = {c.session for c in clips.values()}
    missing = [s for s in SESSIONS if s not in present]
    if missing:
        raise CorpusNotFoundError(
            f"MSP-Improv: no usable clips for {', '.join(missing)} (looked under {audio_base}); all 6 sessions are "
            f"needed for the 6 session folds"
        )


MSP_IMPROV = register_corpus(
    CorpusSpec(
        name="msp_improv",
        description="MSP-Improv, 12 actors in 6 dyadic sessions, English (licence from UT Dallas MSP lab)",
        loader=load_msp_improv,
        protocol="6 folds: test = one session, validation = the next session",
    )
)

"""IEMOCAP in its release layout (``IEMOCAP_full_release/``).

Labels: ``SessionN/dialog/EmoEvaluation/<dialog>.txt``, one line per utterance::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]

followed by per-evaluator lines (``C-E2: ...``, ``A-E3: ...``) that we do not need. Audio:
``SessionN/sentences/wav/<dialog>/<utterance>.wav``.

Speaker and gender come from the *utterance* id, not the dialog id: in ``Ses01F_impro01_M000`` the ``F`` says
which actor wore the motion-capture markers, the last ``M`` says who speaks, so the speaker is the male actor of
session 1 (speaker id ``Ses01M``).

Classes: neu→neutral, hap→happy, sad→sad, ang→angry. ``exc`` (excited) is merged into happy by default
(option ``merge_excited``, default true) because that is the convention the method's counts come from
(neutral 1708, happy 1636 = 595 hap + 1041 exc, sad 1084, angry 1103). The other labels (fru, sur, fea, dis,
oth, and ``xxx`` = no annotator majority) are outside the task, counted as ``emotion_not_in_task``.

Protocol: 5 folds; fold k tests session k, validates on session k+1 (mod 5) and trains on the other three.
(The reference code validates on the last remaining session instead; the method only says "one other session".)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Skip
from trustser.corpora.common import (
    ClipCollector,
    bool_option,
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

SESSIONS = tuple(f"Session{n}" for n in range(1, 6))
EMOTION_CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"}
OTHER_CODES = frozenset({"exc", "fru", "sur", "fea", "dis", "oth", "xxx"})
OPTIONS = ("merge_excited",)

LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>\S+)\s+(?P<emo>[A-Za-z]+)\s+\[[^\]]*\]\s*$"
)
UTTERANCE_ID = re.compile(r"^Ses(?P<session>\d\d)[FM]_(?P<dialog_rest>.+)_(?P<gender>[FM])(?P<turn>[^_]*)$")
GENDERS = {"F": "female", "M": "male"}


def load_iemocap(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, OPTIONS, "IEMOCAP")
    codes = emotion_codes(bool_option(options, "merge_excited", True))
    base = corpus_base(require_root(root, "IEMOCAP"))
    collector = ClipCollector()
    for session in SESSIONS:
        for label_file in label_files(base, session):
            for line_no, line in read_lines(label_file):
                if line.startswith("["):  # skips the header, blank and evaluator lines
                    item = parse_label_line(base, session, label_file, line_no, line, codes)
                    collector.add(item, f"{label_file.name}:{line_no}")
    if not collector.clips:
        raise CorpusNotFoundError(f"IEMOCAP: no usable clips under {base}")
    folds = rotating_folds(collector.clips, [[s] for s in SESSIONS], key=lambda c: c.session)
    return CorpusIndex("iemocap", root, collector.clips, folds, collector.skipped)


def emotion_codes(merge_excited: bool) -> dict[str, str]:
    return {**EMOTION_CODES, "exc": "happy"} if merge_excited else dict(EMOTION_CODES)


def corpus_base(root: Path) -> Path:
    """Accept the release folder itself or its parent (people point at either)."""
    nested = root / "IEMOCAP_full_release"
    return nested if not (root / SESSIONS[0]).is_dir() and nested.is_dir() else root


def label_files(base: Path, session: str) -> list[Path]:
    """The per-dialog label files; sub-folders (Categorical/, Attribute/) and macOS ``._`` files are not labels."""
    folder = find_first(base, [f"{session}/dialog/EmoEvaluation"], "IEMOCAP", f"{session} label folder", True)
    files = sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CorpusNotFoundError(f"IEMOCAP: no label files (*.txt) in {folder}")
    return files


def parse_label_line(
    base: Path, session: str, label_file: Path, line_no: int, line: str, codes: Mapping[str, str]
) -> Clip | Skip:
    """One ``[start - end] utt emo [v, a, d]`` line → a Clip, or the reason it is skipped."""
    match = LABEL_LINE.match(line)
    if not match:
        return malformed(label_file, line_no, f"expected '[start - end] UTT EMO [V, A, D]': {excerpt(line)}")
    utterance, code = match["utt"], match["emo"].lower()
    parts = UTTERANCE_ID.match(utterance)
    if not parts:
        return malformed(label_file, line_no, f"utterance id {utterance!r} is not SesNN[FM]_..._[FM]NNN")
    if code not in codes:
        return Skip(utterance, "emotion_not_in_task" if code in OTHER_CODES else "unknown_label", code)
    dialog = utterance.rsplit("_", 1)[0]
    path = base / session / "sentences" / "wav" / dialog / f"{utterance}.wav"
    speaker = f"Ses{parts['session']}{parts['gender']}"
    return Clip(utterance, path, speaker, GENDERS[parts["gender"]], codes[code], session=session)


IEMOCAP = register_corpus(
    CorpusSpec(
        name="iemocap",
        description="IEMOCAP, 10 actors in 5 dyadic sessions, English (licence from USC SAIL)",
        loader=load_iemocap,
        protocol="5 folds: test = one session, validation = the next session",
    )
)

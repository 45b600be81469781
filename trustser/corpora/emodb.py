"""EmoDB (Berlin Database of Emotional Speech) in its original release layout: ``wav/SSTTTEV.wav``.

``SS`` speaker, ``TTT`` text id, ``E`` emotion initial (German), ``V`` version. The 4-class subset maps
N→neutral, F→happy, T→sad, W→angry; the other emotions (boredom, disgust, fear) are outside the task and counted
as ``emotion_not_in_task``, not as errors.

Protocol: 5 speaker-independent folds. Speakers are paired (i-th female with i-th male, both sorted by id);
fold k tests pair k, validates on pair k+1 (mod 5) and trains on the other three pairs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Fold, Skip
from trustser.corpora.registry import register_corpus
from trustser.errors import CorpusNotFoundError

EMOTION_CODES = {"N": "neutral", "F": "happy", "T": "sad", "W": "angry"}
OTHER_CODES = {"L": "boredom", "E": "disgust", "A": "fear"}

SPEAKER_GENDER = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}  # from the corpus documentation (shared/data/README.md)

FILE_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])\.wav$")


def speaker_pairs() -> list[tuple[str, str]]:
    females = sorted(s for s, g in SPEAKER_GENDER.items() if g == "female")
    males = sorted(s for s, g in SPEAKER_GENDER.items() if g == "male")
    return list(zip(females, males))


def load_emodb(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    wav_dir = root / "wav"
    if not wav_dir.is_dir():
        raise CorpusNotFoundError(f"EmoDB not found: expected directory {wav_dir}")
    clips: dict[str, Clip] = {}
    skipped: list[Skip] = []
    for path in sorted(wav_dir.iterdir()):
        if path.suffix.lower() != ".wav":
            continue
        match = FILE_NAME.match(path.name)
        if not match:
            skipped.append(Skip(str(path), "bad_file_name", "expected SSTTTEV.wav"))
            continue
        code, speaker = match["emotion"], match["speaker"]
        if code not in EMOTION_CODES:
            reason = "emotion_not_in_task" if code in OTHER_CODES else "unknown_label"
            skipped.append(Skip(str(path), reason, code))
            continue
        if speaker not in SPEAKER_GENDER:
            skipped.append(Skip(str(path), "unknown_speaker", speaker))
            continue
        clip_id = path.stem
        clips[clip_id] = Clip(clip_id, path, speaker, SPEAKER_GENDER[speaker], EMOTION_CODES[code])
    if not clips:
        raise CorpusNotFoundError(f"EmoDB: no usable clips in {wav_dir}")
    return CorpusIndex("emodb", root, clips, emodb_folds(clips), skipped)


def emodb_folds(clips: Mapping[str, Clip]) -> list[Fold]:
    pairs = speaker_pairs()
    folds = []
    for k, test_pair in enumerate(pairs):
        val_pair = pairs[(k + 1) % len(pairs)]

        def ids(speakers: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(sorted(c for c, clip in clips.items() if clip.speaker in speakers))

        train_speakers = tuple(s for p in pairs if p not in (test_pair, val_pair) for s in p)
        folds.append(Fold(f"fold{k + 1}", ids(train_speakers), ids(val_pair), ids(test_pair)))
    return folds


EMODB = register_corpus(
    CorpusSpec(
        name="emodb",
        description="Berlin EmoDB, 10 speakers, German acted speech (shipped, CC0)",
        loader=load_emodb,
        default_root="../shared/data/emodb",
        protocol="5 folds: test = one female + one male speaker, validation = the next pair",
    )
)

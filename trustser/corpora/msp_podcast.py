"""MSP-Podcast in its release layout.

- Labels: ``Labels/labels_consensus.csv`` (releases up to 1.8 spell it ``labels_concensus.csv``; both are accepted,
  as is the file at the root) with columns ``FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
  Split_Set``, e.g. ``MSP-PODCAST_0001_0008.wav,N,2.2,4.0,2.0,127,Female,Train``.
- Audio: ``Audios/<FileName>`` (``Audio/`` accepted).

Classes: EmoClass N/H/S/A → neutral/happy/sad/angry; U, F, D, C, O (surprise, fear, disgust, contempt, other) and
X (no consensus) are ``emotion_not_in_task``.

Protocol: the corpus's own split as one fold: ``Train`` → train, ``Development`` (``Validation`` before 1.9) →
validation, ``Test1`` → test (option ``test_set=Test2`` uses Test2 instead; the test set not chosen, and Test3,
are skipped as ``split_not_used``).

Unknown speakers: many segments have ``SpkrID`` and/or ``Gender`` = ``Unknown``. They are *kept* — their emotion
labels are as good as any — with speaker id ``unknown`` and gender None, and listed in the index's caveats under
``unknown_speaker`` / ``unknown_gender`` (the summary counts them as ``gender_unknown`` and by caveat; fairness and
both privacy probes leave them out). Option ``drop_unknown=true`` drops them
instead (skip reason ``unknown_speaker``), which is what the reference implementation does.

Speaker independence: the corpus documents its Train / Development / Test partitions as speaker-independent for the
speakers it has identified (Lotfian & Busso, "Building naturalistic emotionally balanced speech corpus by retrieving
emotional speech from existing podcast recordings", 2019). Nobody can tell whether an ``unknown`` segment in Test1
comes from someone who also talks in Train, so ``unknown`` alone is exempt (``unidentified_speakers``); a known
SpkrID in two partitions contradicts the release's own protocol — a damaged or mixed-up label file, or a
re-split copy — and is a FoldLeakError naming the speaker and both partitions rather than a warning, because a
leaked speaker silently inflates every test metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from trustser.corpora.base import UNKNOWN_SPEAKER, Clip, CorpusIndex, CorpusSpec, Skip
from trustser.corpora.common import (
    ClipCollector,
    bool_option,
    check_options,
    choice_option,
    find_first,
    malformed,
    read_table,
    require_root,
    split_fold,
)
from trustser.corpora.registry import register_corpus
from trustser.errors import CorpusNotFoundError

LABEL_FILES = (
    "Labels/labels_consensus.csv",
    "Labels/labels_concensus.csv",
    "labels_consensus.csv",
    "labels_concensus.csv",
)
AUDIO_DIRS = ("Audios", "Audio")
OPTIONS = ("test_set", "drop_unknown")
TEST_SETS = ("Test1", "Test2")

EMO_CLASSES = {"N": "neutral", "H": "happy", "S": "sad", "A": "angry"}
OTHER_CLASSES = frozenset({"U", "F", "D", "C", "O", "X"})
GENDERS = {"female": "female", "male": "male"}
UNKNOWN = UNKNOWN_SPEAKER
SPLITS = {"train": "train", "development": "validation", "validation": "validation"}
KNOWN_TEST_SPLITS = frozenset({"test1", "test2", "test3"})

COLUMNS = {
    "FileName": ("File_Name", "File"),
    "EmoClass": ("Emo_Class", "EmotionClass"),
    "SpkrID": ("SpeakerID", "Speaker_ID", "Speaker"),
    "Gender": ("Sex",),
    "Split_Set": ("SplitSet", "Split", "Partition"),
}


def load_msp_podcast(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, OPTIONS, "MSP-Podcast")
    test_set = choice_option(options, "test_set", TEST_SETS, "Test1").lower()
    drop_unknown = bool_option(options, "drop_unknown", False)
    require_root(root, "MSP-Podcast")
    label_file = find_first(root, LABEL_FILES, "MSP-Podcast", "consensus label file")
    audio_dir = find_first(root, AUDIO_DIRS, "MSP-Podcast", "audio folder", want_dir=True)
    rows, malformed_rows = read_table(label_file, COLUMNS)
    collector = ClipCollector(malformed_rows)
    for line_no, row in rows:
        if row["FileName"]:
            item = make_clip(row, audio_dir, test_set, drop_unknown)
        else:
            item = malformed(label_file, line_no, "empty FileName")
        collector.add(item, f"{label_file.name}:{line_no}")
    if not collector.clips:
        raise CorpusNotFoundError(f"MSP-Podcast: no usable clips listed in {label_file}")
    caveats = unknown_caveats(collector.clips)
    return CorpusIndex("msp_podcast", root, collector.clips, [split_fold(collector.clips)], collector.skipped, caveats)


def unknown_caveats(clips: Mapping[str, Clip]) -> list[Skip]:
    """A caveat per kept clip with an unknown speaker or gender (a clip missing both counts under each)."""
    caveats = []
    for clip_id in sorted(clips):
        clip = clips[clip_id]
        if clip.speaker == UNKNOWN:
            caveats.append(Skip(str(clip.path), "unknown_speaker", "SpkrID=Unknown: left out of the speaker probe"))
        if clip.gender is None:
            caveats.append(Skip(str(clip.path), "unknown_gender", "Gender unknown: left out of the gender metrics"))
    return caveats


def make_clip(row: Mapping[str, str], audio_dir: Path, test_set: str, drop_unknown: bool) -> Clip | Skip:
    file_name = row["FileName"] if row["FileName"].lower().endswith(".wav") else row["FileName"] + ".wav"
    path = audio_dir / file_name
    split = partition(row["Split_Set"], test_set, path)
    if isinstance(split, Skip):
        return split
    code = row["EmoClass"].upper()
    if code not in EMO_CLASSES:
        return Skip(str(path), "emotion_not_in_task" if code in OTHER_CLASSES else "unknown_label", code)
    speaker = row["SpkrID"] if row["SpkrID"] and row["SpkrID"].lower() != UNKNOWN else UNKNOWN
    gender = GENDERS.get(row["Gender"].lower())
    if drop_unknown and (speaker == UNKNOWN or gender is None):
        return Skip(str(path), "unknown_speaker", f"SpkrID={row['SpkrID']} Gender={row['Gender']}")
    return Clip(Path(file_name).stem, path, speaker, gender, EMO_CLASSES[code], split=split)


def partition(value: str, test_set: str, path: Path) -> str | Skip:
    """Map a Split_Set value to train/validation/test, or say why the clip is not used."""
    key = value.strip().lower()
    if key == test_set:
        return "test"
    if key in SPLITS:
        return SPLITS[key]
    return Skip(str(path), "split_not_used" if key in KNOWN_TEST_SPLITS else "unknown_split", value)


MSP_PODCAST = register_corpus(
    CorpusSpec(
        name="msp_podcast",
        description="MSP-Podcast, natural podcast speech, English (licence from UT Dallas MSP lab)",
        loader=load_msp_podcast,
        protocol="the corpus's own split: Train / Development / Test1 (or Test2)",
        unidentified_speakers=frozenset({UNKNOWN}),  # SpkrID=Unknown segments may be anyone, in any partition
    )
)

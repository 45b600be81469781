"""Miniature copies of each licensed corpus in its real distribution layout, for tests.

Each ``build_*`` writes real file and folder names, real label-file syntax and real column names into a directory
and returns the root a user would pass as ``--data-root``. Audio is a short generated clip (0.5 s of a tone plus
noise, 16 kHz, 16-bit PCM) written once and copied, so building a replica takes milliseconds. The label contents
follow simple stated rules so that tests can assert exact counts worked out by hand.

The CREMA-D replica starts from the real metadata files shipped in ``../shared/data/crema_d_metadata``
(VideoDemographics.csv verbatim, SentenceFilenames.csv rows for 10 actors); its summaryTable.csv is synthetic, in
the release's exact format, because the vote table is not shipped.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CREMA_D_METADATA = SHARED_DATA / "crema_d_metadata"


@lru_cache(maxsize=1)
def wav_bytes(seconds: float = 0.5) -> bytes:
    """One valid, non-silent 16 kHz mono WAV, encoded once."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    samples = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes())
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], quote_all: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- IEMOCAP ------------------------------------------------------------------------------------------------------

IEMOCAP_LABELS = ("neu", "hap", "exc", "sad", "ang", "fru", "xxx", "sur")
"""Per dialog, utterance i gets label i; even i are spoken by the female actor, odd i by the male one. So each
session (2 dialogs) has F: neu, exc, ang, xxx and M: hap, sad, fru, sur, twice."""


def build_iemocap(tmp: Path) -> Path:
    """``IEMOCAP_full_release/SessionN/{dialog/EmoEvaluation,sentences/wav}``; returns the release folder."""
    base = tmp / "IEMOCAP_full_release"
    for n in range(1, 6):
        session = base / f"Session{n}"
        labels = session / "dialog" / "EmoEvaluation"
        for dialog in (f"Ses0{n}F_impro01", f"Ses0{n}M_script01_1"):
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for i, label in enumerate(IEMOCAP_LABELS):
                utterance = f"{dialog}_{'F' if i % 2 == 0 else 'M'}{i:03d}"
                start = 2.0 * i + 0.5
                lines += [
                    f"[{start:.4f} - {start + 1.5:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 3.5000]",
                    "C-E2:\tNeutral;\t()",
                    "C-F1:\tNeutral;\t(curious)",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                write_wav(session / "sentences" / "wav" / dialog / f"{utterance}.wav")
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
            # the release also has per-evaluator folders; their .txt files are not utterance labels
            (labels / "Categorical").mkdir(exist_ok=True)
            (labels / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
        (labels / f"._Ses0{n}F_impro01.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # AppleDouble junk
    return base


# --- CREMA-D ------------------------------------------------------------------------------------------------------

CREMA_D_ACTORS = ("1001", "1002", "1003", "1004", "1005", "1006", "1007", "1011", "1014", "1015")
"""The 5 lowest-numbered female and male actors of the real VideoDemographics.csv."""
CREMA_D_SENTENCES = ("IEO", "DFA")
"""IEO is recorded at LO/MD/HI (and NEU at XX), DFA at XX only: 22 clips per actor."""
CODE_LETTER = {"NEU": "N", "HAP": "H", "SAD": "S", "ANG": "A", "FEA": "F", "DIS": "D"}


def multimodal_vote(name: str) -> str:
    """Replica rule: low intensity reads as neutral, DFA-sad is a neutral/sad tie, the rest as intended."""
    _, sentence, emotion, level = name.split("_")
    if level == "LO":
        return "N"
    if sentence == "DFA" and emotion == "SAD":
        return "N:S"
    return CODE_LETTER[emotion]


def voice_vote(name: str) -> str:
    """Replica rule: only high-intensity clips are heard as intended; everything else sounds neutral."""
    _, _, emotion, level = name.split("_")
    return CODE_LETTER[emotion] if level == "HI" else "N"


def crema_d_names() -> list[str]:
    with open(CREMA_D_METADATA / "SentenceFilenames.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [
        name for _, name in rows if name.split("_")[0] in CREMA_D_ACTORS and name.split("_")[1] in CREMA_D_SENTENCES
    ]


def build_crema_d(tmp: Path, with_votes: bool = True) -> Path:
    """``AudioWAV/``, ``VideoDemographics.csv``, ``SentenceFilenames.csv`` and ``processedResults/summaryTable.csv``."""
    root = tmp / "CREMA-D"
    root.mkdir(parents=True)
    shutil.copy(CREMA_D_METADATA / "VideoDemographics.csv", root / "VideoDemographics.csv")
    names = crema_d_names()
    with open(CREMA_D_METADATA / "SentenceFilenames.csv", newline="") as handle:
        listed = [row for row in list(csv.reader(handle))[1:] if row[1] in set(names)]
    write_csv(root / "SentenceFilenames.csv", ["Stimulus_Number", "Filename"], listed, quote_all=True)
    for name in names:
        write_wav(root / "AudioWAV" / f"{name}.wav")
    if with_votes:
        header = [
            "",
            "FileName",
            "VoiceVote",
            "VoiceLevel",
            "FaceVote",
            "FaceLevel",
            "MultiModalVote",
            "MultiModalLevel",
        ]
        rows = [
            [i, n, voice_vote(n), "60.5", multimodal_vote(n), "70.25", multimodal_vote(n), "65.5"]
            for i, n in enumerate(names, start=1)
        ]
        write_csv(root / "processedResults" / "summaryTable.csv", header, rows, quote_all=True)
    return root


# --- MSP-Improv ---------------------------------------------------------------------------------------------------

MSP_IMPROV_UTTERANCES = (
    # sentence, speaker gender, recording type, turn, consensus letter
    ("S01A", "F", "S", "FM01", "A"),
    ("S01A", "M", "S", "FM02", "A"),
    ("S02H", "F", "R", "FM03", "H"),
    ("S02H", "M", "R", "FM04", "H"),
    ("S03S", "F", "P", "FM05", "S"),
    ("S04N", "M", "T", "MF06", "N"),
    ("S05N", "F", "T", "MF07", "N"),
    ("S06A", "M", "P", "MF08", "O"),
    ("S07H", "F", "S", "MF09", "X"),
)
"""Per session: angry F+M, happy F+M, sad F, neutral F+M; O and X outside the task."""
RATER_LINE = "{rater}; {emotion}; Frustrated, annoyed; A:{a}; V:2.000000; D:3.000000; N:3.000000;"
CONSENSUS_NAMES = {"A": "Angry", "H": "Happy", "S": "Sad", "N": "Neutral", "O": "Other", "X": "Other"}


def build_msp_improv(tmp: Path, label_name: str = "Evalution.txt") -> Path:
    """``Evalution.txt`` and ``Audio/session<n>/<sentence>/<type>/MSP-IMPROV-<id>.wav`` for 6 sessions."""
    root = tmp / "MSP-IMPROV"
    lines: list[str] = []
    for session in range(1, 7):
        for sentence, gender, kind, turn, letter in MSP_IMPROV_UTTERANCES:
            utterance = f"{sentence}-{gender}{session:02d}-{kind}-{turn}"
            lines.append(f"UTD-IMPROV-{utterance}.avi; {letter}; A:4.000000; V:2.000000; D:2.500000 ; N:3.000000;")
            for rater in ("p101", "p102", "p103"):
                lines.append(RATER_LINE.format(rater=rater, emotion=CONSENSUS_NAMES[letter], a="4.000000"))
            lines.append("")
            write_wav(root / "Audio" / f"session{session}" / sentence / kind / f"MSP-IMPROV-{utterance}.wav")
    (root / label_name).write_text("\n".join(lines) + "\n")
    return root


# --- MSP-Podcast --------------------------------------------------------------------------------------------------

MSP_PODCAST_GROUPS = (
    # Split_Set, SpkrID, Gender
    ("Train", "127", "Female"),
    ("Train", "128", "Male"),
    ("Train", "Unknown", "Unknown"),
    ("Development", "200", "Female"),
    ("Development", "201", "Male"),
    ("Development", "Unknown", "Unknown"),
    ("Test1", "300", "Female"),
    ("Test1", "301", "Male"),
    ("Test1", "Unknown", "Unknown"),
    ("Test2", "400", "Female"),
    ("Test2", "401", "Male"),
)
MSP_PODCAST_CLASSES = ("N", "H", "S", "A", "U", "X")
"""Every (split, speaker) group has one clip of each class: 4 in the task, surprise and no-consensus outside."""
MSP_PODCAST_HEADER = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def build_msp_podcast(tmp: Path, label_name: str = "labels_consensus.csv", development: str = "Development") -> Path:
    """``Labels/labels_consensus.csv`` and ``Audios/MSP-PODCAST_<podcast>_<segment>.wav``.

    ``label_name="labels_concensus.csv"`` and ``development="Validation"`` give the layout of releases up to 1.8.
    """
    root = tmp / "MSP-PODCAST"
    rows = []
    for podcast, (split, speaker, gender) in enumerate(MSP_PODCAST_GROUPS, start=1):
        for segment, letter in enumerate(MSP_PODCAST_CLASSES, start=1):
            file_name = f"MSP-PODCAST_{podcast:04d}_{segment:04d}.wav"
            split_name = development if split == "Development" else split
            rows.append([file_name, letter, "3.4", "4.2", "3.8", speaker, gender, split_name])
            write_wav(root / "Audios" / file_name)
    write_csv(root / "Labels" / label_name, MSP_PODCAST_HEADER, rows)
    return root


# --- manifest -----------------------------------------------------------------------------------------------------

MANIFEST_SPEAKERS = tuple((f"s{i:02d}", "female" if i % 2 else "male") for i in range(1, 11))
"""10 speakers, alternating gender (odd ids female)."""


def build_manifest(tmp: Path, rows: Sequence[Sequence[str]] | None = None, extra_columns: Sequence[str] = ()) -> Path:
    """``manifest.csv`` plus ``audio/<speaker>/<n>.wav``; default rows: each speaker says each class once."""
    root = tmp / "my_corpus"
    if rows is None:
        emotions = ("neutral", "happy", "sad", "angry")
        rows = [[f"audio/{s}/{i}.wav", s, g, e] for s, g in MANIFEST_SPEAKERS for i, e in enumerate(emotions)]
    for row in rows:
        target = root / row[0]
        if target.resolve().is_relative_to(root.resolve()):
            write_wav(target)
    write_csv(root / "manifest.csv", ["path", "speaker", "gender", "emotion", *extra_columns], rows)
    return root


def build_absolute_manifest(tmp: Path) -> Path:
    """The form people write: ``lists/manifest.csv`` naming ``store/<speaker>/<n>.wav`` by absolute path.

    Same rows as :func:`build_manifest`; returns the manifest file (its folder holds no audio at all).
    """
    emotions = ("neutral", "happy", "sad", "angry")
    rows = [
        [str(write_wav(tmp / "store" / s / f"{i}.wav")), s, g, e]
        for s, g in MANIFEST_SPEAKERS
        for i, e in enumerate(emotions)
    ]
    return write_csv(tmp / "lists" / "manifest.csv", ["path", "speaker", "gender", "emotion"], rows)


# --- SpeechBrain JSON and EmoBox JSONL manifests ------------------------------------------------------------------

SHORT_LABELS = ("neu", "hap", "sad", "ang")
"""The labels SpeechBrain's IEMOCAP recipe and EmoBox write; ``SHORT_LABEL_MAP`` maps them onto the task."""
SHORT_LABEL_MAP = "neu=neutral,hap=happy,sad=sad,ang=angry"


def speechbrain_records(speaker_field: str = "spk_id") -> dict[str, dict[str, object]]:
    """Each :data:`MANIFEST_SPEAKERS` speaker says each short label once, as SpeechBrain's recipes key them."""
    return {
        f"{s}_{i}": {
            "wav": f"{{data_root}}/wavs/{s}/{i}.wav",
            "length": 0.5,
            "emo": label,
            speaker_field: s,
            "gender": g,
        }
        for s, g in MANIFEST_SPEAKERS
        for i, label in enumerate(SHORT_LABELS)
    }


def build_speechbrain_json(tmp: Path, records: dict[str, dict[str, object]] | None = None) -> tuple[Path, Path]:
    """A recipe's ``sb_recipe/train.json`` (``wav`` starting ``{data_root}``) and its audio under ``sb_data/``.

    Returns ``(json file, data root)``: the audio is *not* beside the JSON, as in SpeechBrain's recipes.
    """
    data = tmp / "sb_data"
    data.mkdir(parents=True, exist_ok=True)
    records = speechbrain_records() if records is None else records
    for record in records.values():
        write_wav(Path(str(record["wav"]).replace("{data_root}", str(data))))
    path = tmp / "sb_recipe" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=4))
    return path, data


EMOBOX_DATASET = "mycorpus"


def emobox_records(with_speaker: bool = True) -> list[dict[str, object]]:
    """EmoBox's JSONL fields (``key, dataset, wav, type, sample_rate, num_frame, task, length, emo, channel``).

    EmoBox itself ships no speaker; ``with_speaker`` adds the ``speaker`` field a user must add for trustser.
    """
    records = []
    for s, _ in MANIFEST_SPEAKERS:
        for i, label in enumerate(SHORT_LABELS):
            record: dict[str, object] = {
                "key": f"{EMOBOX_DATASET}-{s}_{i}",
                "dataset": EMOBOX_DATASET,
                "wav": f"downloads/{EMOBOX_DATASET}/{s}/{i}.wav",
                "type": "raw",
                "sample_rate": SAMPLE_RATE,
                "num_frame": 8000.0,
                "task": "category",
                "length": 0.5,
                "emo": label,
                "channel": 1,
            }
            if with_speaker:
                record["speaker"] = s
            records.append(record)
    return records


def build_emobox(tmp: Path, records: list[dict[str, object]] | None = None) -> tuple[Path, Path]:
    """EmoBox's layout: ``EmoBox/data/<dataset>/<dataset>.jsonl`` and audio under ``EmoBox/downloads/``.

    Returns ``(jsonl file, EmoBox folder)``: EmoBox's paths are relative to the EmoBox folder, not to the JSONL.
    """
    root = tmp / "EmoBox"
    records = emobox_records() if records is None else records
    for record in records:
        write_wav(root / str(record["wav"]))
    path = root / "data" / EMOBOX_DATASET / f"{EMOBOX_DATASET}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path, root

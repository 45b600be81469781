"""CREMA-D in its release layout (github CheyneyComputerScience/CREMA-D).

- ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav``, e.g. ``1001_IEO_HAP_HI.wav`` (EMO: ANG, DIS, FEA, HAP, NEU,
  SAD; level: LO, MD, HI, XX);
- ``VideoDemographics.csv`` (``ActorID, Age, Sex, Race, Ethnicity``; Sex is ``Male``/``Female``), at the root or in a
  ``metadata/`` folder;
- ``processedResults/summaryTable.csv`` with the crowd votes: ``"", FileName, VoiceVote, VoiceLevel, FaceVote,
  FaceLevel, MultiModalVote, MultiModalLevel``; a vote is one of A, D, F, H, N, S, or several joined by ``:`` when
  raters tied (the README spells the name column ``fileName``; both are accepted);
- ``SentenceFilenames.csv`` (``Stimulus_Number, Filename``): the official list of the 7,442 clips.

Labels (option ``label_source``):

- ``multimodal_vote`` (**default**): the audio-visual majority vote. This is what the method's counts come from:
  single-label N/H/S/A votes give neutral 1972, happy 1219, sad 589, angry 1019 — the method's table with one sad
  clip less, ``1076_MTI_SAD_XX``, whose audio file is empty in the release (the reference code drops it by name;
  here the audio check drops it when features are extracted). It is also what the reference implementation reads.
- ``voice_vote``: the audio-only majority vote (the label a listener gives the audio we actually use; far more
  neutral: 3897 N of 5606).
- ``intended``: the emotion the actor was asked to portray, from the file name (1087/1271/1271/1271); needs only
  the audio, so it is the fallback for copies without ``processedResults/``.

Gender: from ``VideoDemographics.csv``. A clip whose actor has no row there (``actor_not_in_demographics``) or whose
Sex is neither Male nor Female (``unrecognised_sex``) is *kept* with gender unknown and listed under that reason in
the index's caveats, as MSP-Podcast's ``Gender=Unknown`` segments are: its emotion label is as good as any, and the
fairness metric and the gender probe leave unknown-gender clips out. Guessing a gender would bias exactly the
metrics this benchmark exists to measure; dropping the clip would shrink the actor's folds without saying so.

Votes with a tie (``N:S``) are skipped as ``ambiguous_label``; D/F votes and DIS/FEA file names are outside the task
(``emotion_not_in_task``). Clips named in the label table without a wav are ``missing_audio``; wavs with no row in
the vote table are ``no_label``.

Protocol: 5 speaker-independent folds. Actors are dealt into 5 gender-stratified groups (sorted females, then
sorted males, round-robin: 18–19 actors, ~20 % each); fold k tests group k, validates on group k+1 (mod 5), trains
on the other three groups. (The reference code takes 5 contiguous actor-id ranges and validates on the last fifth of
the training actors, which leaves the gender balance of each fold to chance.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from trustser.corpora.base import Clip, CorpusIndex, CorpusSpec, Skip
from trustser.corpora.common import (
    ClipCollector,
    check_options,
    choice_option,
    find_first,
    read_table,
    require_root,
    rotating_folds,
    speaker_genders,
    stratified_groups,
)
from trustser.corpora.registry import register_corpus
from trustser.errors import CorpusNotFoundError

LABEL_SOURCES = ("multimodal_vote", "voice_vote", "intended")
DEFAULT_LABEL_SOURCE = "multimodal_vote"
OPTIONS = ("label_source",)
N_FOLDS = 5

FILE_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
INTENDED = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry"}
INTENDED_OTHER = frozenset({"DIS", "FEA"})
VOTES = {"N": "neutral", "H": "happy", "S": "sad", "A": "angry"}
VOTES_OTHER = frozenset({"D", "F"})
VOTE_COLUMNS = {"multimodal_vote": "MultiModalVote", "voice_vote": "VoiceVote"}
SEX = {"female": "female", "f": "female", "male": "male", "m": "male"}

DEMOGRAPHICS = ("VideoDemographics.csv", "metadata/VideoDemographics.csv")
SUMMARY_TABLE = ("processedResults/summaryTable.csv", "summaryTable.csv", "metadata/summaryTable.csv")
SENTENCE_LIST = ("SentenceFilenames.csv", "metadata/SentenceFilenames.csv")


def load_crema_d(root: Path, options: Mapping[str, object]) -> CorpusIndex:
    check_options(options, OPTIONS, "CREMA-D")
    source = choice_option(options, "label_source", LABEL_SOURCES, DEFAULT_LABEL_SOURCE)
    require_root(root, "CREMA-D")
    audio_dir = find_first(root, ["AudioWAV"], "CREMA-D", "audio folder", want_dir=True)
    demographics = find_first(root, DEMOGRAPHICS, "CREMA-D", "VideoDemographics.csv")
    genders, demographic_skips = read_demographics(demographics)
    labels, label_skips = read_labels(root, source)
    collector = ClipCollector([*demographic_skips, *label_skips])
    on_disk = {p.stem for p in audio_dir.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".")}
    for name in sorted(on_disk | set(labels or {})):
        collector.add(make_clip(name, audio_dir / f"{name}.wav", labels, genders, use_votes=source != "intended"))
    clips = collector.clips
    if not clips:
        raise CorpusNotFoundError(f"CREMA-D: no usable clips in {audio_dir}")
    groups = stratified_groups(speaker_genders(clips.values()), N_FOLDS)
    folds = rotating_folds(clips, groups, key=lambda c: c.speaker)
    caveats = gender_caveats(clips, genders, demographics)
    return CorpusIndex("crema_d", root, clips, folds, collector.skipped, caveats)


def read_demographics(path: Path) -> tuple[dict[str, str | None], list[Skip]]:
    """ActorID → gender. An unrecognised Sex value leaves the actor's gender unknown rather than guessing."""
    rows, skips = read_table(path, {"ActorID": ("Actor", "actor_id"), "Sex": ("Gender",)})
    return {row["ActorID"]: SEX.get(row["Sex"].lower()) for _, row in rows}, skips


def gender_caveats(clips: Mapping[str, Clip], genders: Mapping[str, str | None], demographics: Path) -> list[Skip]:
    """One caveat per kept clip whose gender is unknown, saying whether the actor is missing or their Sex unclear."""
    caveats = []
    for clip in sorted((c for c in clips.values() if c.gender is None), key=lambda c: c.clip_id):
        if clip.speaker in genders:
            caveats.append(
                Skip(
                    str(clip.path),
                    "unrecognised_sex",
                    f"actor {clip.speaker}: Sex not Male/Female in {demographics.name}",
                )
            )
        else:
            caveats.append(
                Skip(
                    str(clip.path),
                    "actor_not_in_demographics",
                    f"actor {clip.speaker} has no row in {demographics.name}",
                )
            )
    return caveats


def read_labels(root: Path, source: str) -> tuple[dict[str, str] | None, list[Skip]]:
    """File name → raw label (a vote string, or the EMO code for ``intended``); None means "use what is on disk"."""
    if source == "intended":
        return read_sentence_list(root)
    table = find_first(
        root,
        SUMMARY_TABLE,
        "CREMA-D",
        f"summaryTable.csv (needed by label_source={source}; label_source=intended works without it)",
    )
    rows, skips = read_table(table, {"FileName": ("fileName", "file_name"), VOTE_COLUMNS[source]: ()})
    return {row["FileName"]: row[VOTE_COLUMNS[source]] for _, row in rows}, skips


def read_sentence_list(root: Path) -> tuple[dict[str, str] | None, list[Skip]]:
    """With intended labels the official clip list is optional: it only lets us report clips missing on disk."""
    for candidate in SENTENCE_LIST:
        if (root / candidate).is_file():
            rows, skips = read_table(root / candidate, {"Filename": ("FileName", "file_name")})
            return {row["Filename"]: "" for _, row in rows}, skips
    return None, []


def make_clip(
    name: str, path: Path, labels: Mapping[str, str] | None, genders: Mapping[str, str | None], use_votes: bool
) -> Clip | Skip:
    parts = FILE_NAME.match(name)
    if not parts:
        return Skip(str(path), "bad_file_name", "expected <actor>_<sentence>_<EMO>_<level>")
    if use_votes:
        if labels is None or name not in labels:
            return Skip(str(path), "no_label", "not in summaryTable.csv")
        emotion = vote_emotion(labels[name], path)
    else:
        emotion = intended_emotion(parts["emotion"], path)
    if isinstance(emotion, Skip):
        return emotion
    actor = parts["actor"]
    return Clip(name, path, actor, genders.get(actor), emotion)


def intended_emotion(code: str, path: Path) -> str | Skip:
    if code in INTENDED:
        return INTENDED[code]
    return Skip(str(path), "emotion_not_in_task" if code in INTENDED_OTHER else "unknown_label", code)


def vote_emotion(vote: str, path: Path) -> str | Skip:
    if ":" in vote:
        return Skip(str(path), "ambiguous_label", f"tied vote {vote}")
    if vote in VOTES:
        return VOTES[vote]
    return Skip(str(path), "emotion_not_in_task" if vote in VOTES_OTHER else "unknown_label", vote)


CREMA_D = register_corpus(
    CorpusSpec(
        name="crema_d",
        description="CREMA-D, 91 actors, English acted sentences (ODbL; audio not shipped)",
        loader=load_crema_d,
        protocol="5 folds: test = a gender-stratified 20 % of actors, validation = the next group",
    )
)

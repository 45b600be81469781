"""CREMA-D loader against a replica built from the real shared metadata files (tests/replicas.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicas import CREMA_D_ACTORS, build_crema_d

from trustser.corpora import load_corpus
from trustser.corpora.common import MetadataError
from trustser.corpora.summary import format_summary, summarize
from trustser.errors import ConfigError, CorpusNotFoundError

FEMALE = {"1002", "1003", "1004", "1006", "1007"}


def test_default_labels_are_the_multimodal_vote(tmp_path: Path) -> None:
    index = load_corpus("crema_d", build_crema_d(tmp_path))
    # per actor: N 7, H 3, S 2, A 3, D/F 6 outside the task, 1 tie; 10 actors
    assert index.class_counts() == {"neutral": 70, "happy": 30, "sad": 20, "angry": 30}
    assert index.skip_counts() == {"emotion_not_in_task": 60, "ambiguous_label": 10}
    assert index.clips["1001_IEO_HAP_LO"].emotion == "neutral"


def test_voice_vote_and_intended_label_sources(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    voice = load_corpus("crema_d", root, {"label_source": "voice_vote"})
    assert voice.class_counts() == {"neutral": 170, "happy": 10, "sad": 10, "angry": 10}
    intended = load_corpus("crema_d", root, {"label_source": "intended"})
    assert intended.class_counts() == {"neutral": 20, "happy": 40, "sad": 40, "angry": 40}
    assert intended.skip_counts() == {"emotion_not_in_task": 80}  # DIS and FEA


def test_intended_labels_need_no_vote_table(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path, with_votes=False)
    assert len(load_corpus("crema_d", root, {"label_source": "intended"}).clips) == 140
    with pytest.raises(CorpusNotFoundError, match="summaryTable.csv"):
        load_corpus("crema_d", root)


def test_gender_comes_from_video_demographics(tmp_path: Path) -> None:
    index = load_corpus("crema_d", build_crema_d(tmp_path))
    genders = {c.speaker: c.gender for c in index.clips.values()}
    assert genders == {a: ("female" if a in FEMALE else "male") for a in CREMA_D_ACTORS}


def test_demographics_in_a_metadata_folder_is_found(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    (root / "metadata").mkdir()
    (root / "VideoDemographics.csv").rename(root / "metadata" / "VideoDemographics.csv")
    assert len(load_corpus("crema_d", root).clips) == 150


def test_five_gender_stratified_speaker_folds(tmp_path: Path) -> None:
    index = load_corpus("crema_d", build_crema_d(tmp_path))  # load_corpus checks speaker-disjointness
    assert len(index.folds) == 5
    tested = []
    for k, fold in enumerate(index.folds):
        test_speakers = index.speakers(fold.test)
        assert {index.clips[c].gender for c in fold.test} == {"female", "male"}
        assert index.speakers(fold.validation) == index.speakers(index.folds[(k + 1) % 5].test)
        tested += test_speakers
    assert sorted(tested) == sorted(CREMA_D_ACTORS)  # every actor is tested exactly once


def test_summary_per_partition(tmp_path: Path) -> None:
    summary = summarize(load_corpus("crema_d", build_crema_d(tmp_path)))
    test = summary["folds"][0]["partitions"]["test"]
    assert (test["clips"], test["speakers"]) == (30, 2)
    assert summary["by_gender"]["female"]["total"] == 75


def test_missing_root_and_missing_audio_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match="not a directory"):
        load_corpus("crema_d", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusNotFoundError, match="AudioWAV"):
        load_corpus("crema_d", tmp_path / "empty")


def test_missing_demographics_names_both_places(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    (root / "VideoDemographics.csv").unlink()
    with pytest.raises(CorpusNotFoundError, match="metadata/VideoDemographics.csv"):
        load_corpus("crema_d", root)


def test_malformed_vote_row_is_skipped_with_file_and_line(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    table = root / "processedResults" / "summaryTable.csv"
    lines = table.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 2)[0]  # truncated row
    table.write_text("\n".join(lines) + "\n")
    index = load_corpus("crema_d", root)
    (skip,) = [s for s in index.skipped if s.reason == "malformed_line"]
    assert skip.detail.startswith("summaryTable.csv:4:")
    assert index.skip_counts()["no_label"] == 1  # its wav now has no vote


def test_vote_table_without_the_vote_column_is_an_error(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    table = root / "processedResults" / "summaryTable.csv"
    table.write_text(table.read_text().replace("MultiModalVote", "MMVote"))
    with pytest.raises(MetadataError, match="MultiModalVote"):
        load_corpus("crema_d", root)


def test_unknown_vote_and_missing_audio(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    table = root / "processedResults" / "summaryTable.csv"
    table.write_text(
        table.read_text().replace(
            '"1001_IEO_NEU_XX","N","60.5","N","70.25","N"', '"1001_IEO_NEU_XX","N","60.5","N","70.25","Q"'
        )
    )
    (root / "AudioWAV" / "1002_DFA_ANG_XX.wav").unlink()
    index = load_corpus("crema_d", root)
    assert index.skip_counts()["unknown_label"] == 1
    assert index.skip_counts()["missing_audio"] == 1
    assert len(index.clips) == 148


def test_bad_label_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_source"):
        load_corpus("crema_d", build_crema_d(tmp_path), {"label_source": "face"})


def test_actors_missing_from_demographics_are_kept_with_gender_unknown_and_counted(tmp_path: Path) -> None:
    root = build_crema_d(tmp_path)
    demographics = root / "VideoDemographics.csv"
    lines = demographics.read_text().splitlines()
    lines = [line for line in lines if not line.startswith("1001,")]  # actor 1001 (15 clips) has no row
    lines = [line.replace('"Female"', '"Unknown"') if line.startswith("1002,") else line for line in lines]
    demographics.write_text("\n".join(lines) + "\n")
    index = load_corpus("crema_d", root)
    assert len(index.clips) == 150  # nobody dropped
    assert {index.clips[c].gender for c in index.clips if c.startswith(("1001_", "1002_"))} == {None}
    assert index.caveat_counts() == {"actor_not_in_demographics": 15, "unrecognised_sex": 15}
    caveat = next(c for c in index.caveats if c.reason == "actor_not_in_demographics")
    assert caveat.item.endswith("1001_DFA_ANG_XX.wav") and "1001" in caveat.detail
    assert "VideoDemographics.csv" in caveat.detail
    summary = summarize(index)
    assert summary["gender_unknown"] == 30
    assert summary["kept_with_caveats"] == {"actor_not_in_demographics": 15, "unrecognised_sex": 15}
    assert "kept, metadata missing: actor_not_in_demographics 15, unrecognised_sex 15" in format_summary(summary)
    assert sum(len(f.test) for f in index.folds) == 150  # the unknown-gender actors are still tested once
    index.drop("1001_DFA_ANG_XX", "truncated")  # a clip later dropped for its audio is no longer a caveat
    assert index.caveat_counts()["actor_not_in_demographics"] == 14


def test_complete_demographics_give_no_caveats(tmp_path: Path) -> None:
    index = load_corpus("crema_d", build_crema_d(tmp_path))
    assert index.caveats == [] and "kept, metadata missing" not in format_summary(summarize(index))

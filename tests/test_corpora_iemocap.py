"""IEMOCAP loader against a replica of the release layout (tests/replicas.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicas import build_iemocap

from trustser.corpora import load_corpus
from trustser.corpora.summary import summarize
from trustser.errors import ConfigError, CorpusNotFoundError


def test_parses_labels_merges_excited_into_happy_by_default(tmp_path: Path) -> None:
    index = load_corpus("iemocap", build_iemocap(tmp_path))
    assert index.class_counts() == {"neutral": 10, "happy": 20, "sad": 10, "angry": 10}
    assert index.skip_counts() == {"emotion_not_in_task": 30}  # fru, xxx, sur: 2 each in 5 sessions


def test_merge_excited_false_leaves_exc_out_of_the_task(tmp_path: Path) -> None:
    index = load_corpus("iemocap", build_iemocap(tmp_path), {"merge_excited": "false"})
    assert index.class_counts()["happy"] == 10
    assert index.skip_counts() == {"emotion_not_in_task": 40}


def test_speaker_and_gender_come_from_the_utterance_not_the_dialog(tmp_path: Path) -> None:
    index = load_corpus("iemocap", build_iemocap(tmp_path))
    clip = index.clips["Ses01F_impro01_M001"]  # dialog led by the female actor, spoken by the male one
    assert (clip.speaker, clip.gender, clip.emotion, clip.session) == ("Ses01M", "male", "happy", "Session1")
    assert clip.path.is_file()
    assert index.clips["Ses03M_script01_1_F000"].gender == "female"
    assert sorted({c.speaker for c in index.clips.values()}) == [f"Ses0{n}{g}" for n in range(1, 6) for g in "FM"]


def test_five_session_folds_test_k_validate_k_plus_1(tmp_path: Path) -> None:
    index = load_corpus("iemocap", build_iemocap(tmp_path))
    assert [f.name for f in index.folds] == [f"fold{k}" for k in range(1, 6)]
    for k, fold in enumerate(index.folds, start=1):
        sessions = {p: {index.clips[c].session for c in ids} for p, ids in fold.partitions().items()}
        assert sessions["test"] == {f"Session{k}"}
        assert sessions["validation"] == {f"Session{k % 5 + 1}"}
        assert len(sessions["train"]) == 3
        assert len(fold.train) + len(fold.validation) + len(fold.test) == len(index.clips)


def test_summary_counts_by_gender(tmp_path: Path) -> None:
    summary = summarize(load_corpus("iemocap", build_iemocap(tmp_path)))
    assert summary["by_gender"]["female"] == {"neutral": 10, "happy": 10, "sad": 0, "angry": 10, "total": 30}
    assert summary["by_gender"]["male"] == {"neutral": 0, "happy": 10, "sad": 10, "angry": 0, "total": 20}
    assert summary["folds"][0]["partitions"]["test"]["speakers"] == 2


def test_accepts_the_parent_of_the_release_folder(tmp_path: Path) -> None:
    build_iemocap(tmp_path)
    assert len(load_corpus("iemocap", tmp_path).clips) == 50


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match="not a directory"):
        load_corpus("iemocap", tmp_path / "nowhere")


def test_missing_label_folder_names_where_it_looked(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path)
    for path in (root / "Session3" / "dialog" / "EmoEvaluation").glob("*.txt"):
        path.unlink()
    with pytest.raises(CorpusNotFoundError, match="Session3"):
        load_corpus("iemocap", root)


def test_malformed_line_is_skipped_with_file_and_line(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path)
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    with open(label_file, "a") as handle:
        handle.write("[12.0 - oops]\tSes01F_impro01_F099\tneu\n")
    index = load_corpus("iemocap", root)
    (skip,) = [s for s in index.skipped if s.reason == "malformed_line"]
    line_no = len(label_file.read_text().splitlines())
    assert skip.detail.startswith(f"Ses01F_impro01.txt:{line_no}:")
    assert len(index.clips) == 50


def test_unknown_label_is_counted(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path)
    label_file = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    label_file.write_text(label_file.read_text().replace("Ses02F_impro01_F000\tneu", "Ses02F_impro01_F000\tzzz"))
    index = load_corpus("iemocap", root)
    assert index.skip_counts()["unknown_label"] == 1
    assert index.class_counts()["neutral"] == 9


def test_missing_audio_is_skipped(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path)
    (root / "Session4" / "sentences" / "wav" / "Ses04F_impro01" / "Ses04F_impro01_F000.wav").unlink()
    index = load_corpus("iemocap", root)
    assert index.skip_counts()["missing_audio"] == 1
    assert "Ses04F_impro01_F000" not in index.clips


def test_unknown_option_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="merge_exited"):
        load_corpus("iemocap", build_iemocap(tmp_path), {"merge_exited": True})

"""MSP-Improv loader against a replica of the release layout (tests/replicas.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicas import build_msp_improv

from trustser.corpora import load_corpus
from trustser.corpora.summary import summarize
from trustser.errors import CorpusNotFoundError


def test_consensus_letters_map_to_the_four_classes(tmp_path: Path) -> None:
    index = load_corpus("msp_improv", build_msp_improv(tmp_path))
    assert index.class_counts() == {"neutral": 12, "happy": 12, "sad": 6, "angry": 12}
    assert index.skip_counts() == {"emotion_not_in_task": 12}  # O and X, once per session


def test_clip_names_speakers_and_audio_paths(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path)
    index = load_corpus("msp_improv", root)
    clip = index.clips["MSP-IMPROV-S01A-M03-S-FM02"]
    assert (clip.speaker, clip.gender, clip.emotion, clip.session) == ("M03", "male", "angry", "session3")
    assert clip.path == root / "Audio" / "session3" / "S01A" / "S" / "MSP-IMPROV-S01A-M03-S-FM02.wav"
    assert len({c.speaker for c in index.clips.values()}) == 12


def test_summary_by_gender(tmp_path: Path) -> None:
    summary = summarize(load_corpus("msp_improv", build_msp_improv(tmp_path)))
    assert summary["by_gender"]["female"] == {"neutral": 6, "happy": 6, "sad": 6, "angry": 6, "total": 24}
    assert summary["by_gender"]["male"] == {"neutral": 6, "happy": 6, "sad": 0, "angry": 6, "total": 18}


def test_six_session_folds(tmp_path: Path) -> None:
    index = load_corpus("msp_improv", build_msp_improv(tmp_path))
    assert len(index.folds) == 6
    for k, fold in enumerate(index.folds, start=1):
        assert {index.clips[c].session for c in fold.test} == {f"session{k}"}
        assert {index.clips[c].session for c in fold.validation} == {f"session{k % 6 + 1}"}
        assert len(index.speakers(fold.train)) == 8


def test_correctly_spelled_label_file_and_flat_audio_folder_are_accepted(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path, label_name="Evaluation.txt")
    for session in (root / "Audio").iterdir():
        session.rename(root / session.name)
    assert len(load_corpus("msp_improv", root).clips) == 42


def test_missing_root_and_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match="not a directory"):
        load_corpus("msp_improv", tmp_path / "nowhere")
    root = build_msp_improv(tmp_path)
    (root / "Evalution.txt").unlink()
    with pytest.raises(CorpusNotFoundError, match="Evalution.txt"):
        load_corpus("msp_improv", root)


def test_malformed_line_is_skipped_with_file_and_line(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path)
    label_file = root / "Evalution.txt"
    lines = label_file.read_text().splitlines()
    lines[0] = "UTD-IMPROV-S01A-F01-S-FM01.avi"  # consensus fields lost
    label_file.write_text("\n".join(lines) + "\n")
    index = load_corpus("msp_improv", root)
    (skip,) = [s for s in index.skipped if s.reason == "malformed_line"]
    assert skip.detail.startswith("Evalution.txt:1:")
    assert index.class_counts()["angry"] == 11


def test_unknown_label_and_missing_audio(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path)
    label_file = root / "Evalution.txt"
    label_file.write_text(label_file.read_text().replace("S02H-F01-R-FM03.avi; H;", "S02H-F01-R-FM03.avi; Z;"))
    (root / "Audio" / "session2" / "S03S" / "P" / "MSP-IMPROV-S03S-F02-P-FM05.wav").unlink()
    index = load_corpus("msp_improv", root)
    assert index.skip_counts()["unknown_label"] == 1
    assert index.skip_counts()["missing_audio"] == 1
    assert len(index.clips) == 40


def test_a_session_without_audio_is_an_error_not_an_empty_fold(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path)
    for wav in (root / "Audio" / "session5").rglob("*.wav"):
        wav.unlink()
    with pytest.raises(CorpusNotFoundError, match="session5"):
        load_corpus("msp_improv", root)

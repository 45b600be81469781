"""MSP-Podcast loader against a replica of the release layout (tests/replicas.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicas import build_msp_podcast

from trustser.corpora import get_corpus, load_corpus
from trustser.corpora.base import FoldLeakError
from trustser.corpora.common import MetadataError
from trustser.corpora.summary import format_summary, summarize
from trustser.errors import CorpusNotFoundError


def test_official_split_is_one_fold(tmp_path: Path) -> None:
    index = load_corpus("msp_podcast", build_msp_podcast(tmp_path))
    assert [f.name for f in index.folds] == ["official"]
    fold = index.folds[0]
    assert (len(fold.train), len(fold.validation), len(fold.test)) == (12, 12, 12)
    assert index.speakers(fold.test) == ["300", "301", "unknown"]
    assert {index.clips[c].split for c in fold.validation} == {"validation"}
    assert index.class_counts() == {"neutral": 9, "happy": 9, "sad": 9, "angry": 9}
    assert index.skip_counts() == {"emotion_not_in_task": 18, "split_not_used": 12}


def test_unknown_speakers_are_kept_with_gender_none(tmp_path: Path) -> None:
    index = load_corpus("msp_podcast", build_msp_podcast(tmp_path))
    clip = index.clips["MSP-PODCAST_0003_0001"]
    assert (clip.speaker, clip.gender, clip.split) == ("unknown", None, "train")
    summary = summarize(index)
    assert summary["gender_unknown"] == 12
    assert summary["by_gender"]["female"]["total"] == 12
    assert "unknown" in format_summary(summary)
    assert summary["kept_with_caveats"] == {"unknown_speaker": 12, "unknown_gender": 12}
    assert "kept, metadata missing: unknown_speaker 12, unknown_gender 12" in format_summary(summary)


def test_unknown_speakers_in_several_partitions_do_not_count_as_a_leak(tmp_path: Path) -> None:
    index = load_corpus("msp_podcast", build_msp_podcast(tmp_path))  # "unknown" is in Train, Development and Test1
    fold = index.folds[0]
    assert all("unknown" in index.speakers(part) for part in (fold.train, fold.validation, fold.test))
    assert get_corpus("msp_podcast").unidentified_speakers == {"unknown"}


def test_a_known_speaker_in_two_official_partitions_is_a_fold_leak_naming_speaker_and_partitions(
    tmp_path: Path,
) -> None:
    root = build_msp_podcast(tmp_path)
    labels = root / "Labels" / "labels_consensus.csv"
    lines = labels.read_text().splitlines()
    leaked = [i for i, line in enumerate(lines) if ",300,Female,Test1" in line][0]
    lines[leaked] = lines[leaked].replace(",300,", ",127,")  # train speaker 127 now also talks in Test1
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(FoldLeakError, match=r"msp_podcast fold official: speakers \['127'\] in both train and test"):
        load_corpus("msp_podcast", root)


def test_drop_unknown_reproduces_the_reference_filter(tmp_path: Path) -> None:
    index = load_corpus("msp_podcast", build_msp_podcast(tmp_path), {"drop_unknown": True})
    assert len(index.clips) == 24
    assert index.skip_counts()["unknown_speaker"] == 12


def test_test2_instead_of_test1(tmp_path: Path) -> None:
    index = load_corpus("msp_podcast", build_msp_podcast(tmp_path), {"test_set": "Test2"})
    assert index.speakers(index.folds[0].test) == ["400", "401"]
    assert index.skip_counts()["split_not_used"] == 18


def test_old_release_names_are_accepted(tmp_path: Path) -> None:
    root = build_msp_podcast(tmp_path, label_name="labels_concensus.csv", development="Validation")
    assert len(load_corpus("msp_podcast", root).folds[0].validation) == 12


def test_missing_root_and_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match="not a directory"):
        load_corpus("msp_podcast", tmp_path / "nowhere")
    root = build_msp_podcast(tmp_path)
    (root / "Labels" / "labels_consensus.csv").unlink()
    with pytest.raises(CorpusNotFoundError, match="labels_consensus.csv"):
        load_corpus("msp_podcast", root)


def test_missing_column_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = build_msp_podcast(tmp_path)
    labels = root / "Labels" / "labels_consensus.csv"
    labels.write_text(labels.read_text().replace("Split_Set", "Partie"))
    with pytest.raises(MetadataError, match="labels_consensus.csv.*Split_Set"):
        load_corpus("msp_podcast", root)


def test_malformed_row_unknown_label_and_missing_audio(tmp_path: Path) -> None:
    root = build_msp_podcast(tmp_path)
    labels = root / "Labels" / "labels_consensus.csv"
    lines = labels.read_text().splitlines()
    lines[1] = "MSP-PODCAST_0001_0001.wav,N,3.4"  # truncated row
    lines[2] = lines[2].replace(",H,", ",Q,")
    labels.write_text("\n".join(lines) + "\n")
    (root / "Audios" / "MSP-PODCAST_0002_0001.wav").unlink()
    index = load_corpus("msp_podcast", root)
    skips = index.skip_counts()
    assert (skips["malformed_line"], skips["unknown_label"], skips["missing_audio"]) == (1, 1, 1)
    assert [s.detail for s in index.skipped if s.reason == "malformed_line"][0].startswith("labels_consensus.csv:2:")
    assert len(index.clips) == 33

"""The generic CSV-manifest corpus (tests/replicas.py builds the manifests)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from replicas import MANIFEST_SPEAKERS, build_manifest

from trustser.corpora import load_corpus
from trustser.corpora.base import FoldLeakError
from trustser.corpora.common import MetadataError
from trustser.errors import ConfigError, CorpusNotFoundError


def test_reads_rows_and_generates_five_speaker_folds(tmp_path: Path) -> None:
    root = build_manifest(tmp_path)
    index = load_corpus("manifest", root)
    assert index.class_counts() == {"neutral": 10, "happy": 10, "sad": 10, "angry": 10}
    clip = index.clips["audio/s01/1"]
    assert (clip.speaker, clip.gender, clip.emotion, clip.path) == ("s01", "female", "happy", root / "audio/s01/1.wav")
    assert len(index.folds) == 5
    tested = []
    for fold in index.folds:
        assert {index.clips[c].gender for c in fold.test} == {"female", "male"}  # gender-stratified groups
        tested += index.speakers(fold.test)
    assert sorted(tested) == sorted(s for s, _ in MANIFEST_SPEAKERS)


def test_generated_folds_are_deterministic(tmp_path: Path) -> None:
    root = build_manifest(tmp_path)
    assert load_corpus("manifest", root).folds == load_corpus("manifest", root).folds


def test_manifest_option_and_file_root_are_accepted(tmp_path: Path) -> None:
    root = build_manifest(tmp_path)
    by_option = load_corpus("manifest", tmp_path, {"manifest": str(root / "manifest.csv")})
    by_file = load_corpus("manifest", root / "manifest.csv")
    assert by_option.root == by_file.root == root
    assert len(by_option.clips) == len(by_file.clips) == 40


def test_split_column_gives_one_fold(tmp_path: Path) -> None:
    split_of = {"s01": "train", "s02": "train", "s03": "dev", "s04": "test"}
    rows = [[f"audio/{s}/0.wav", s, "female", "sad", split] for s, split in split_of.items()]
    index = load_corpus("manifest", build_manifest(tmp_path, rows, ["split"]))
    (fold,) = index.folds
    assert (index.speakers(fold.train), index.speakers(fold.validation), index.speakers(fold.test)) == (
        ["s01", "s02"], ["s03"], ["s04"])


def test_fold_column_rotates_like_sessions(tmp_path: Path) -> None:
    rows = [[f"audio/s{i}/0.wav", f"s{i}", "male", "angry", str(i % 3 + 1)] for i in range(6)]
    index = load_corpus("manifest", build_manifest(tmp_path, rows, ["fold"]))
    assert len(index.folds) == 3
    assert index.speakers(index.folds[0].test) == ["s0", "s3"]
    assert index.speakers(index.folds[0].validation) == ["s1", "s4"]


def test_user_split_that_shares_a_speaker_is_refused(tmp_path: Path) -> None:
    rows = [["audio/a/0.wav", "a", "female", "sad", "train"], ["audio/a/1.wav", "a", "female", "sad", "test"],
            ["audio/b/0.wav", "b", "male", "sad", "validation"]]
    with pytest.raises(FoldLeakError):
        load_corpus("manifest", build_manifest(tmp_path, rows, ["split"]))


def test_paths_escaping_the_root_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    rows = [[f"audio/{s}/{i}.wav", s, g, "happy"] for s, g in MANIFEST_SPEAKERS for i in range(2)]
    rows += [["../secret.wav", "s01", "female", "happy"],
             ["audio/../../secret.wav", "s01", "female", "happy"],
             [str(tmp_path / "secret.wav"), "s01", "female", "happy"]]
    root = build_manifest(tmp_path, rows)
    rows.append([str(root / "audio/s01/0.wav"), "s01", "female", "sad"])  # absolute but inside: fine
    index = load_corpus("manifest", build_manifest(tmp_path, rows))
    assert index.skip_counts() == {"path_outside_root": 3, "duplicate": 1}
    assert all(c.path.is_relative_to(root) for c in index.clips.values())


def test_emotion_map_and_unknown_labels(tmp_path: Path) -> None:
    labels = ["joy", "anger", "fear", "Neutral", "bored"]
    rows = [[f"audio/{s}/{i}.wav", s, g, label] for s, g in MANIFEST_SPEAKERS for i, label in enumerate(labels)]
    index = load_corpus("manifest", build_manifest(tmp_path, rows), {"emotion_map": "joy=happy, anger=angry,fear=skip"})
    assert index.class_counts() == {"happy": 10, "angry": 10, "neutral": 10}
    assert index.skip_counts() == {"emotion_not_in_task": 10, "unknown_label": 10}


def test_bad_emotion_map_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="joy=glad"):
        load_corpus("manifest", build_manifest(tmp_path), {"emotion_map": "joy=glad"})


def test_unknown_gender_is_kept_and_a_bad_gender_is_a_malformed_line(tmp_path: Path) -> None:
    rows = [[f"audio/{s}/0.wav", s, g, "sad"] for s, g in MANIFEST_SPEAKERS]
    rows[0][2], rows[1][2] = "", "robot"
    index = load_corpus("manifest", build_manifest(tmp_path, rows))
    assert index.clips["audio/s01/0"].gender is None
    (skip,) = index.skipped
    assert (skip.reason, skip.detail.split(":")[:2]) == ("malformed_line", ["manifest.csv", "3"])


def test_missing_manifest_missing_column_and_missing_audio(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match="manifest.csv"):
        load_corpus("manifest", tmp_path)
    root = build_manifest(tmp_path)
    (root / "audio" / "s02" / "0.wav").unlink()
    assert load_corpus("manifest", root).skip_counts() == {"missing_audio": 1}
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace("speaker", "who"))
    with pytest.raises(MetadataError, match="speaker"):
        load_corpus("manifest", root)


def test_too_few_speakers_for_generated_folds(tmp_path: Path) -> None:
    rows = [["audio/a/0.wav", "a", "female", "sad"], ["audio/b/0.wav", "b", "male", "sad"]]
    with pytest.raises(MetadataError, match="at least 3"):
        load_corpus("manifest", build_manifest(tmp_path, rows))


def test_generated_groups_are_balanced(tmp_path: Path) -> None:
    rows = [[f"audio/s{i}/0.wav", f"s{i}", "female" if i < 7 else "male", "sad"] for i in range(12)]
    index = load_corpus("manifest", build_manifest(tmp_path, rows))
    sizes = Counter(len(index.speakers(f.test)) for f in index.folds)
    assert set(sizes) <= {2, 3}

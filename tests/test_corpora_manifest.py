"""The generic manifest corpus: CSV, SpeechBrain JSON and EmoBox JSONL (tests/replicas.py builds the manifests)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from replicas import (
    EMOBOX_DATASET,
    MANIFEST_SPEAKERS,
    SHORT_LABEL_MAP,
    build_absolute_manifest,
    build_emobox,
    build_manifest,
    build_speechbrain_json,
    emobox_records,
    speechbrain_records,
    write_csv,
    write_wav,
)

from trustser.cli import main
from trustser.corpora import load_corpus
from trustser.corpora.base import FoldLeakError
from trustser.corpora.common import MetadataError
from trustser.corpora.manifest import NoUsableClipsError
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
        ["s01", "s02"],
        ["s03"],
        ["s04"],
    )


def test_fold_column_rotates_like_sessions(tmp_path: Path) -> None:
    rows = [[f"audio/s{i}/0.wav", f"s{i}", "male", "angry", str(i % 3 + 1)] for i in range(6)]
    index = load_corpus("manifest", build_manifest(tmp_path, rows, ["fold"]))
    assert len(index.folds) == 3
    assert index.speakers(index.folds[0].test) == ["s0", "s3"]
    assert index.speakers(index.folds[0].validation) == ["s1", "s4"]


def test_user_split_that_shares_a_speaker_is_refused(tmp_path: Path) -> None:
    rows = [
        ["audio/a/0.wav", "a", "female", "sad", "train"],
        ["audio/a/1.wav", "a", "female", "sad", "test"],
        ["audio/b/0.wav", "b", "male", "sad", "validation"],
    ]
    with pytest.raises(FoldLeakError):
        load_corpus("manifest", build_manifest(tmp_path, rows, ["split"]))


def test_absolute_paths_are_read_as_listed_and_folded(tmp_path: Path) -> None:
    manifest = build_absolute_manifest(tmp_path)  # the audio is nowhere near the manifest's folder
    index = load_corpus("manifest", manifest)
    assert (len(index.clips), index.skipped, index.root) == (40, [], tmp_path / "lists")
    clip = index.clips[(tmp_path / "store" / "s01" / "1").as_posix()]  # outside the root: the absolute path is the id
    assert (clip.speaker, clip.gender, clip.emotion, clip.path) == (
        "s01",
        "female",
        "happy",
        tmp_path / "store" / "s01" / "1.wav",
    )
    assert len(index.folds) == 5
    assert sorted(s for f in index.folds for s in index.speakers(f.test)) == sorted(s for s, _ in MANIFEST_SPEAKERS)


def test_confine_true_skips_paths_outside_the_root_which_are_otherwise_read(tmp_path: Path) -> None:
    write_wav(tmp_path / "elsewhere.wav")
    rows = [[f"audio/{s}/{i}.wav", s, g, "happy"] for s, g in MANIFEST_SPEAKERS for i in range(2)]
    rows += [
        ["../elsewhere.wav", "s01", "female", "sad"],
        ["audio/../../elsewhere.wav", "s01", "female", "sad"],
        [str(tmp_path / "elsewhere.wav"), "s01", "female", "sad"],
    ]
    root = build_manifest(tmp_path, rows)
    rows.append([str(root / "audio/s01/0.wav"), "s01", "female", "happy"])  # absolute but inside: the same clip
    build_manifest(tmp_path, rows)
    confined = load_corpus("manifest", root, {"confine": "true"})
    assert confined.skip_counts() == {"path_outside_root": 3, "duplicate": 1}
    assert all(c.path.is_relative_to(root) for c in confined.clips.values())
    assert "confine=true" in confined.skipped[0].detail
    listed = load_corpus("manifest", root, {"confine": "false"})  # the user listed it: ``..`` is fine
    assert listed.skip_counts() == {"duplicate": 3}  # three spellings of one file, and the absolute inside path
    assert listed.clips[(tmp_path / "elsewhere").as_posix()].path == tmp_path / "elsewhere.wav"


def test_relative_paths_follow_the_data_root_option(tmp_path: Path) -> None:
    rows = [[f"{s}/0.wav", s, g, "sad"] for s, g in MANIFEST_SPEAKERS]
    for row in rows:
        write_wav(tmp_path / "store" / row[0])
    manifest = write_csv(tmp_path / "lists" / "manifest.csv", ["path", "speaker", "gender", "emotion"], rows)
    index = load_corpus("manifest", manifest, {"data_root": str(tmp_path / "store")})
    assert index.root == tmp_path / "store" and index.clips["s01/0"].path == tmp_path / "store" / "s01" / "0.wav"
    assert load_corpus("manifest", manifest, {"data_root": str(tmp_path / "store"), "confine": "true"}).skipped == []
    with pytest.raises(CorpusNotFoundError, match="data_root.*not a directory"):
        load_corpus("manifest", manifest, {"data_root": str(tmp_path / "nowhere")})


def test_an_all_skipped_manifest_says_why_with_counts_and_the_first_row(tmp_path: Path) -> None:
    rows = [
        ["/corpora/other/a.wav", "s01", "female", "happy"],
        ["/corpora/other/b.wav", "s02", "male", "sad"],
        ["audio/s03/0.wav", "s03", "female", "joy"],
        ["audio/s04/0.wav", "s04", "male", "neu"],
        ["audio/s05/0.wav", "s05", "female", "sad"],
    ]
    root = build_manifest(tmp_path, rows)
    (root / "audio" / "s05" / "0.wav").unlink()
    with pytest.raises(NoUsableClipsError) as caught:
        load_corpus("manifest", root, {"confine": "true"})
    message = str(caught.value)
    assert isinstance(caught.value, CorpusNotFoundError)  # what callers of the other loaders already catch
    assert message.splitlines()[:3] == [
        f"manifest: no usable clips in {root / 'manifest.csv'}: all 5 entries were skipped "
        "(path_outside_root 2, unknown_label 2, missing_audio 1)",
        "first skipped entry, manifest.csv:2: path=/corpora/other/a.wav, speaker=s01, gender=female, emotion=happy",
        f"  skipped as path_outside_root: resolves outside {root} (confine=true)",
    ]
    assert "labels seen: joy 1, neu 1;" in message and "emotion_map=neu=neutral " in message  # a suggestion
    assert "data_root=DIR" in message  # the missing_audio hint


def test_the_cli_prints_the_all_skipped_message_without_a_traceback(tmp_path: Path) -> None:
    manifest = write_csv(
        tmp_path / "m.csv",
        ["path", "speaker", "gender", "emotion"],
        [[f"/nowhere/{i}.wav", f"s{i}", "female", "sad"] for i in range(3)],
    )
    result = CliRunner().invoke(main, ["data", "summary", "manifest", "--data-root", str(manifest)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.splitlines()[:3] == [
        f"trustser: error: manifest: no usable clips in {manifest}: all 3 entries were skipped (missing_audio 3)",
        "first skipped entry, m.csv:2: path=/nowhere/0.wav, speaker=s0, gender=female, emotion=sad",
        "  skipped as missing_audio: no such file /nowhere/0.wav",
    ]


def test_an_empty_manifest_says_it_lists_nothing(tmp_path: Path) -> None:
    root = build_manifest(tmp_path, [])
    with pytest.raises(NoUsableClipsError, match="lists no entries"):
        load_corpus("manifest", root)


def test_speechbrain_json_with_a_data_root_placeholder(tmp_path: Path) -> None:
    manifest, data = build_speechbrain_json(tmp_path)
    index = load_corpus("manifest", manifest, {"data_root": str(data), "emotion_map": SHORT_LABEL_MAP})
    assert index.root == data and index.class_counts() == {"neutral": 10, "happy": 10, "sad": 10, "angry": 10}
    clip = index.clips["wavs/s01/1"]
    assert (clip.speaker, clip.gender, clip.emotion, clip.path) == (
        "s01",
        "female",
        "happy",
        data / "wavs" / "s01" / "1.wav",
    )
    assert len(index.folds) == 5 and index.caveats == []
    # without data_root, {data_root} is the JSON's own folder: nothing there, and the error says what to change
    with pytest.raises(NoUsableClipsError, match=r"(?s)missing_audio 40.*data_root=DIR"):
        load_corpus("manifest", manifest, {"emotion_map": SHORT_LABEL_MAP})
    (data / "manifest.json").write_text(manifest.read_text())  # found in --data-root like manifest.csv
    assert len(load_corpus("manifest", data, {"emotion_map": SHORT_LABEL_MAP}).clips) == 40


def test_speechbrain_json_speaker_and_gender_spellings_and_missing_gender(tmp_path: Path) -> None:
    records = speechbrain_records(speaker_field="speaker")
    for record in records.values():
        record["sex"] = record.pop("gender")
    del records["s01_0"]["sex"]
    records["s02_0"]["sex"] = None
    manifest, data = build_speechbrain_json(tmp_path, records)
    index = load_corpus("manifest", manifest, {"data_root": str(data), "emotion_map": SHORT_LABEL_MAP})
    assert len(index.clips) == 40 and index.clips["wavs/s03/0"].gender == "female"
    assert (index.clips["wavs/s01/0"].gender, index.clips["wavs/s02/0"].gender) == (None, None)  # kept, with caveat
    assert index.caveat_counts() == {"unknown_gender": 2}
    assert sorted(c.detail.split(": ")[1] for c in index.caveats) == ["gender empty", "no gender field"]


def test_emobox_jsonl_with_a_speaker_added(tmp_path: Path) -> None:
    records = emobox_records()
    records[0]["start_time"], records[0]["end_time"] = 0.1, 0.4  # a segment of a longer file
    manifest, root = build_emobox(tmp_path, records)
    index = load_corpus("manifest", manifest, {"data_root": str(root), "emotion_map": SHORT_LABEL_MAP})
    assert index.root == root and len(index.clips) == 39 and index.skip_counts() == {"segment": 1}
    clip = index.clips[f"downloads/{EMOBOX_DATASET}/s02/3"]
    assert (clip.speaker, clip.gender, clip.emotion) == ("s02", None, "angry")
    assert index.caveat_counts() == {"unknown_gender": 39} and len(index.folds) == 5
    unmapped = load_corpus("manifest", manifest, {"data_root": str(root), "emotion_map": "neu=neutral,hap=skip"})
    assert unmapped.skip_counts() == {"unknown_label": 10, "emotion_not_in_task": 10, "segment": 1}


def test_emobox_jsonl_as_shipped_has_no_speaker_and_says_why_one_is_needed(tmp_path: Path) -> None:
    manifest, root = build_emobox(tmp_path, emobox_records(with_speaker=False))
    with pytest.raises(MetadataError, match=r"no record has a 'speaker' field.*Speaker-independent folds"):
        load_corpus("manifest", manifest, {"data_root": str(root)})


def test_bad_json_names_the_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "train.json"
    broken.write_text(
        '{\n  "a": {"wav": "a.wav", "spk_id": "s1", "emo": "sad"},\n  "b": {"wav": "b.wav" "emo": 1}\n}\n'
    )  # a comma missing on line 3
    with pytest.raises(MetadataError, match=rf"{re.escape(str(broken))}:3: not valid JSON: Expecting ','"):
        load_corpus("manifest", broken)
    lines = tmp_path / "lines.json"  # JSONL content under a .json name
    lines.write_text(
        '{"wav": "a.wav", "speaker": "s1", "emo": "sad"}\n{"wav": "b.wav", "speaker": "s2", "emo": "sad"}\n'
    )
    with pytest.raises(MetadataError, match=r"lines\.json:2: not valid JSON: Extra data.*belongs in a \.jsonl file"):
        load_corpus("manifest", lines)
    broken.write_text('"just text"')
    with pytest.raises(MetadataError, match="expected a JSON object keyed by utterance id"):
        load_corpus("manifest", broken)


def test_a_bad_jsonl_line_is_a_malformed_line_and_a_json_document_in_jsonl_is_explained(tmp_path: Path) -> None:
    manifest, root = build_emobox(tmp_path)
    with open(manifest, "a") as handle:
        handle.write('{"key": "cut-off", "wav": "downloads/x.wav", "emo"\n[1, 2]\n')
    index = load_corpus("manifest", manifest, {"data_root": str(root), "emotion_map": SHORT_LABEL_MAP})
    assert len(index.clips) == 40 and index.skip_counts() == {"malformed_line": 2}
    assert [s.detail.split(": ")[:2] for s in index.skipped] == [
        [f"{EMOBOX_DATASET}.jsonl:41", "not valid JSON"],
        [f"{EMOBOX_DATASET}.jsonl:42", "expected a JSON object, found [1, 2]"],
    ]
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text(json.dumps({"a": {"wav": "a.wav", "speaker": "s1", "emo": "sad"}}, indent=2))
    with pytest.raises(
        NoUsableClipsError,
        match=r"(?s)malformed_line 7.*entry, pretty\.jsonl:1: "
        r"not valid JSON.*one JSON object per line",
    ):
        load_corpus("manifest", pretty)


def test_emotion_map_and_unknown_labels(tmp_path: Path) -> None:
    labels = ["joy", "anger", "fear", "Neutral", "bored"]
    rows = [[f"audio/{s}/{i}.wav", s, g, label] for s, g in MANIFEST_SPEAKERS for i, label in enumerate(labels)]
    index = load_corpus("manifest", build_manifest(tmp_path, rows), {"emotion_map": "joy=happy, anger=angry,fear=skip"})
    assert index.class_counts() == {"happy": 10, "angry": 10, "neutral": 10}
    assert index.skip_counts() == {"emotion_not_in_task": 10, "unknown_label": 10}


def test_bad_emotion_map_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="joy=glad"):
        load_corpus("manifest", build_manifest(tmp_path), {"emotion_map": "joy=glad"})


def test_unknown_gender_is_kept_with_a_caveat_and_a_bad_gender_is_a_malformed_line(tmp_path: Path) -> None:
    rows = [[f"audio/{s}/0.wav", s, g, "sad"] for s, g in MANIFEST_SPEAKERS]
    rows[0][2], rows[1][2] = "", "robot"
    index = load_corpus("manifest", build_manifest(tmp_path, rows))
    assert index.clips["audio/s01/0"].gender is None
    (caveat,) = index.caveats
    assert (caveat.reason, caveat.detail) == (
        "unknown_gender",
        "manifest.csv:2: gender empty: not in the gender metrics",
    )
    (skip,) = index.skipped
    assert (skip.reason, skip.detail.split(":")[:2]) == ("malformed_line", ["manifest.csv", "3"])


def test_a_manifest_without_a_gender_column_keeps_every_clip_with_a_caveat(tmp_path: Path) -> None:
    rows = [[f"audio/{s}/0.wav", s, "angry"] for s, _ in MANIFEST_SPEAKERS]
    for row in rows:
        write_wav(tmp_path / row[0])
    index = load_corpus("manifest", write_csv(tmp_path / "manifest.csv", ["path", "speaker", "emotion"], rows))
    assert len(index.clips) == 10 and index.caveat_counts() == {"unknown_gender": 10}
    assert "no gender field" in index.caveats[0].detail and len(index.folds) == 5


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

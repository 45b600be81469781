"""EmoDB in its release layout: names parsed, the 4-class subset, speaker-independent folds."""

from __future__ import annotations

import pytest

from trustser.corpora import check_speaker_disjoint, load_corpus
from trustser.corpora.emodb import SPEAKER_GENDER
from trustser.errors import CorpusNotFoundError, UnknownNameError


def test_shipped_emodb_has_the_readme_counts():
    index = load_corpus("emodb")
    assert len(index.clips) == 339
    assert index.class_counts() == {"angry": 127, "neutral": 79, "happy": 71, "sad": 62}
    genders = [c.gender for c in index.clips.values()]
    assert genders.count("female") == 188 and genders.count("male") == 151
    assert index.skip_counts()["emotion_not_in_task"] == 535 - 339


def test_clip_fields_come_from_the_file_name():
    clip = load_corpus("emodb").clips["03a01Wa"]
    assert (clip.speaker, clip.gender, clip.emotion) == ("03", "male", "angry")


def test_five_folds_test_one_female_and_one_male_and_validate_on_another_pair():
    index = load_corpus("emodb")
    assert len(index.folds) == 5
    check_speaker_disjoint(index)
    tested = []
    for fold in index.folds:
        test_speakers = index.speakers(fold.test)
        val_speakers = index.speakers(fold.validation)
        assert sorted(SPEAKER_GENDER[s] for s in test_speakers) == ["female", "male"]
        assert sorted(SPEAKER_GENDER[s] for s in val_speakers) == ["female", "male"]
        assert len(fold.train) + len(fold.validation) + len(fold.test) == 339
        tested += test_speakers
    assert sorted(tested) == sorted(SPEAKER_GENDER)  # every speaker is tested exactly once


def test_missing_corpus_says_where_it_looked(tmp_path):
    with pytest.raises(CorpusNotFoundError, match=str(tmp_path / "wav")):
        load_corpus("emodb", tmp_path)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown dataset 'emodbb'.*emodb"):
        load_corpus("emodbb")

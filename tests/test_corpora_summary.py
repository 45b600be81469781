"""Corpus summaries: the numbers behind ``trustser data summary``."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustser.corpora import load_corpus
from trustser.corpora.summary import format_summary, summarize

EMODB_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb"


@pytest.fixture(scope="module")
def emodb_summary() -> dict:
    if not (EMODB_ROOT / "wav").is_dir():
        pytest.skip(f"shipped EmoDB not found at {EMODB_ROOT}")
    return summarize(load_corpus("emodb"))


def test_emodb_counts_match_the_corpus_documentation(emodb_summary: dict) -> None:
    total = emodb_summary["by_gender"]["total"]
    assert total == {"neutral": 79, "happy": 71, "sad": 62, "angry": 127, "total": 339}
    assert emodb_summary["by_gender"]["female"]["total"] == 188
    assert emodb_summary["by_gender"]["male"]["total"] == 151
    assert emodb_summary["gender_unknown"] == 0
    assert emodb_summary["skipped"] == {"emotion_not_in_task": 196}


def test_emodb_folds_partition_every_clip_once_as_test(emodb_summary: dict) -> None:
    folds = emodb_summary["folds"]
    assert len(folds) == 5
    assert sum(f["partitions"]["test"]["clips"] for f in folds) == 339
    for fold in folds:
        parts = fold["partitions"]
        assert sum(p["clips"] for p in parts.values()) == 339
        assert (parts["train"]["speakers"], parts["validation"]["speakers"], parts["test"]["speakers"]) == (6, 2, 2)


def test_format_summary_lays_out_the_method_table(emodb_summary: dict) -> None:
    text = format_summary(emodb_summary)
    header = next(line for line in text.splitlines() if line.startswith("gender"))
    assert header.split() == ["gender", "neutral", "happy", "sad", "angry", "total"]
    assert "total" in text and "79" in text and "339" in text
    assert text.splitlines()[-1] == "skipped: emotion_not_in_task 196"
    assert "unknown" not in header  # the unknown-gender row appears only when there are such clips

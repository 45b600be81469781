"""Shared fixtures: an isolated feature cache and MLflow store per test, and a small EmoDB subset.

The shipped EmoDB is read from ../shared/data/emodb and never copied into the repository; tests that need to alter
audio copy a few clips into a tmp directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["scale_fixtures"]  # PostgreSQL + MLflow server for the scale tests, started on demand

EMODB_ROOT = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb").resolve()


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and tracking store, so no test depends on another's leftovers."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TRUSTSER_CACHE", str(cache))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here: telemetry costs seconds per test
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    # no test downloads real weights, online or not (the download tests serve their own stand-in hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def shared_converted_cache(tmp_path_factory):
    """One cache for tests that need the converted real Whisper weights (conversion takes seconds)."""
    return tmp_path_factory.mktemp("converted-cache")


def make_mini_emodb(root: Path, per_speaker_class: int = 1, speakers: set[str] | None = None) -> Path:
    """Copy ``per_speaker_class`` clips per (speaker, 4-class emotion) of the real EmoDB into ``root/wav``."""
    from trustser.corpora.emodb import EMOTION_CODES, FILE_NAME

    (root / "wav").mkdir(parents=True)
    taken: dict[tuple[str, str], int] = {}
    for path in sorted((EMODB_ROOT / "wav").iterdir()):
        m = FILE_NAME.match(path.name)
        if not m or m["emotion"] not in EMOTION_CODES or (speakers and m["speaker"] not in speakers):
            continue
        key = (m["speaker"], m["emotion"])
        if taken.get(key, 0) < per_speaker_class:
            shutil.copy(path, root / "wav" / path.name)
            taken[key] = taken.get(key, 0) + 1
    return root


@pytest.fixture
def fold1_emodb(tmp_path) -> Path:
    """The smallest real-EmoDB copy on which fold 1 is complete: its test pair (08, 03), validation pair (09, 10)
    and one training pair (13, 11): 24 clips."""
    return make_mini_emodb(tmp_path / "emodb", speakers={"08", "03", "09", "10", "13", "11"})


@pytest.fixture
def mini_emodb(tmp_path) -> Path:
    """About 40 real EmoDB clips (one per speaker and emotion) in the real layout."""
    return make_mini_emodb(tmp_path / "emodb")

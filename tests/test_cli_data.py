"""The CLI end to end: ``trustser data summary`` on the shipped EmoDB and on replicas, and ``trustser run`` on a
manifest corpus, through click exactly as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from replicas import build_crema_d, build_manifest, build_msp_podcast
from run_flags import FAST_RUN

from trustser.cli import main

EMODB_ROOT = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb").resolve()
needs_emodb = pytest.mark.skipif(not (EMODB_ROOT / "wav").is_dir(), reason=f"shipped EmoDB not found at {EMODB_ROOT}")


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def row(text: str, first: str) -> list[str]:
    """The cells of the summary table line that starts with ``first`` (e.g. a gender)."""
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


@needs_emodb
def test_data_summary_of_the_shipped_emodb_prints_its_readme_counts_and_skips():
    text = invoke("data", "summary", "emodb")
    assert row(text, "gender") == ["gender", "neutral", "happy", "sad", "angry", "total"]
    assert row(text, "total") == ["total", "79", "71", "62", "127", "339"]
    assert row(text, "female")[-1] == "188" and row(text, "male")[-1] == "151"
    assert text.startswith("emodb: 339 clips, 10 speakers (gender unknown: 0)")
    assert text.strip().splitlines()[-1] == "skipped: emotion_not_in_task 196"  # boredom, disgust, fear


@needs_emodb
def test_data_summary_json_holds_the_same_counts_and_the_folds():
    summary = json.loads(invoke("data", "summary", "emodb", "--json"))
    assert summary["by_gender"]["total"] == {"neutral": 79, "happy": 71, "sad": 62, "angry": 127, "total": 339}
    assert (summary["by_gender"]["female"]["total"], summary["by_gender"]["male"]["total"]) == (188, 151)
    assert summary["skipped"] == {"emotion_not_in_task": 196}
    assert [f["name"] for f in summary["folds"]] == [f"fold{k}" for k in range(1, 6)]
    assert all(f["partitions"]["test"]["speakers"] == 2 for f in summary["folds"])


def test_data_summary_with_data_root_reads_a_replica_and_its_options(tmp_path):
    root = build_crema_d(tmp_path)
    text = invoke("data", "summary", "crema_d", "--data-root", str(root))
    assert text.startswith("crema_d: 150 clips, 10 speakers") and f"root: {root}" in text
    assert row(text, "total") == ["total", "70", "30", "20", "30", "150"]
    assert text.strip().splitlines()[-1] == "skipped: emotion_not_in_task 60, ambiguous_label 10"
    intended = json.loads(
        invoke(
            "data", "summary", "crema_d", "--data-root", str(root), "--json", "--corpus-option", "label_source=intended"
        )
    )
    assert intended["clips"] == 140 and intended["skipped"] == {"emotion_not_in_task": 80}


def test_data_summary_shows_clips_kept_with_unknown_speaker_or_gender(tmp_path):
    text = invoke("data", "summary", "msp_podcast", "--data-root", str(build_msp_podcast(tmp_path)))
    assert "(gender unknown: 12)" in text and row(text, "unknown")[-1] == "12"
    assert "kept, metadata missing: unknown_speaker 12, unknown_gender 12" in text


def test_data_summary_errors_are_one_line_naming_the_path(tmp_path):
    result = CliRunner().invoke(main, ["data", "summary", "crema_d", "--data-root", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == f"trustser: error: CREMA-D not found: {tmp_path / 'nowhere'} is not a directory"
    unknown = CliRunner().invoke(main, ["data", "summary", "timit"])
    assert unknown.exit_code == 2 and "unknown dataset 'timit'; known:" in unknown.output


def test_run_on_a_manifest_corpus_through_the_cli_logs_an_mlflow_run(tmp_path):
    manifest = build_manifest(tmp_path) / "manifest.csv"
    output = invoke("run", "--dataset", "manifest", "--manifest", str(manifest), *FAST_RUN)
    assert "whisper_tiny on manifest: test UAR" in output and "over 1 fold(s)" in output
    assert "RANDOM weights" in output
    run_id = output.strip().rsplit("MLflow parent run ", 1)[1]
    parent = mlflow.MlflowClient().get_run(run_id)
    assert parent.data.params["dataset"] == "manifest" and parent.data.tags["weights"] == "random"
    assert 0.0 <= parent.data.metrics["test_uar_mean"] <= 1.0

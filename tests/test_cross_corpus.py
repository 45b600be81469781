"""Cross-corpus evaluation: a run trains and selects on corpus A's folds and also tests every fold's model on all of
corpus B (``--test-dataset``), logging ``cross_<B>_uar`` with its interval; the report draws the train × test
matrix."""

from __future__ import annotations

import math

import mlflow
import pytest
from click.testing import CliRunner

from replicas import build_manifest
from run_flags import FAST_RUN
from trustser.cli import main
from trustser.cross_corpus import check_distinct, cross_matrix, metric_name
from trustser.errors import ConfigError
from trustser.study.pareto import Candidate

FAST = [*FAST_RUN, "--bootstrap", "50"]


def test_a_run_tests_each_fold_model_on_all_of_another_corpus_and_logs_the_uar_with_its_interval(fold1_emodb, tmp_path):
    manifest = build_manifest(tmp_path) / "manifest.csv"
    out = CliRunner().invoke(
        main,
        [
            "run",
            "--data-root",
            str(fold1_emodb),
            "--test-dataset",
            "manifest",
            "--test-data-root",
            str(manifest),
            *FAST,
        ],
    )
    assert out.exit_code == 0, out.output
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("trustser").experiment_id])
    fold = next(r for r in runs if r.data.tags.get("fold") == "fold1")
    parent = next(r for r in runs if "fold" not in r.data.tags)
    n_manifest = len(manifest.read_text().strip().splitlines()) - 1
    m = fold.data.metrics
    assert m["cross_manifest_n_clips"] == n_manifest  # all of B, not a fold of it
    assert 0.0 <= m["cross_manifest_uar"] <= 1.0
    assert m["cross_manifest_uar_ci_low"] <= m["cross_manifest_uar"] <= m["cross_manifest_uar_ci_high"]
    assert math.isclose(parent.data.metrics["cross_manifest_uar_mean"], m["cross_manifest_uar"])
    assert parent.data.params["test_dataset"] == "manifest"


def test_the_training_corpus_cannot_be_its_own_cross_corpus_test(fold1_emodb):
    with pytest.raises(ConfigError, match="is the training corpus"):
        check_distinct("emodb", "emodb")
    out = CliRunner().invoke(main, ["run", "--data-root", str(fold1_emodb), "--test-dataset", "emodb", *FAST])
    assert out.exit_code == 2 and "is the training corpus" in out.output and "Traceback" not in out.output


def test_a_run_without_a_cross_corpus_test_keeps_its_config_hash():
    from trustser.run_config import RunConfig
    from trustser.study.space import config_hash

    assert config_hash(RunConfig()) == config_hash(RunConfig(test_data_root=None))
    assert config_hash(RunConfig(test_dataset="manifest")) != config_hash(RunConfig())


def test_the_matrix_puts_within_corpus_uar_on_the_diagonal_and_cross_uar_elsewhere():
    rows = [
        {"dataset": "emodb", "metrics": {"test_uar_mean": 0.9, "cross_crema_d_uar_mean": 0.5}},
        {"dataset": "crema_d", "metrics": {"test_uar_mean": 0.7, "cross_emodb_uar_mean": 0.6}},
        {"dataset": "emodb", "metrics": {"test_uar_mean": 0.1}},
    ]  # older run of the same cell: newest wins
    assert cross_matrix(rows) == {"emodb": {"emodb": 0.9, "crema_d": 0.5}, "crema_d": {"crema_d": 0.7, "emodb": 0.6}}
    assert metric_name("my-corpus.v2") == "cross_my_corpus_v2"


def test_the_report_shows_the_train_by_test_matrix(tmp_path):
    from trustser.report import write_report

    values = {"performance": 0.8, "privacy": 0.9, "safety": 0.3, "fairness": 0.2, "sustainability": 5.0}
    rows = [
        Candidate(
            "whisper_base",
            {"backbone": "whisper_base", "dataset": "emodb"},
            values,
            metrics={"test_uar_mean": 0.91, "cross_manifest_uar_mean": 0.55},
        ),
        Candidate(
            "apc",
            {"backbone": "apc", "dataset": "emodb"},
            {**values, "sustainability": 2.0},
            metrics={"test_uar_mean": 0.60, "cross_manifest_uar_mean": 0.40},
        ),
    ]
    files = write_report(rows, tmp_path / "report", scenarios=())
    md = files.markdown.read_text()
    assert "## Cross-corpus UAR % (train × test)" in md
    assert "| whisper_base [emodb] | 91.0 | 55.0 |" in md and "| apc [emodb] | 60.0 | 40.0 |" in md
    assert "Cross-corpus UAR" in files.html.read_text()

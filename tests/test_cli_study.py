"""The CLI as a user drives it: `trustser run` exposes every fine-tuning choice of the method (width, pooling beside
lr and unfreeze_top) and hands them to the RunConfig unchanged; `trustser report` on a study logs the report and
its figures to the study's MLflow run. No training: run_experiment and the trial runner are replaced."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import pytest
from click.testing import CliRunner

from trustser.cli import main
from trustser.experiment import RunConfig
from trustser.head import POOLINGS
from trustser.training import TrainConfig
from test_study_runner import STUDIES, FakeRunner
from test_study_runner import fast_isolated_tracking, migrated_mlflow_db  # noqa: F401  (fixtures: a fast tmp store)


@pytest.fixture
def captured(monkeypatch) -> list[RunConfig]:
    """run_experiment replaced by a recorder returning an empty result."""
    configs: list[RunConfig] = []

    def fake_run(config: RunConfig):
        configs.append(config)
        return SimpleNamespace(summary={"wall_time_s": 0.0}, folds=[], parent_run_id="none")

    monkeypatch.setattr("trustser.experiment.run_experiment", fake_run)
    return configs


def test_run_defaults_are_the_methods_head_width_128_and_learned_weighted_sum(captured):
    out = CliRunner().invoke(main, ["run", "--backbone", "apc", "--random-init"])
    assert out.exit_code == 0, out.output
    assert captured[0].train == TrainConfig()
    assert (captured[0].train.width, captured[0].train.pooling) == (128, "weighted")


def test_run_passes_width_and_pooling_to_the_run_config(captured):
    out = CliRunner().invoke(main, ["run", "--backbone", "apc", "--random-init", "--width", "256",
                                    "--pooling", "last", "--lr", "0.001", "--unfreeze-top", "1"])
    assert out.exit_code == 0, out.output
    train = captured[0].train
    assert (train.width, train.pooling, train.lr, captured[0].unfreeze_top) == (256, "last", 0.001, 1)


def test_run_offers_exactly_the_heads_poolings_and_rejects_others(captured):
    command = main.commands["run"]
    pooling = next(p for p in command.params if p.name == "pooling")
    assert tuple(pooling.type.choices) == POOLINGS
    for bad in (["--pooling", "mean"], ["--width", "0"]):
        out = CliRunner().invoke(main, ["run", "--backbone", "apc", *bad])
        assert out.exit_code == 2 and bad[0] in out.output
    assert captured == []


@pytest.fixture
def study(tmp_path, monkeypatch) -> tuple[str, str]:
    """A finished quick study (fake runner) in a tmp storage: (storage URL, the study's MLflow run id)."""
    import optuna

    monkeypatch.setattr("trustser.study.runner.experiment_runner", FakeRunner())
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = CliRunner().invoke(main, ["study", "--space", str(STUDIES / "quick.yaml"), "--storage", storage])
    assert out.exit_code == 0, out.output
    return storage, optuna.load_study(study_name="quick", storage=storage).user_attrs["mlflow_run_id"]


def report_artifacts(run_id: str) -> set[str]:
    return {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "report")}


def test_report_of_a_study_logs_the_report_and_every_figure_to_the_study_run(study, tmp_path):
    storage, run_id = study
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"  # logged after the study ended
    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    assert f"under report/ of MLflow run {run_id}" in out.output
    written = {f"report/{p.name}" for p in (tmp_path / "report").iterdir()}
    logged = report_artifacts(run_id)
    assert logged == written
    assert {"report/report.html", "report/report.md", "report/pareto.png", "report/radar_overlay.png"} <= logged
    assert any(p.startswith("report/radar_0") for p in logged)  # the per-candidate radar charts


def test_report_logs_only_its_own_files_and_can_be_kept_out_of_mlflow(study, tmp_path):
    storage, run_id = study
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("not part of the report")
    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "report"), "--no-log"])
    assert out.exit_code == 0, out.output
    assert report_artifacts(run_id) == set()
    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    assert "report/notes.txt" not in report_artifacts(run_id) and "report/report.html" in report_artifacts(run_id)


def test_report_logs_to_an_explicit_run_and_names_a_missing_one(study, tmp_path):
    storage, _ = study
    mlflow.set_experiment("reports")
    with mlflow.start_run() as other:
        pass
    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "r"),
                                    "--log-run", other.info.run_id])
    assert out.exit_code == 0, out.output
    assert "report/pareto.png" in report_artifacts(other.info.run_id)
    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "r"),
                                    "--log-run", "0" * 32])
    assert out.exit_code == 2 and "0" * 32 in out.output

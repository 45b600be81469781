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
from test_study_runner import SPACES, FakeRunner
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
    out = CliRunner().invoke(
        main,
        [
            "run",
            "--backbone",
            "apc",
            "--random-init",
            "--width",
            "256",
            "--pooling",
            "last",
            "--lr",
            "0.001",
            "--unfreeze-top",
            "1",
        ],
    )
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
    out = CliRunner().invoke(main, ["study", "--space", str(SPACES / "six.yaml"), "--storage", storage])
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
    out = CliRunner().invoke(
        main, ["report", "--storage", storage, "--out", str(tmp_path / "r"), "--log-run", other.info.run_id]
    )
    assert out.exit_code == 0, out.output
    assert "report/pareto.png" in report_artifacts(other.info.run_id)
    out = CliRunner().invoke(
        main, ["report", "--storage", storage, "--out", str(tmp_path / "r"), "--log-run", "0" * 32]
    )
    assert out.exit_code == 2 and "0" * 32 in out.output


class ChanceRunner(FakeRunner):
    """FakeRunner's numbers with 95 % intervals (±0.03); apc learns nothing: UAR at chance, so ASR and equality of
    odds 0 — the kind of trial that would otherwise sit on the front and win every scenario."""

    def __call__(self, config) -> dict[str, float]:
        summary = super().__call__(config)
        if config.backbone == "apc":
            summary.update(test_uar_mean=0.25, safety_fgsm_asr_mean=0.0, fairness_equality_of_odds_mean=0.0)
        for key in ("test_uar", "privacy_gender_accuracy", "safety_fgsm_asr", "fairness_equality_of_odds"):
            summary[f"{key}_ci_low"] = summary[f"{key}_mean"] - 0.03
            summary[f"{key}_ci_high"] = summary[f"{key}_mean"] + 0.03
        return summary


def test_a_study_flags_chance_level_trials_on_its_front_and_recommend_and_report_set_them_aside(tmp_path, monkeypatch):
    import json

    import optuna

    monkeypatch.setattr("trustser.study.runner.experiment_runner", ChanceRunner())
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = CliRunner().invoke(main, ["study", "--space", str(SPACES / "six.yaml"), "--storage", storage])
    assert out.exit_code == 0, out.output
    run_id = optuna.load_study(study_name="quick", storage=storage).user_attrs["mlflow_run_id"]
    logged = json.loads(open(mlflow.MlflowClient().download_artifacts(run_id, "pareto.json")).read())
    flags = {row["label"]: row["excluded"] for row in logged["rows"]}
    assert {label for label, why in flags.items() if why} == {"apc unfreeze_top=0", "apc unfreeze_top=1"}
    assert flags["apc unfreeze_top=0"] == "UAR 95 % interval [0.220, 0.280] does not clear chance 0.25"

    out = CliRunner().invoke(main, ["recommend", "--scenario", "critical", "--storage", storage, "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert not rec["choice"].startswith("apc") and "indistinguishable" in rec
    assert {e["label"] for e in rec["excluded"] if e["rule"] == "chance level"} == {
        "apc unfreeze_top=0",
        "apc unfreeze_top=1",
    }
    out = CliRunner().invoke(main, ["recommend", "--scenario", "critical", "--storage", storage, "--uar-floor", "0.5"])
    assert out.exit_code == 0, out.output
    assert "unfreeze_top=1" in out.output.splitlines()[0] and "does not clear the stated floor 0.5" in out.output

    out = CliRunner().invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "r"), "--no-log"])
    assert out.exit_code == 0, out.output
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "2 set aside as not above chance" in markdown and "| 25.0 [22.0–28.0] |" in markdown

"""The study runner, with an injected fake runner (deterministic numbers, no training): each configuration is
evaluated once, repeats reuse stored results, MLflow and Optuna point at each other, and a stopped study resumes.
One slow test runs the real ``run_experiment`` on a tiny EmoDB subset."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from trustser.errors import ConfigError
from trustser.study.pareto import Candidate, front_rows, non_dominated
from trustser.study.runner import ObjectiveMissingError, run_study
from trustser.study.space import OBJECTIVES, load_space

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SPACES = Path(__file__).resolve().parent / "spaces"  # test-owned study spaces (fake runners)
GFLOPS = {"whisper_tiny": 2.3, "apc": 2.5, "wav2vec2_base": 41.7}
KEYS = [o.key for o in OBJECTIVES.values()]


class FakeRunner:
    """Deterministic summaries from the configuration; records every call; can fail or be interrupted."""

    def __init__(self, fail_backbone: str | None = None, interrupt_at: int | None = None, drop: str | None = None):
        self.calls: list[tuple[str, int]] = []
        self.fail_backbone, self.interrupt_at, self.drop = fail_backbone, interrupt_at, drop

    def __call__(self, config) -> dict[str, float]:
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append((config.backbone, config.unfreeze_top))
        if config.backbone == self.fail_backbone:
            raise RuntimeError(f"{config.backbone} exploded")
        k = len(config.backbone)
        summary = {
            "test_uar_mean": 0.40 + 0.01 * k + 0.05 * config.unfreeze_top,
            "test_uar_std": 0.01,
            "privacy_gender_accuracy_mean": 0.80 + 0.005 * k,
            "safety_fgsm_asr_mean": 0.70 + 0.10 * config.unfreeze_top - 0.01 * k,
            "fairness_equality_of_odds_mean": 0.20 - 0.05 * config.unfreeze_top,
            "sustainability_gflops": GFLOPS[config.backbone],
        }
        summary.pop(self.drop, None)
        return summary


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Iterator[Path]:
    """An empty MLflow store with its tables created, built once (in memory-backed /dev/shm where there is one:
    the migrations commit hundreds of times)."""
    shm = Path("/dev/shm")
    folder = (
        Path(tempfile.mkdtemp(dir=shm))
        if shm.is_dir() and os.access(shm, os.W_OK)
        else tmp_path_factory.mktemp("mlflow-template")
    )
    path = folder / "mlflow.db"
    here = Path.cwd()
    os.chdir(folder)  # the store's Default experiment points its artifacts at ./mlruns: keep that out of the repo
    try:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates tables
    finally:
        os.chdir(here)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def fast_isolated_tracking(migrated_mlflow_db, tmp_path, monkeypatch):
    """conftest gives each test its own empty MLflow sqlite store; creating its tables takes seconds, so the store
    starts as a copy of an already-migrated empty one. The working directory (default optuna.db, MLflow artifacts)
    is the test's tmp_path. MLflow's telemetry is off: in a sandbox without network it costs seconds per test."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    target = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    if not target.exists():
        shutil.copy(migrated_mlflow_db, target)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def quick():
    return load_space(SPACES / "six.yaml")


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def completed(storage, name="quick"):
    study = optuna.load_study(study_name=name, storage=storage)
    return study, study.get_trials(states=(TrialState.COMPLETE,))


def test_grid_study_evaluates_every_configuration_once_and_reports_the_pareto_front(quick, storage):
    fake = FakeRunner()
    result = run_study(quick, storage=storage, runner=fake)
    assert sorted(fake.calls) == sorted((b, u) for b in GFLOPS for u in (0, 1))
    assert (result.evaluated, result.reused, result.failed) == (6, 0, 0)
    study, trials = completed(storage)
    assert len(trials) == 6 and [d.name for d in study.directions] == ["MAXIMIZE"] + ["MINIMIZE"] * 4
    everything = [Candidate(str(t.params), t.params, dict(zip(OBJECTIVES, t.values))) for t in trials]
    expected = {r.label for r in non_dominated(everything, tuple(OBJECTIVES.values())) if r.pareto}
    assert {str(r.params) for r in front_rows(study)} == expected
    assert {r.label for r in result.front} == {r.label for r in front_rows(study)}
    trial = trials[0]
    assert trial.user_attrs["summary"]["test_uar_std"] == 0.01  # the whole summary is kept with the trial


def test_repeated_configurations_reuse_the_stored_result_instead_of_retraining(quick, storage):
    space = quick.with_overrides(sampler={"kind": "random", "seed": 3})
    fake = FakeRunner()
    result = run_study(space, n_trials=10, storage=storage, runner=fake)
    study, trials = completed(storage)
    distinct = {tuple(sorted(t.params.items())) for t in trials}
    assert len(trials) == 10 and len(distinct) < 10
    assert len(fake.calls) == len(set(fake.calls)) == len(distinct)
    assert (result.evaluated, result.reused) == (len(distinct), 10 - len(distinct))
    by_hash = {}
    for t in sorted(trials, key=lambda t: t.number):
        first = by_hash.setdefault(t.user_attrs["config_hash"], t)
        if t is not first:
            assert t.user_attrs["reused_from_trial"] == first.number
            assert t.user_attrs["reused_from_study"] == "quick"
            assert t.values == first.values
    assert len({r.label for r in front_rows(study)}) == len(front_rows(study))  # repeats appear once on the front


def test_another_study_in_the_same_storage_reuses_configurations_already_computed(quick, storage):
    run_study(
        quick.with_overrides(search={"backbone": ["apc", "whisper_tiny"], "unfreeze_top": [0]}),
        storage=storage,
        study_name="first",
        runner=FakeRunner(),
    )
    fake = FakeRunner()
    result = run_study(quick, storage=storage, study_name="second", runner=fake)
    assert ("apc", 0) not in fake.calls and ("whisper_tiny", 0) not in fake.calls and len(fake.calls) == 4
    assert result.reused == 2
    _, trials = completed(storage, "second")
    assert sorted(t.user_attrs.get("reused_from_study", "") for t in trials).count("first") == 2


def test_trials_and_mlflow_runs_cross_reference_each_other_and_pareto_runs_are_tagged(quick, storage):
    result = run_study(quick, storage=storage, runner=FakeRunner(), experiment="study-exp")
    study, trials = completed(storage)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.mlflow_run_id)
    assert study.user_attrs["mlflow_run_id"] == parent.info.run_id
    assert parent.data.tags["optuna_study_name"] == "quick"
    assert parent.data.tags["optuna_storage"] == storage
    assert client.get_experiment(parent.info.experiment_id).name == "study-exp"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.json", "pareto.csv", "pareto.png", "radar_front.png", "space.json"} <= artifacts
    front = {t.number for t in study.best_trials}
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna_trial_number"] == str(t.number)
        assert run.data.tags["optuna_study_name"] == "quick"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["config_hash"] == t.user_attrs["config_hash"]
        assert run.data.tags["pareto"] == ("true" if t.number in front else "false")
        assert run.data.params["backbone"] == t.params["backbone"]
        assert run.data.metrics["performance"] == pytest.approx(t.values[0])
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto.json")).read_text())
    assert {row["trial"] for row in logged["rows"]} == front


def test_the_pareto_front_is_also_logged_as_a_table_one_row_per_front_configuration(quick, storage):
    import csv

    result = run_study(quick, storage=storage, runner=FakeRunner())
    study, _ = completed(storage)
    path = mlflow.MlflowClient().download_artifacts(result.mlflow_run_id, "pareto.csv")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    by_trial = {int(row["trial"]): row for row in table}
    assert set(by_trial) == {t.number for t in study.best_trials} == {r.trial for r in result.front}
    for t in study.best_trials:
        row = by_trial[t.number]
        assert row["backbone"] == t.params["backbone"] and int(row["unfreeze_top"]) == t.params["unfreeze_top"]
        assert [float(row[name]) for name in study.user_attrs["objectives"]] == pytest.approx(t.values)
        assert row["pareto"] == "true" and row["mlflow_run_id"] == t.user_attrs["mlflow_run_id"]


def test_a_stopped_study_resumes_without_reevaluating_completed_configurations(quick, storage):
    first = FakeRunner()
    run_study(quick, n_trials=3, storage=storage, runner=first)
    assert len(first.calls) == 3
    study, _ = completed(storage)
    parent = study.user_attrs["mlflow_run_id"]
    second = FakeRunner()
    result = run_study(quick, storage=storage, runner=second)  # same study name: resumes
    assert len(second.calls) == 3 and not set(first.calls) & set(second.calls)
    assert result.mlflow_run_id == parent  # the same MLflow parent run, continued
    assert completed(storage)[0].user_attrs["mlflow_run_ids"] == [parent]
    again = FakeRunner()
    assert run_study(quick, storage=storage, runner=again).evaluated == 0 and again.calls == []
    assert len(completed(storage)[1]) == 6


def test_resuming_into_another_mlflow_experiment_starts_a_new_study_run(quick, storage):
    first = run_study(quick, n_trials=1, storage=storage, runner=FakeRunner(), experiment="one")
    second = run_study(quick, n_trials=1, storage=storage, runner=FakeRunner(), experiment="two")
    assert second.mlflow_run_id != first.mlflow_run_id
    run = mlflow.MlflowClient().get_run(second.mlflow_run_id)
    assert mlflow.MlflowClient().get_experiment(run.info.experiment_id).name == "two"
    # the study keeps every run it logged to; the new one says which it resumes
    study, _ = completed(storage)
    assert study.user_attrs["mlflow_run_ids"] == [first.mlflow_run_id, second.mlflow_run_id]
    assert study.user_attrs["mlflow_run_id"] == second.mlflow_run_id
    assert run.data.tags["trustser.resumes_run"] == first.mlflow_run_id and run.data.tags["trustser.study_runs"] == "2"


def test_an_interrupted_study_retries_the_interrupted_configuration_only(quick, storage):
    interrupted = FakeRunner(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(quick, storage=storage, runner=interrupted)
    study, trials = completed(storage)
    assert len(trials) == 2 and study.get_trials(states=(TrialState.FAIL,))
    resumed = FakeRunner()
    run_study(quick, storage=storage, runner=resumed)
    assert len(resumed.calls) == 4 and not set(interrupted.calls) & set(resumed.calls)
    assert len(completed(storage)[1]) == 6


def test_a_failing_configuration_is_marked_fail_with_its_error_and_the_study_goes_on(quick, storage):
    result = run_study(quick, storage=storage, runner=FakeRunner(fail_backbone="apc"))
    study = optuna.load_study(study_name="quick", storage=storage)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert result.failed == 2 and len(failed) == 2
    assert all(t.params["backbone"] == "apc" and "apc exploded" in t.user_attrs["error"] for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    run = mlflow.MlflowClient().get_run(failed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "apc exploded" in run.data.tags["error"]


def test_a_summary_without_an_objective_fails_the_trial_naming_the_key(quick, storage):
    result = run_study(quick, n_trials=1, storage=storage, runner=FakeRunner(drop="safety_fgsm_asr_mean"))
    assert result.failed == 1
    error = optuna.load_study(study_name="quick", storage=storage).trials[0].user_attrs["error"]
    assert ObjectiveMissingError.__name__ in error and "'safety_fgsm_asr_mean'" in error


def test_resuming_a_study_with_other_objectives_is_refused(quick, storage):
    run_study(quick, n_trials=1, storage=storage, runner=FakeRunner())
    narrower = quick.with_overrides(objectives={"performance": "maximize"})
    with pytest.raises(ConfigError, match="optimises"):
        run_study(narrower, storage=storage, runner=FakeRunner())


def test_cli_study_recommend_and_report_share_the_storage(quick, storage, tmp_path, monkeypatch):
    from trustser.cli import main

    monkeypatch.setattr("trustser.study.runner.experiment_runner", FakeRunner())
    cli = CliRunner()
    out = cli.invoke(main, ["study", "--space", str(SPACES / "six.yaml"), "--storage", storage, "--n-trials", "4"])
    assert out.exit_code == 0, out.output
    assert "4 evaluated" in out.output and "RANDOM weights" in out.output and "Pareto front" in out.output
    out = cli.invoke(main, ["recommend", "--scenario", "critical", "--storage", storage, "--json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output)
    assert rec["scenario"] == "critical" and rec["choice"] and "runner_up" in rec and rec["reasons"]
    out = cli.invoke(main, ["recommend", "--scenario", "nowhere", "--storage", storage])
    assert out.exit_code == 2 and "unknown scenario 'nowhere'" in out.output
    out = cli.invoke(main, ["report", "--storage", storage, "--out", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "report" / "report.html").is_file()
    out = cli.invoke(main, ["study", "--space", str(tmp_path / "missing.yaml"), "--storage", storage])
    assert out.exit_code == 2 and "missing.yaml" in out.output


def test_default_storage_is_an_optuna_db_in_the_working_directory(quick, tmp_path):
    result = run_study(quick, n_trials=1, runner=FakeRunner())
    assert result.storage == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert (tmp_path / "optuna.db").is_file()


@pytest.mark.slow
def test_real_runner_on_tiny_emodb_fills_the_five_objectives(mini_emodb, storage):
    space = load_space(SPACES / "six.yaml").with_overrides(
        data_root=str(mini_emodb),
        search={"backbone": ["whisper_tiny", "apc"], "unfreeze_top": [0]},
        train={"epochs": 1, "schedule": "paper"},
    )  # the pipeline, not convergence, is under test: one epoch
    result = run_study(space, storage=storage)
    study = optuna.load_study(study_name="quick", storage=storage)
    failures = [
        f"trial {t.number}: {t.user_attrs.get('error', '')}" for t in study.get_trials(states=(TrialState.FAIL,))
    ]
    assert not failures, "\n".join(failures)  # an ObjectiveMissingError here: run_experiment lost an objective key
    assert result.evaluated == 2 and len(result.front) >= 1
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert all(trial.user_attrs["summary"].get(key) is not None for key in KEYS), trial.user_attrs["summary"]
    client = mlflow.MlflowClient()
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        nested = client.search_runs(
            [client.get_run(trial.user_attrs["mlflow_run_id"]).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{trial.user_attrs['mlflow_run_id']}'",
        )
        assert [r.data.tags["backbone"] for r in nested] == [trial.params["backbone"]]  # run_experiment nested


def test_the_study_names_its_metrics_and_trials_carry_label_and_run_id_for_optuna_dashboard(quick, storage):
    from trustser.study.space import config_label

    run_study(quick, n_trials=2, storage=storage, runner=FakeRunner())
    study, trials = completed(storage)
    assert study.metric_names == [o.name for o in quick.objectives] == study.user_attrs["objectives"]
    client = mlflow.MlflowClient()
    for t in trials:
        assert t.user_attrs["label"] == config_label(t.params)
        assert client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["optuna_trial_number"] == str(t.number)

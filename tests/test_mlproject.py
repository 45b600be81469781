"""The MLproject file: every entry-point parameter reaches the CLI option of the same name with the CLI's default,
and the ``study`` entry point, run twice through ``mlflow run`` with a fake trial runner, resumes the study (no
configuration evaluated twice) while the Optuna trials and MLflow runs keep pointing at each other.

Under ``mlflow run`` each invocation's project run becomes the study run (``trustser.study.runner``): the second
one is tagged as resuming the first, and the study lists both in its ``mlflow_run_ids`` user attr."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import click
import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from scale_runners import read_calls
from trustser.cli import main

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PROJECT = yaml.safe_load((REPO / "MLproject").read_text())


def _same_default(project_default: str, option: click.Option) -> bool:
    """MLproject passes text; the CLI reads it as the option's type ("" stands for no value)."""
    ours = option.default
    if ours in (None, "", ()) or project_default == "":
        return ours in (None, "", ()) and project_default == ""
    if isinstance(ours, bool):
        return project_default.lower() == str(ours).lower()
    if isinstance(ours, (int, float)):
        return math.isclose(float(project_default), float(ours))
    return project_default == str(ours)


@pytest.mark.parametrize("entry_point, command", [("main", "run"), ("study", "study")])
def test_every_entry_point_parameter_is_passed_to_the_option_of_that_name_with_its_default(entry_point, command):
    entry = PROJECT["entry_points"][entry_point]
    words = shlex.split(entry["command"])
    assert words[:4] == ["python", "-m", "trustser.cli", command]
    options = {
        flag.lstrip("-").replace("-", "_"): p
        for p in main.commands[command].params
        if isinstance(p, click.Option)
        for flag in p.opts
    }
    for name, spec in entry["parameters"].items():
        flag = "--" + name.replace("_", "-")
        assert flag in words and words[words.index(flag) + 1] == "{" + name + "}", f"{name} is not passed on"
        option = options[name]
        if not option.required:
            assert _same_default(str(spec["default"]), option), f"{name}: {spec['default']!r} vs {option.default!r}"


def test_the_run_entry_point_offers_the_methods_fine_tuning_choices_with_the_schemas_defaults():
    """Its parameters default to "" (not given): the run schema's defaults apply, written in one place only."""
    from trustser.cli_run import build_run_config
    from trustser.run_config import RunConfig

    parameters = PROJECT["entry_points"]["main"]["parameters"]
    assert {"lr", "unfreeze_top", "width", "pooling", "config", "set"} <= set(parameters)
    assert {spec["default"] for spec in parameters.values()} == {""}
    options = {p.name: p for p in main.commands["run"].params if isinstance(p, click.Option)}
    given = {
        name: options[name].type.convert("", options[name], None)
        for name in parameters
        if name not in ("config", "set", "pgd")
    }
    config = build_run_config("", given, ("",))
    assert config == RunConfig() and (config.train.width, config.train.pooling) == (128, "weighted")


def test_mlproject_parameters_config_and_set_reach_any_setting(tmp_path):
    from trustser.cli_run import build_run_config

    preset = tmp_path / "run.yaml"
    preset.write_text("train: {schedule: paper, epochs: 3}\n")
    config = build_run_config(str(preset), {"lr": "0.001"}, ("trust.snr_db=40 train.epochs=5",))
    assert (config.train.schedule, config.train.epochs, config.train.lr, config.trust.snr_db) == ("paper", 5, 1e-3, 40)


@pytest.mark.slow
def test_mlflow_run_study_resumes_and_cross_references_trials_and_runs(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = tmp_path / "calls.jsonl"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.create_experiment("project-study", artifact_location=(tmp_path / "artifacts").as_uri())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRUSTSER_"))}
    env.update(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "TRUSTSER_TRIAL_RUNNER": "scale_runners:fake",
            "SCALE_CALLS": str(calls),
            "SCALE_FAKE_SECONDS": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "PYTHONWARNINGS": "ignore",
        }
    )

    def mlflow_run(*params: str) -> str:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "run",
                str(REPO),
                "-e",
                "study",
                "--env-manager",
                "local",
                "--experiment-name",
                "project-study",
                "-P",
                f"space={TESTS / 'spaces' / 'six.yaml'}",
                "-P",
                f"storage={storage}",
                "-P",
                "study_name=project",
                *params,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    first_out = mlflow_run("-P", "n_trials=3")
    assert "3 evaluated, 0 reused, 0 failed" in first_out
    second_out = mlflow_run()  # the rest of the grid
    assert "3 evaluated, 0 reused, 0 failed" in second_out

    # resumed: each of the 6 configurations evaluated exactly once over the two invocations
    started = Counter((c["backbone"], c["unfreeze_top"]) for c in read_calls(calls) if c["event"] == "start")
    assert len(started) == 6 and set(started.values()) == {1}
    study = optuna.load_study(study_name="project", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6 and len(study.get_trials()) == 6

    # one project run per invocation, both the study's, the second tagged as resuming the first
    first, second = study.user_attrs["mlflow_run_ids"]
    assert study.user_attrs["mlflow_run_id"] == second != first
    runs = {run_id: client.get_run(run_id) for run_id in (first, second)}
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.project.entryPoint"] == "study"
        assert run.data.tags["optuna_study_name"] == "project" and run.data.tags["trustser.kind"] == "study"
    assert runs[first].data.params["n_trials"] == "3"
    assert "trustser.resumes_run" not in runs[first].data.tags
    assert runs[second].data.tags["trustser.resumes_run"] == first
    assert runs[second].data.tags["trustser.study_runs"] == "2"

    # each trial <-> its nested run; trials stay under the invocation that evaluated them
    front = {t.number for t in study.best_trials}
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna_trial_number"] == str(t.number)
        assert run.data.tags["optuna_study_name"] == "project"
        assert run.data.tags["mlflow.parentRunId"] == (first if t.number < 3 else second)
        assert run.data.tags["pareto"] == ("true" if t.number in front else "false")

    # the second run holds the whole study's front
    artifacts = {a.path for a in client.list_artifacts(second)}
    assert {"pareto.json", "pareto.csv", "pareto.png", "space.json"} <= artifacts
    table = Path(client.download_artifacts(second, "pareto.csv", str(tmp_path))).read_text().splitlines()
    assert {int(line.split(",")[0]) for line in table[1:]} == front

"""Where runs go: the default local store, and ``mlflow run``'s project run becoming the parent run.

``mlflow run . -P ...`` creates the project run, logs the ``-P`` values as string params and starts our command with
``MLFLOW_RUN_ID`` set; MLflow refuses to re-log a param with another value, so a resolved value that differs is
logged under ``resolved.KEY``. These tests recreate that situation without spawning ``mlflow run``.
"""

from __future__ import annotations


import mlflow

from trustser import tracking
from trustser.experiment import RunConfig, TrustConfig, run_experiment
from trustser.training import TrainConfig


def test_without_a_tracking_uri_runs_go_to_a_sqlite_file_here_with_absolute_artifacts(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    uri = tracking.setup_tracking("default-store")
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name("default-store")
    assert experiment.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert (tmp_path / "mlflow.db").is_file()


def test_a_sqlite_store_elsewhere_keeps_its_artifacts_beside_its_database(tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'runs.db'}")
    monkeypatch.chdir(tmp_path)  # not where the database is
    tracking.setup_tracking("elsewhere")
    experiment = mlflow.MlflowClient().get_experiment_by_name("elsewhere")
    assert experiment.artifact_location == (store / "mlartifacts").as_uri()


def test_under_mlflow_run_the_project_run_is_the_parent_and_conflicting_params_are_resolved(mini_emodb, monkeypatch):
    tracking.setup_tracking("project")
    client = mlflow.MlflowClient()
    project = client.create_run(client.get_experiment_by_name("project").experiment_id)
    for key, value in {
        "backbone": "apc",
        "dataset": "emodb",
        "folds": "1",
        "random_init": "true",
        "weights": "",
        "epochs": "1",
    }.items():  # what `mlflow run -P ...` logs, as strings
        client.log_param(project.info.run_id, key, value)
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)

    result = run_experiment(
        RunConfig(
            backbone="apc",
            dataset="emodb",
            data_root=str(mini_emodb),
            folds="1",
            random_init=True,
            max_seconds=1.0,
            train=TrainConfig(schedule="paper", epochs=1),
            progress=False,
            trust=TrustConfig(safety=False, probes=False, measure_cost=False),
        )
    )
    assert result.parent_run_id == project.info.run_id
    params = client.get_run(project.info.run_id).data.params
    assert params["backbone"] == "apc" and params["weights"] == ""  # mlflow run's values are kept
    assert params["resolved.weights"] == "random" and params["resolved.random_init"] == "True"
    assert "resolved.backbone" not in params  # equal values are not duplicated
    folds = client.search_runs(
        [project.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{project.info.run_id}'"
    )
    assert [r.data.tags["fold"] for r in folds] == ["fold1"]
    assert "test_uar_mean" in client.get_run(project.info.run_id).data.metrics

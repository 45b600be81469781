"""A sweep through the real ``run_experiment`` (random-init APC on a tiny EmoDB subset cut to 1 s clips, PostgreSQL
storage, the MLflow server) SIGKILLed mid-fold or mid-extraction and started again with the same command finishes
with exactly one FINISHED run per (backbone, dataset, fold, configuration); the killed runs are KILLED, the killed
trial FAIL, its finished folds reused by the retry (not trained again), and no cached feature is computed again (the
feature cache's counters, file mtimes and bytes).

The kill lands at a known point: the runner (tests/scale_runners.py ``real``) hangs there after writing a marker file,
and the test kills the sweep's whole process group once the marker appears."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from scale_fixtures import FAST_HEARTBEAT, Sweep, tail, wait_for_file, worker_env, write_space

from trustser.features import read_entry

pytestmark = [pytest.mark.scale, pytest.mark.slow]


def entries(cache: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.rglob("*.safetensors")}


def runs_by_id(client, experiment_name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(experiment_name)
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}


def trial_run_of(run, runs: dict):
    """The trial run above ``run`` (itself included), None for the study run."""
    while run is not None and run.data.tags.get("trustser.kind") != "trial":
        run = runs.get(run.data.tags.get("mlflow.parentRunId", ""))
    return run


def kill_and_resume(tmp_path, mini_emodb, storage, tracking, experiment, sweep, name, search, folds, pause_at):
    """Start the sweep, SIGKILL it where ``pause_at`` says, snapshot the cache, run the same command again."""
    space = write_space(tmp_path / "space.yaml", name, search, data_root=str(mini_emodb), folds=folds)
    args = ["study", "--space", str(space), "--experiment", experiment, *FAST_HEARTBEAT, "--no-progress"]
    log, paused = tmp_path / "log", tmp_path / "paused"
    base = dict(SCALE_CALLS=str(tmp_path / "calls"))
    first = sweep.start(
        args,
        worker_env(storage, tracking, "scale_runners:real", **base, SCALE_PAUSE_AT=pause_at, SCALE_PAUSED=str(paused)),
        log,
    )
    wait_for_file(paused, first, log)
    cache = Path(os.environ["TRUSTSER_CACHE"])
    before = entries(cache)
    Sweep.kill(first)  # SIGKILL to the sweep's process group
    assert first.returncode == -9
    assert sweep.run(args, worker_env(storage, tracking, "scale_runners:real", **base), log) == 0, tail(log)
    return before, entries(cache), cache


def check_trials(storage: str, name: str, n_configurations: int):
    study = optuna.load_study(study_name=name, storage=storage)
    failed = study.get_trials(states=(TrialState.FAIL,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(failed) == 1, f"only the killed trial is FAIL: {[t.user_attrs.get('error') for t in failed]}"
    assert len(complete) == len({t.user_attrs["config_hash"] for t in complete}) == n_configurations
    assert [t.system_attrs.get("failed_trial") for t in complete].count(failed[0].number) == 1  # retried once
    return failed[0], complete


def check_killed_tree(client, runs: dict, killed_trial) -> list:
    """The killed trial's MLflow run and every run still under it are KILLED (its finished folds moved to the retry);
    returns them."""
    dead = killed_trial.user_attrs["mlflow_run_id"]
    tree = [r for r in runs.values() if (trial := trial_run_of(r, runs)) and trial.info.run_id == dead]
    assert tree and {r.info.status for r in tree} == {"KILLED"}
    assert all("died" in r.data.tags["trustser.killed"] for r in tree)
    return tree


def test_a_sweep_killed_mid_fold_resumes_to_one_finished_run_per_fold_and_configuration(
    tmp_path, mini_emodb, optuna_storage, tracking_server, experiment_name, sweep
):
    search = {"backbone": ["apc"], "width": [32, 64]}
    before, after, cache = kill_and_resume(
        tmp_path,
        mini_emodb,
        optuna_storage,
        tracking_server,
        experiment_name,
        sweep,
        "mid-fold",
        search,
        "1,2",
        "fold:2",
    )
    n_clips = len(list((mini_emodb / "wav").iterdir()))
    assert len(before) == n_clips and after == before  # extraction was done: nothing rewritten, nothing added

    killed, complete = check_trials(optuna_storage, "mid-fold", 2)
    client = mlflow.MlflowClient(tracking_uri=tracking_server)
    runs = runs_by_id(client, experiment_name)
    folds = [r for r in runs.values() if "fold" in r.data.tags]
    finished = Counter(
        (
            r.data.tags["backbone"],
            r.data.tags["dataset"],
            r.data.tags["fold"],
            trial_run_of(r, runs).data.tags["config_hash"],
        )
        for r in folds
        if r.info.status == "FINISHED"
    )
    assert set(finished.values()) == {1} and len(finished) == 2 * 2  # (configuration, fold) pairs
    assert {key[3] for key in finished} == {t.user_attrs["config_hash"] for t in complete}

    tree = check_killed_tree(client, runs, killed)
    killed_folds = {r.data.tags["fold"]: r for r in tree if "fold" in r.data.tags}
    assert set(killed_folds) == {"fold2"}  # killed during fold 2: fold 1 had finished and the retry took it over
    dead_experiment = next(r for r in tree if r.data.tags.get("trustser.kind") == "experiment")
    reused = [r for r in folds if r.data.tags.get("trustser.reparented_from") == dead_experiment.info.run_id]
    assert [(r.data.tags["fold"], r.info.status) for r in reused] == [("fold1", "FINISHED")]
    retry_experiment = runs[reused[0].data.tags["mlflow.parentRunId"]]
    assert retry_experiment.info.status == "FINISHED" and retry_experiment.data.metrics["folds_reused"] == 1
    assert trial_run_of(retry_experiment, runs).data.tags["config_hash"] == killed.user_attrs["config_hash"]

    experiments = [
        r
        for r in runs.values()
        if "fold" not in r.data.tags and r.data.tags.get("backbone") and r.info.status == "FINISHED"
    ]
    assert len(experiments) == 2
    assert all(
        r.data.metrics["features_computed"] == 0 and r.data.metrics["features_reused"] == n_clips for r in experiments
    )


def test_a_sweep_killed_mid_extraction_resumes_without_recomputing_the_cached_features(
    tmp_path, mini_emodb, optuna_storage, tracking_server, experiment_name, sweep
):
    before, after, cache = kill_and_resume(
        tmp_path,
        mini_emodb,
        optuna_storage,
        tracking_server,
        experiment_name,
        sweep,
        "mid-extraction",
        {"backbone": ["apc"]},
        "1",
        "extract:5",
    )
    n_clips = len(list((mini_emodb / "wav").iterdir()))
    assert len(before) == 5
    assert {p: after[p] for p in before} == before  # same mtime and bytes: not recomputed, not rewritten
    assert len(after) == n_clips and not list(cache.rglob(".*.tmp"))  # write_atomically's temporaries
    for path in after:
        read_entry(path)  # every entry verifies

    killed, complete = check_trials(optuna_storage, "mid-extraction", 1)
    client = mlflow.MlflowClient(tracking_uri=tracking_server)
    runs = runs_by_id(client, experiment_name)
    tree = check_killed_tree(client, runs, killed)
    assert not [r for r in tree if "fold" in r.data.tags]  # killed before any fold started
    finished = [r for r in runs.values() if r.data.tags.get("backbone") and r.info.status == "FINISHED"]
    experiment_run = next(r for r in finished if "fold" not in r.data.tags)
    assert [r.data.tags["fold"] for r in finished if "fold" in r.data.tags] == ["fold1"]
    assert experiment_run.data.metrics["features_computed"] == n_clips - 5
    assert experiment_run.data.metrics["features_reused"] == 5

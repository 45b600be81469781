"""A study worked on by several processes over one PostgreSQL storage and one MLflow server: every planned
configuration is evaluated exactly once, a worker killed mid-trial is detected by its heartbeat and its configuration
evaluated again by another, coordinators starting together queue each configuration once, and workers that sample
the same configuration evaluate it once and reuse the result.

Trials here are evaluated by the fake runner of tests/scale_runners.py (a sleep and a deterministic summary),
injected through TRUSTSER_TRIAL_RUNNER; tests/test_scale_resume.py runs the real ``run_experiment``."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from itertools import product

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from scale_fixtures import FAST_HEARTBEAT, SPACE_BASE, tail, wait_for_file, worker_env, write_space
from scale_runners import read_calls

pytestmark = pytest.mark.scale

GRID = {"backbone": ["whisper_tiny", "apc", "wav2vec2_base"], "unfreeze_top": [0, 1], "width": [64, 128]}
SMALL = {"backbone": ["whisper_tiny", "apc"], "unfreeze_top": [0, 1]}


def configurations(grid: dict) -> Counter:
    return Counter(product(*(grid.get(k, [128]) for k in ("backbone", "unfreeze_top", "width"))))


def calls(path, event: str) -> Counter:
    return Counter((c["backbone"], c["unfreeze_top"], c["width"]) for c in read_calls(path) if c["event"] == event)


def key(params: dict) -> tuple:
    return params["backbone"], params["unfreeze_top"], params.get("width", 128)


def study_args(space, experiment: str, workers: int, *extra: str) -> list[str]:
    return [
        "study",
        "--space",
        str(space),
        "--experiment",
        experiment,
        "--workers",
        str(workers),
        *FAST_HEARTBEAT,
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_four_workers_evaluate_every_planned_configuration_exactly_once_and_log_it_to_the_server(
    tmp_path, optuna_storage, tracking_server, experiment_name, sweep
):
    space, log, record = write_space(tmp_path / "space.yaml", "four", GRID), tmp_path / "log", tmp_path / "calls"
    env = worker_env(
        optuna_storage, tracking_server, "scale_runners:fake", SCALE_CALLS=str(record), SCALE_FAKE_SECONDS="0.5"
    )
    assert sweep.run(study_args(space, experiment_name, 4), env, log) == 0, tail(log)

    planned = configurations(GRID)
    assert calls(record, "start") == planned  # none started twice, so none ran twice at the same time
    assert calls(record, "end") == planned
    assert len({c["pid"] for c in read_calls(record)}) >= 2, "the work was not shared among the workers"

    study = optuna.load_study(study_name="four", storage=optuna_storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(planned)  # no stray, failed or repeated trial
    assert Counter(key(t.params) for t in trials) == planned

    client = mlflow.MlflowClient(tracking_uri=tracking_server)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("trustser.kind") == "trial"]
    assert sorted(r.info.run_id for r in trial_runs) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    assert {r.info.status for r in trial_runs} == {"FINISHED"}
    parent = study.user_attrs["mlflow_run_id"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent}
    assert client.get_run(parent).info.status == "FINISHED"
    assert "pareto.json" in {a.path for a in client.list_artifacts(parent)}  # artifacts served by the server


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_detected_by_its_heartbeat_and_its_configuration_retried(
    tmp_path, optuna_storage, tracking_server, experiment_name, sweep
):
    space, log, record = write_space(tmp_path / "space.yaml", "killed", SMALL), tmp_path / "log", tmp_path / "calls"
    hang = tmp_path / "hang"
    env = worker_env(
        optuna_storage,
        tracking_server,
        "scale_runners:fake",
        SCALE_CALLS=str(record),
        SCALE_FAKE_SECONDS="0.5",
        SCALE_HANG=str(hang),
    )
    process = sweep.start(study_args(space, experiment_name, 2), env, log)
    killed_pid = int(wait_for_file(hang, process, log))
    os.kill(killed_pid, signal.SIGKILL)  # one worker dies mid-trial; the other goes on
    process.wait(timeout=240)
    assert process.returncode == 1 and "worker exit codes" in tail(log), tail(log)

    planned = configurations(SMALL)
    assert calls(record, "end") == planned  # each configuration finished exactly once
    killed = [c for c in read_calls(record) if c["pid"] == killed_pid and c["event"] == "start"]
    assert len(killed) == 1 and calls(record, "start") - planned == Counter({key(killed[0]): 1})

    study = optuna.load_study(study_name="killed", storage=optuna_storage)
    failed = study.get_trials(states=(TrialState.FAIL,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(failed) == 1 and Counter(key(t.params) for t in complete) == planned
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params

    client = mlflow.MlflowClient(tracking_uri=tracking_server)
    dead = client.get_run(failed[0].user_attrs["mlflow_run_id"])
    assert dead.info.status == "KILLED" and "died" in dead.data.tags["trustser.killed"]
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in complete} == {"FINISHED"}


def test_coordinators_starting_together_queue_each_configuration_once(optuna_storage):
    from trustser.study.space import parse_space
    from trustser.study.storage import make_storage, open_study, storage_lock
    from trustser.study.trial_queue import enqueue_grid

    space = parse_space({**SPACE_BASE, "name": "race", "search": GRID})
    open_study(optuna_storage, "race", space, make_storage(optuna_storage))
    start, queued, errors = threading.Barrier(4), [], []

    def coordinator() -> None:
        try:
            storage = make_storage(optuna_storage)  # a storage (and connection pool) of its own, like a process
            study = optuna.load_study(study_name="race", storage=storage)
            start.wait()
            with storage_lock(storage):
                queued.append(enqueue_grid(study, space))
        except Exception as exc:  # surfaces in the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=coordinator) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(queued) == [0, 0, 0, len(configurations(GRID))]
    waiting = optuna.load_study(study_name="race", storage=optuna_storage).get_trials(states=(TrialState.WAITING,))
    assert Counter(key(t.system_attrs["fixed_params"]) for t in waiting) == configurations(GRID)


@pytest.mark.slow
def test_workers_sampling_the_same_configuration_evaluate_it_once_and_reuse_the_result(
    tmp_path, optuna_storage, tracking_server, experiment_name, sweep
):
    # both workers' random samplers have the same seed: they draw the same configurations at the same moments
    grid = {"backbone": ["whisper_tiny", "apc"]}
    space = write_space(tmp_path / "space.yaml", "repeats", grid, sampler={"kind": "random", "seed": 1})
    log, record = tmp_path / "log", tmp_path / "calls"
    env = worker_env(
        optuna_storage, tracking_server, "scale_runners:fake", SCALE_CALLS=str(record), SCALE_FAKE_SECONDS="2"
    )
    assert sweep.run(study_args(space, experiment_name, 2, "--n-trials", "4"), env, log) == 0, tail(log)

    evaluated = calls(record, "start")
    assert set(evaluated.values()) == {1}, f"a configuration was evaluated twice: {evaluated}"
    study = optuna.load_study(study_name="repeats", storage=optuna_storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    reused = [t for t in complete if "reused_from_trial" in t.user_attrs]
    assert len(complete) == 4 and len(reused) == 4 - sum(evaluated.values()) > 0
    computed = {t.user_attrs["config_hash"]: t.values for t in complete if "reused_from_trial" not in t.user_attrs}
    assert all(t.values == computed[t.user_attrs["config_hash"]] for t in reused)

"""A killed ``trustser run`` resumes: the same command again marks the dead parent and fold runs KILLED, reuses the
folds that finished (moved under the new parent, not computed again) and leaves exactly one FINISHED run per
(backbone, dataset, fold, configuration); the summary, pooled metrics and deployable model are those of a whole run.

The kill lands at a known point without any test hook in trustser: the ``trustser run`` process is started through a
small wrapper (``HOOK``) that counts every ``evaluate_fold`` call in a file and hangs inside the fold named by
``RESUME_HANG_IN`` after writing a marker file; the test SIGKILLs the process group once the marker appears."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from trustser import tracking

HOOK = r"""
import os, sys, time
import trustser.experiment as experiment

real = experiment.evaluate_fold

def counted(index, features, fold, *args, **kwargs):
    with open(os.environ["RESUME_CALLS"], "a") as f:
        f.write(fold.name + "\n")
    if fold.name == os.environ.get("RESUME_HANG_IN"):
        marker = os.environ["RESUME_MARKER"]
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        while True:
            time.sleep(60)
    return real(index, features, fold, *args, **kwargs)

experiment.evaluate_fold = counted
from trustser.cli import main
main(sys.argv[1:], prog_name="trustser")
"""


def trustser_run(data_root: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        HOOK,
        "run",
        "--backbone",
        "whisper_tiny",
        "--random-init",
        "--data-root",
        str(data_root),
        "--folds",
        "1,2",
        "--schedule",
        "paper",
        "--epochs",
        "1",
        "--no-safety",
        "--no-probes",
        "--no-cost",
        "--bootstrap",
        "0",
        "--no-progress",
    ]


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def wait_for(marker: Path, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"trustser run exited ({process.returncode}) before hanging:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no hang within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def uar_of_predictions(paths: list[str]) -> float:
    from trustser import EMOTIONS
    from trustser.metrics.performance import uar

    rows = [row for path in paths for row in csv.DictReader(open(path, newline=""))]
    y_true = np.array([EMOTIONS.index(r["true"]) for r in rows])
    y_pred = np.array([EMOTIONS.index(r["predicted"]) for r in rows])
    return uar(y_true, y_pred, len(EMOTIONS))


@pytest.mark.slow
def test_a_run_killed_during_fold_2_resumes_reusing_fold_1_and_leaves_one_finished_run_per_fold(tmp_path, mini_emodb):
    tracking.setup_tracking()  # this process reads the store the subprocesses write (conftest's, per test)
    calls, marker, log = tmp_path / "calls", tmp_path / "hanging", tmp_path / "log"
    env = {**os.environ, "RESUME_CALLS": str(calls), "RESUME_MARKER": str(marker), "PYTHONWARNINGS": "ignore"}
    first = start(trustser_run(mini_emodb), {**env, "RESUME_HANG_IN": "fold2"}, log, tmp_path)
    try:
        wait_for(marker, first, log)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        first.wait()
    assert first.returncode == -signal.SIGKILL

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("trustser")
    before = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert {r.info.status for r in before.values()} >= {"RUNNING"}  # what the kill leaves: RUNNING forever
    old_fold1 = next(r for r in before.values() if r.data.tags.get("fold") == "fold1")
    assert old_fold1.info.status == "FINISHED"

    second = start(trustser_run(mini_emodb), env, log, tmp_path)
    assert second.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert calls.read_text().split() == ["fold1", "fold2", "fold2"]  # fold 1 was not computed again

    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.status: r for r in runs if r.data.tags.get("trustser.kind") == "experiment"}
    folds = [r for r in runs if r.data.tags.get("trustser.kind") == "fold"]
    assert len(parents) == 2 and set(parents) == {"KILLED", "FINISHED"}
    dead, new = parents["KILLED"], parents["FINISHED"]
    assert dead.info.run_id in before and "died" in dead.data.tags["trustser.killed"]
    assert dead.data.tags["trustser.resumed_by"] == new.info.run_id
    assert new.data.tags["trustser.resumes_run"] == dead.info.run_id
    assert new.data.tags["trustser.config_hash"] == dead.data.tags["trustser.config_hash"]
    assert new.data.tags["trustser.reused_folds"] == f"fold1={old_fold1.info.run_id}"

    finished = sorted((r.data.tags["fold"], r.info.run_id) for r in folds if r.info.status == "FINISHED")
    killed = [r for r in folds if r.info.status == "KILLED"]
    assert [name for name, _ in finished] == ["fold1", "fold2"]  # exactly one FINISHED run per fold
    assert finished[0][1] == old_fold1.info.run_id  # the reused run itself, now under the new parent
    assert [r.data.tags["fold"] for r in killed] == ["fold2"] and killed[0].info.run_id in before
    assert len(folds) == 3
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{new.info.run_id}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted(run_id for _, run_id in finished)
    assert client.get_run(old_fold1.info.run_id).data.tags["trustser.reparented_from"] == dead.info.run_id

    # the parent's numbers are those of a run that was never interrupted
    metrics = new.data.metrics
    fold_uars = [client.get_run(run_id).data.metrics["test_uar"] for _, run_id in finished]
    assert metrics["test_uar_mean"] == pytest.approx(np.mean(fold_uars)) and metrics["folds_reused"] == 1
    predictions = []
    for name, run_id in finished:
        (tmp_path / name).mkdir()
        predictions.append(client.download_artifacts(run_id, "predictions.csv", str(tmp_path / name)))
    assert metrics["test_uar_pooled"] == pytest.approx(uar_of_predictions(predictions))  # per-clip outcomes reused
    chosen = dict(finished)[new.data.params["model_fold"]]
    from safetensors.torch import load_file

    deployed = load_file(
        mlflow.artifacts.download_artifacts(
            f"runs:/{new.info.run_id}/model/artifacts/head.safetensors", dst_path=str(tmp_path / "deployed")
        )
    )
    trained = load_file(client.download_artifacts(chosen, "resume/head.safetensors", str(tmp_path / "trained")))
    assert deployed.keys() == trained.keys() and all(np.array_equal(deployed[k], trained[k]) for k in deployed)


def test_the_process_behind_a_run_is_alive_dead_or_unknown():
    assert tracking.process_state(tracking.process_tags()) == "alive"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tracking.process_state({**tracking.process_tags(), tracking.PID_TAG: str(gone.pid)}) == "dead"
    if tracking.process_start(os.getpid()):  # Linux: a live pid that started at another time is a reused pid
        reused = {**tracking.process_tags(), tracking.START_TAG: "another-boot/1"}
        assert tracking.process_state(reused) == "dead"
    elsewhere = {**tracking.process_tags(), tracking.HOST_TAG: socket.gethostname() + "-elsewhere"}
    assert tracking.process_state(elsewhere) == "unknown"
    assert tracking.process_state({}) == "unknown"


def test_a_run_of_a_live_or_remote_process_is_left_running_and_a_finished_configuration_runs_again(fold1_emodb):
    from trustser.experiment import RunConfig, TrustConfig, run_experiment
    from trustser.study.space import config_hash
    from trustser.training import TrainConfig

    config = RunConfig(
        backbone="whisper_tiny",
        dataset="emodb",
        data_root=str(fold1_emodb),
        folds="1",
        random_init=True,
        train=TrainConfig(schedule="paper", epochs=1),
        progress=False,
        log_model=False,
        trust=TrustConfig(safety=False, probes=False, measure_cost=False, bootstrap_resamples=0),
    )
    first = run_experiment(config)
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(first.parent_run_id).info.experiment_id
    base = {"trustser.config_hash": config_hash(config), "trustser.resumable": "true", "trustser.kind": "experiment"}
    live = client.create_run(experiment_id, tags={**base, **tracking.process_tags()}).info.run_id
    remote = client.create_run(
        experiment_id, tags={**base, **tracking.process_tags(), tracking.HOST_TAG: "another-machine"}
    ).info.run_id

    second = run_experiment(config)
    assert second.parent_run_id != first.parent_run_id and second.summary["folds_reused"] == 0
    assert second.folds[0].run_id != first.folds[0].run_id  # finished: measured again, nothing reused
    assert client.get_run(live).info.status == client.get_run(remote).info.status == "RUNNING"
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_a_fold_logged_for_resuming_comes_back_exactly_fine_tuned_head_and_per_clip_outcomes_included():
    import torch

    from trustser import EMOTIONS
    from trustser.backbones.loading import load_backbone
    from trustser.experiment import FoldResult, RunConfig, load_fold_state, log_fold_state
    from trustser.finetune import build_finetune_model
    from trustser.metrics.headline import TestOutcomes
    from trustser.training import TrainConfig, TrainResult

    backbone, _ = load_backbone("whisper_tiny", None, True, 0, offline=True)
    config = RunConfig(backbone="whisper_tiny", unfreeze_top=1, train=TrainConfig(width=16))
    torch.manual_seed(1)
    head = build_finetune_model(backbone, 1, len(EMOTIONS), 16)
    rng = np.random.default_rng(0)
    outcomes = TestOutcomes(
        np.array(["03", "08", "03"], dtype=object),
        np.array(["male", None, "male"], dtype=object),
        np.array([0, 3, 1]),
        np.array([0, 2, 1]),
        rng.dirichlet(np.ones(4), 3),
        attack_speakers=np.array(["08"], dtype=object),
        attack_success=np.array([True]),
    )
    train = TrainResult(head, 2, 0.5, [{"epoch": 1, "train_loss": 1.3, "val_uar": 0.4}], 6, "epochs")
    logged = FoldResult("fold3", None, {"test_uar": 0.75, "fairness_equality_of_odds": float("nan")}, train, outcomes)
    tracking.setup_tracking()
    with mlflow.start_run() as run:
        log_fold_state(logged)
    back = load_fold_state(mlflow.MlflowClient(), mlflow.MlflowClient().get_run(run.info.run_id), config, backbone)

    assert back.fold == "fold3" and back.run_id == run.info.run_id
    assert back.metrics["test_uar"] == 0.75 and np.isnan(back.metrics["fairness_equality_of_odds"])
    assert (back.train.best_epoch, back.train.best_val_uar, back.train.history) == (2, 0.5, train.history)
    assert type(back.train.head) is type(head) and hasattr(back.train.head, "top")  # the fine-tuned top layers too
    restored = back.train.head.state_dict()
    assert restored.keys() == head.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in head.state_dict().items())
    for name in TestOutcomes.__dataclass_fields__:
        a, b = getattr(outcomes, name), getattr(back.outcomes, name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist(), name

"""Several workers on one study (processes on one machine or on many) sharing one Optuna storage and one MLflow
tracking server.

Run:   trustser study  --space studies/quick.yaml --storage postgresql+psycopg://... --workers 4   # 4 local workers
       trustser study  --space studies/quick.yaml --storage postgresql+psycopg://... --workers 0   # queue only, then
       MLFLOW_TRACKING_URI=http://HOST:5000 trustser worker --storage postgresql+psycopg://... --study-name quick
Look:  the tracking server's UI; ``optuna-dashboard <storage URL>``. The whole recipe: docs/scale-out.md.

How no configuration is evaluated twice at the same time, and how a dead worker's trial comes back:

- Queue. ``trustser study`` enqueues each grid configuration as one WAITING trial. It holds the storage lock
  (``storage_lock``: a PostgreSQL advisory lock, a MySQL named lock, a file lock beside a SQLite file) while it checks
  which configurations no trial holds yet (COMPLETE with this config hash, or WAITING / RUNNING with these params), so
  two coordinators starting at once enqueue each configuration once. Optuna hands a WAITING trial to exactly one
  worker: it flips the row to RUNNING under ``SELECT ... FOR UPDATE``. ``trustser worker`` never enqueues.
- Claims. Before evaluating, a trial claims its configuration hash under the same lock (``claim_configuration``). A
  second trial with the same configuration (a random/nsga2 repeat, or another study in the same storage) waits for
  the holder and then reuses its stored result instead of computing it again.
- Heartbeats. A RUNNING trial records a heartbeat every ``Heartbeat.interval`` s. A trial silent for
  ``Heartbeat.grace`` s is marked FAIL by the first worker that looks (Optuna's ``fail_stale_trials``: one row update,
  one winner) and Optuna's retry callback enqueues a WAITING copy (at most ``max_retry`` times). The dead trial's
  MLflow runs (trial, experiment, folds; RUNNING or already FINISHED) are marked KILLED, so each (backbone, dataset,
  fold, configuration) keeps exactly one FINISHED run.
- Draining. A worker takes WAITING trials until none is left, then waits while other trials are RUNNING: a live one
  finishes, a dead one comes back as WAITING once stale. A trial that *raised* stays FAIL (its error is
  deterministic more often than not); the next ``trustser study`` enqueues its configuration again.

The grace period must exceed the longest gap in a live worker's heartbeats (a thread: seconds at most). A live worker
declared dead would finish its trial while the retry computes the same configuration again.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from typing import Callable

from trustser.errors import ConfigError
from trustser.study.space import StudySpace, parse_space
from trustser.study.storage import STORAGE_ENV, Heartbeat, make_storage, open_study, redact, resolve_study_name

log = logging.getLogger(__name__)

RUNNER_ENV = "TRUSTSER_TRIAL_RUNNER"
"""``module:function`` evaluating one RunConfig instead of ``run_experiment`` (a cheaper stand-in, for tests)."""


def runner_from_env() -> Callable | None:
    """The trial runner named by ``TRUSTSER_TRIAL_RUNNER`` (``module:function``), or None for ``run_experiment``."""
    spec = os.environ.get(RUNNER_ENV)
    if not spec:
        return None
    module, sep, name = spec.partition(":")
    try:
        if not sep:
            raise ValueError("expected module:function")
        runner = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{RUNNER_ENV}={spec!r}: {exc}") from None
    log.warning("trials are evaluated by %s (%s), not run_experiment", spec, RUNNER_ENV)
    return runner


def stored_space(study) -> StudySpace:
    """The space a study was created with (``trustser study`` stores it with the study)."""
    raw = study.user_attrs.get("space")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"study '{study.study_name}' holds no trustser space: create it with "
            "`trustser study --space FILE --storage URL --workers 0` first"
        )
    return parse_space(raw, f"study '{study.study_name}'")


def run_worker(
    storage: str,
    study_name: str | None = None,
    n_trials: int | None = None,
    heartbeat: Heartbeat | None = None,
    runner: Callable | None = None,
    progress: bool = False,
    front: bool = True,
):
    """Join an existing study: take its queued configurations (and, for random/nsga2 samplers, ``n_trials`` new
    ones) until none is left, then (``front``) log the Pareto front; returns the StudyResult of this worker's
    share."""
    import mlflow

    from trustser import tracking
    from trustser.study.runner import run_study  # the runner sits below the launcher

    name = resolve_study_name(storage, study_name)
    study = open_study(storage, name, storage_obj=make_storage(storage, heartbeat))
    space = stored_space(study)
    experiment = None
    parent_id = study.user_attrs.get("mlflow_run_id")
    if parent_id:
        uri = tracking.setup_tracking()
        client = mlflow.MlflowClient()
        try:
            experiment = client.get_experiment(client.get_run(parent_id).info.experiment_id).name
        except Exception:
            raise ConfigError(
                f"study '{name}' logs to MLflow run {parent_id}, which this worker's tracking store "
                f"{redact(uri)} does not hold: point MLFLOW_TRACKING_URI at the study's tracking "
                "server"
            ) from None
    return run_study(
        space,
        n_trials=n_trials,
        storage=storage,
        study_name=name,
        runner=runner,
        experiment=experiment,
        progress=progress,
        heartbeat=heartbeat,
        enqueue=False,
        front=front,
    )


def worker_command(
    study_name: str, heartbeat: Heartbeat, n_trials: int | None = None, progress: bool = False
) -> list[str]:
    command = [sys.executable, "-m", "trustser.cli"]
    if logging.getLogger().isEnabledFor(logging.INFO):
        command.append("--verbose")
    command += [
        "worker",
        "--study-name",
        study_name,
        "--heartbeat",
        str(heartbeat.interval),
        "--grace-period",
        str(heartbeat.grace),
        "--max-retry",
        str(heartbeat.max_retry),
    ]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    if not progress:
        command.append("--no-progress")
    return command + ["--no-front"]  # the coordinator logs the front once, after all workers


def run_local_workers(
    n: int, storage: str, study_name: str, heartbeat: Heartbeat, n_trials: int | None = None, progress: bool = False
) -> list[int]:
    """Start ``n`` ``trustser worker`` processes on the study and wait for them; returns their exit codes.

    The storage URL travels in the environment (``TRUSTSER_STORAGE``), not on a command line that other users of the
    machine can read. ``n_trials`` (random/nsga2 samplers) is shared out among the workers.
    """
    env = {**os.environ, STORAGE_ENV: storage}
    shares = [None] * n if n_trials is None else [n_trials // n + (i < n_trials % n) for i in range(n)]
    processes = [
        subprocess.Popen(worker_command(study_name, heartbeat, share, progress), env=env)
        for share in shares
        if share != 0
    ]
    try:
        return [p.wait() for p in processes]
    except BaseException:  # Ctrl-C or an error here: do not leave workers behind
        for p in processes:
            if p.poll() is None:
                p.terminate()
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise

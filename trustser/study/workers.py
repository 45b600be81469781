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

import fcntl
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from trustser.errors import ConfigError
from trustser.study.space import StudySpace, config_hash, parse_space

log = logging.getLogger(__name__)

RUNNER_ENV = "TRUSTSER_TRIAL_RUNNER"
"""``module:function`` evaluating one RunConfig instead of ``run_experiment`` (a cheaper stand-in, for tests)."""
STORAGE_ENV = "TRUSTSER_STORAGE"
"""The storage URL for ``trustser study`` / ``trustser worker`` when ``--storage`` is not given."""
LOCK_ID = int.from_bytes(b"trustser", "big") >> 1  # PostgreSQL advisory lock key (a signed 64-bit integer)
LOCK_TIMEOUT_S = 300  # a lock holder silent this long (machine gone) loses its lock to the server
POLL_S = 1.0


@dataclass(frozen=True)
class Heartbeat:
    """Failure detection of RUNNING trials: a beat every ``interval`` s, dead after ``grace`` s without one, retried
    at most ``max_retry`` times."""

    interval: int = 10
    grace: int = 60
    max_retry: int = 2

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval or self.max_retry < 0:
            raise ConfigError(f"heartbeat: need interval >= 1 s, grace period > interval, max retry >= 0; got "
                              f"interval {self.interval}, grace {self.grace}, max retry {self.max_retry}")


def make_storage(url: str, heartbeat: Heartbeat | None = None):
    """Optuna's RDB storage for ``url`` with heartbeats and the retry callback on (cached like ``get_storage``'s)."""
    import optuna
    from optuna.storages import RDBStorage

    heartbeat = heartbeat or Heartbeat()
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    # Optuna 4.9 renamed failed_trial_callback; both spellings exist until 6.0
    callback_arg = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                    in inspect.signature(RDBStorage).parameters else "failed_trial_callback")
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # survive a database restart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are marked experimental
        try:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            lock_engine = create_engine(url, poolclass=NullPool)
            try:
                with _engine_lock(lock_engine):  # on an empty database, one process creates Optuna's tables
                    rdb = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat.interval,
                                     grace_period=heartbeat.grace,
                                     **{callback_arg: retry(max_retry=heartbeat.max_retry)})
            finally:
                lock_engine.dispose()
        except ImportError as exc:
            raise ConfigError(f"storage {redact(url)}: its database driver is missing ({exc.__cause__ or exc}); "
                              "for PostgreSQL: pip install 'trustser[scale]' (psycopg)") from None
        except Exception as exc:  # bad URL, unreachable server, wrong password
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {redact(url)}: {first}") from None
    return optuna.storages.get_storage(rdb)


def redact(url: str) -> str:
    from trustser.study.runner import redact as _redact

    return _redact(url)


_process_lock = threading.Lock()


@contextmanager
def storage_lock(storage) -> Iterator[None]:
    """Mutual exclusion among all processes using ``storage``, held for a few queries at a time.

    PostgreSQL: a transaction-scoped advisory lock on a connection of its own (Optuna's sessions go on meanwhile);
    the server drops it when the holder's connection ends or stays idle ``LOCK_TIMEOUT_S``. MySQL: a named lock.
    SQLite (one machine by nature): an exclusive ``flock`` on ``<database>.trustser-lock``.
    """
    with _engine_lock(getattr(getattr(storage, "_backend", storage), "engine", None)):
        yield


@contextmanager
def _engine_lock(engine) -> Iterator[None]:
    dialect = engine.dialect.name if engine is not None else None
    if dialect == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = '{LOCK_TIMEOUT_S}s'"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_ID})
            try:
                yield
            finally:
                try:
                    conn.rollback()  # ends the transaction: releases the lock
                except Exception as exc:
                    log.warning("releasing the storage lock: %s", exc)
    elif dialect in ("mysql", "mariadb"):
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("SELECT GET_LOCK('trustser', :t)"), {"t": LOCK_TIMEOUT_S})
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK('trustser')"))
    elif dialect == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(f"{engine.url.database}.trustser-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:  # in-memory storage: one process
        with _process_lock:
            yield


def _params(trial) -> dict[str, Any]:
    # a queued trial keeps its configuration in the "fixed_params" system attr until it runs
    return trial.system_attrs.get("fixed_params") or trial.params


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def enqueue_grid(study, space: StudySpace, n_trials: int | None = None) -> int:
    """Queue the grid configurations (in the space's order, at most ``n_trials``) that no trial holds: not COMPLETE
    with this configuration's hash, not WAITING or RUNNING with its params. Call it holding ``storage_lock``.
    Returns how many were queued."""
    from optuna.trial import TrialState

    fail_stale_trials(study)  # a dead worker's RUNNING trial comes back as WAITING first
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("config_hash") for t in trials if t.state == TrialState.COMPLETE}
    held = {_key(_params(t)) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    todo = [p for p in space.grid() if config_hash(space.run_config(p)) not in done and _key(p) not in held]
    n = len(todo) if n_trials is None else min(n_trials, len(todo))
    for params in todo[:n]:
        study.enqueue_trial(params)
    log.info("study %s: %d of %d grid configurations queued now, %d already queued or running", study.study_name,
             n, space.grid_size, len(held))
    return n


def is_queued(trial) -> bool:
    """Whether an optuna Trial was taken from the queue (an enqueued configuration, or a retry of one)."""
    return bool(trial.params) or "fixed_params" in trial.storage.get_trial_system_attrs(trial._trial_id)


def claim_configuration(trial, chash: str, poll: float = POLL_S) -> None:
    """Make ``trial`` the only RUNNING trial in the storage evaluating configuration ``chash``; while another live
    trial holds it, wait (its result is then reused by the caller). Sets user attrs ``config_hash`` and
    ``config_claim`` (``<hash>@<study>#<trial number>``: a retried copy of a trial inherits the attr with the old
    number, which does not count as a claim)."""
    storage, me = trial.study._storage, (trial.study.study_name, trial.number)
    announced = False
    while True:
        with storage_lock(storage):
            holder = _claim_holder(storage, chash, me)
            if holder is None:
                trial.set_user_attr("config_claim", f"{chash}@{me[0]}#{me[1]}")
                trial.set_user_attr("config_hash", chash)
                return
        if not announced:
            log.info("trial %d waits: configuration %s is being evaluated by trial %d of study %s", me[1], chash,
                     holder[1], holder[0])
            announced = True
        _fail_stale(storage, holder[0])  # a dead holder would otherwise hold the claim forever
        time.sleep(poll)


def _claim_holder(storage, chash: str, me: tuple[str, int]) -> tuple[str, int] | None:
    from optuna.trial import TrialState

    for frozen in storage.get_all_studies():
        for t in storage.get_all_trials(frozen._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            who = (frozen.study_name, t.number)
            if who != me and t.user_attrs.get("config_claim") == f"{chash}@{who[0]}#{who[1]}":
                return who
    return None


def _fail_stale(storage, study_name: str) -> None:
    import optuna

    fail_stale_trials(optuna.load_study(study_name=study_name, storage=storage))


def fail_stale_trials(study) -> None:
    """Optuna's: RUNNING trials without a heartbeat for the grace period become FAIL, then the retry callback runs."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def mark_dead_trial_runs(study, parent_run_id: str) -> list[str]:
    """Mark KILLED the MLflow runs of this study's trials that died: a trial run still RUNNING whose trial is not
    (its heartbeat went stale and it was failed), with every run nested under it, FINISHED ones included (their
    configuration is evaluated again by the retry). Returns the run ids marked."""
    import mlflow
    from optuna.trial import TrialState

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    marked: list[str] = []
    for run in client.search_runs([experiment_id], filter_string=(
            f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'")):
        number = run.data.tags.get("optuna_trial_number", "")
        if run.data.tags.get("optuna_study_name") != study.study_name or not number.isdigit():
            continue
        state = states.get(int(number))
        if state is None or state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        reason = (f"trial {number} of study {study.study_name} died (no heartbeat; Optuna state {state.name}); its "
                  "configuration is evaluated again by a retried trial")
        marked += tracking.kill_run_tree(client, run, experiment_id, reason)
    if marked:
        log.warning("marked %d MLflow run(s) of dead trials KILLED", len(marked))
    return marked


def work(study, objective: Callable, n_trials: int | None, grid: bool, parent_run_id: str | None = None,
         poll: float = POLL_S) -> int:
    """Run trials one at a time: ``n_trials`` of them, or for a grid without a limit until the queue is empty and no
    trial is RUNNING anywhere (a dead one is failed after its grace period and comes back as WAITING). Returns how
    many trials this call ran."""
    from optuna.trial import TrialState

    ran, announced = 0, None
    while n_trials is None or ran < n_trials:
        fail_stale_trials(study)
        if parent_run_id:
            try:
                mark_dead_trial_runs(study, parent_run_id)
            except Exception as exc:  # the tracking server is down for a moment: the next round tries again
                log.warning("could not mark the runs of dead trials: %s", exc)
        if grid and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or n_trials is not None:
                break
            if announced != len(running):
                log.info("study %s: queue empty, waiting for %d running trial(s): %s", study.study_name, len(running),
                         ", ".join(str(t.number) for t in running))
                announced = len(running)
            time.sleep(poll)
            continue
        if grid:
            if not run_queued_trial(study, objective):
                continue  # another worker took the last queued configuration first: look again
        else:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        ran += 1
    return ran


def run_queued_trial(study, objective: Callable) -> bool:
    """Take one WAITING trial and evaluate it; False when none was left.

    ``study.optimize`` would create a fresh, sampled trial when another worker popped the last queued one between
    our look at the queue and its ``ask`` (a stray trial in a grid study). Here the look and the pop happen under
    ``storage_lock``, which every grid worker holds to pop, so the trial asked for is always a queued one.
    Heartbeats and the FAIL/COMPLETE bookkeeping follow ``optimize``'s (an exception fails the trial, is logged and
    does not stop the worker; Ctrl-C fails it and propagates).
    """
    import optuna
    from optuna.trial import TrialState

    with storage_lock(study._storage):
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        trial = study.ask()
    with _heartbeats(study._storage, trial._trial_id):
        try:
            values = objective(trial)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, exc)
            return True
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed with parameters %s: %r", trial.number, trial.params, exc)
            return True
    study.tell(trial, values)
    return True


@contextmanager
def _heartbeats(storage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (what ``optimize`` does for its trials)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:  # the database is away for a moment: the next beat tries again
                log.warning("heartbeat of trial %d: %s", trial_id, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
        raise ConfigError(f"study '{study.study_name}' holds no trustser space: create it with "
                          "`trustser study --space FILE --storage URL --workers 0` first")
    return parse_space(raw, f"study '{study.study_name}'")


def run_worker(storage: str, study_name: str | None = None, n_trials: int | None = None,
               heartbeat: Heartbeat | None = None, runner: Callable | None = None, progress: bool = False,
               front: bool = True):
    """Join an existing study: take its queued configurations (and, for random/nsga2 samplers, ``n_trials`` new
    ones) until none is left, then (``front``) log the Pareto front; returns the StudyResult of this worker's
    share."""
    import mlflow

    from trustser import tracking
    from trustser.study.runner import open_study, resolve_study_name, run_study

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
            raise ConfigError(f"study '{name}' logs to MLflow run {parent_id}, which this worker's tracking store "
                              f"{redact(uri)} does not hold: point MLFLOW_TRACKING_URI at the study's tracking "
                              "server") from None
    return run_study(space, n_trials=n_trials, storage=storage, study_name=name, runner=runner,
                     experiment=experiment, progress=progress, heartbeat=heartbeat, enqueue=False, front=front)


def worker_command(study_name: str, heartbeat: Heartbeat, n_trials: int | None = None,
                   progress: bool = False) -> list[str]:
    command = [sys.executable, "-m", "trustser.cli"]
    if logging.getLogger().isEnabledFor(logging.INFO):
        command.append("--verbose")
    command += ["worker", "--study-name", study_name, "--heartbeat", str(heartbeat.interval),
                "--grace-period", str(heartbeat.grace), "--max-retry", str(heartbeat.max_retry)]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    if not progress:
        command.append("--no-progress")
    return command + ["--no-front"]  # the coordinator logs the front once, after all workers


def run_local_workers(n: int, storage: str, study_name: str, heartbeat: Heartbeat, n_trials: int | None = None,
                      progress: bool = False) -> list[int]:
    """Start ``n`` ``trustser worker`` processes on the study and wait for them; returns their exit codes.

    The storage URL travels in the environment (``TRUSTSER_STORAGE``), not on a command line that other users of the
    machine can read. ``n_trials`` (random/nsga2 samplers) is shared out among the workers.
    """
    env = {**os.environ, STORAGE_ENV: storage}
    shares = [None] * n if n_trials is None else [n_trials // n + (i < n_trials % n) for i in range(n)]
    processes = [subprocess.Popen(worker_command(study_name, heartbeat, share, progress), env=env)
                 for share in shares if share != 0]
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

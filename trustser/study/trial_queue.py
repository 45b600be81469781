"""The grid queue of a study shared by several workers: queueing each configuration once, claiming a configuration
before evaluating it, failing trials whose heartbeat stopped (and killing their MLflow runs), and the loop a worker
runs over queued trials. How these fit together: ``trustser.study.workers``'s docstring.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from trustser.study.space import StudySpace, config_hash
from trustser.study.storage import storage_lock

log = logging.getLogger(__name__)

POLL_S = 1.0


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
    log.info(
        "study %s: %d of %d grid configurations queued now, %d already queued or running",
        study.study_name,
        n,
        space.grid_size,
        len(held),
    )
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
            log.info(
                "trial %d waits: configuration %s is being evaluated by trial %d of study %s",
                me[1],
                chash,
                holder[1],
                holder[0],
            )
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
    (its heartbeat went stale and it was failed), with every run nested under it that had not finished. FINISHED fold
    runs keep their status: the retried trial reuses them (``run_resume.resume_folds``) instead of computing a fold
    that took an hour again. Returns the run ids marked."""
    import mlflow
    from optuna.trial import TrialState

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    marked: list[str] = []
    for run in client.search_runs(
        [experiment_id],
        filter_string=(f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"),
    ):
        number = run.data.tags.get("optuna_trial_number", "")
        if run.data.tags.get("optuna_study_name") != study.study_name or not number.isdigit():
            continue
        state = states.get(int(number))
        if state is None or state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        reason = (
            f"trial {number} of study {study.study_name} died (no heartbeat; Optuna state {state.name}); its "
            "configuration is evaluated again by a retried trial, which reuses its finished folds"
        )
        marked += tracking.kill_run_tree(client, run, experiment_id, reason, finished_too=False)
    if marked:
        log.warning("marked %d MLflow run(s) of dead trials KILLED", len(marked))
    return marked


def work(
    study, objective: Callable, n_trials: int | None, grid: bool, parent_run_id: str | None = None, poll: float = POLL_S
) -> int:
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
                log.info(
                    "study %s: queue empty, waiting for %d running trial(s): %s",
                    study.study_name,
                    len(running),
                    ", ".join(str(t.number) for t in running),
                )
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

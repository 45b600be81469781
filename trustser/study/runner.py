"""Run a multi-objective Optuna study over a ``StudySpace``: one MLflow run per study, one nested run per trial.

Run:   trustser study --space studies/quick.yaml [--n-trials N] [--storage URL] [--study-name NAME]
Look:  mlflow ui --backend-store-uri sqlite:///mlflow.db
       optuna-dashboard sqlite:///optuna.db          (optional: pip install optuna-dashboard)

- Storage: ``sqlite:///<cwd>/optuna.db`` unless ``storage`` names another Optuna storage URL (e.g. PostgreSQL).
  A study is found again by name (``load_if_exists``), so running the same command again resumes it.
- Sampler ``grid``: each configuration of the space once, in the space's seeded order; configurations already
  COMPLETE in the study (or queued, or running in a live worker) are not enqueued again, so a stopped study resumes
  where it left off (failed or interrupted configurations are retried). ``random``/``nsga2``: Optuna's seeded
  samplers over the same choices.
- Workers: several processes or machines may work on one study (``trustser worker``, ``--workers N``); heartbeats
  detect dead ones and their trials are retried. How, in ``trustser.study.workers``.
- Reuse: a trial whose configuration (``config_hash`` of its RunConfig, a trial user attr) already has a COMPLETE
  trial anywhere in the storage takes that trial's stored summary instead of retraining (user attrs
  ``reused_from_study`` / ``reused_from_trial``).
- optuna-dashboard: the study's metric names are the objective names (``Study.set_metric_names``: the Pareto plot's
  axes and the trial table's value columns say ``performance``, ``privacy``, ...); each trial carries user attrs
  ``label`` (the configuration, as in the MLflow run name) and ``mlflow_run_id``.
- Cross-references: trial user attr ``mlflow_run_id``; trial run tags ``optuna_study_name``,
  ``optuna_trial_number``; the study's user attr ``mlflow_run_id`` is its current parent run; at the end every
  trial run is tagged ``pareto=true|false`` and the study run gets ``pareto.json``, ``pareto.csv``, ``pareto.png``
  and a radar chart.
- Study runs: a resumed study continues its parent run where it can. Under ``mlflow run`` (or in another MLflow
  experiment) each invocation brings its own run, which becomes the study run from then on: the study's user attr
  ``mlflow_run_ids`` lists all of them, oldest first (each trial stays nested under the run it was evaluated in),
  and a later one is tagged ``trustser.resumes_run`` (the run before it) and ``trustser.study_runs`` (how many).
- A trial whose runner raises is marked FAIL with the message in user attr ``error``; the study goes on.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trustser.errors import TrustserError
from trustser.study.pareto import Candidate
from trustser.study.space import StudySpace, config_hash, config_label
from trustser.study.storage import default_storage, make_storage, open_study, redact, storage_lock
from trustser.study import trial_queue

log = logging.getLogger(__name__)

TrialRunner = Callable[[Any], Mapping[str, float]]
"""Evaluates one configuration: a ``RunConfig`` in, a summary dict (``<metric>_mean`` ...) out."""


class ObjectiveMissingError(TrustserError):
    """The runner's summary lacks an objective's key, or holds NaN for it."""


def experiment_runner(config) -> dict[str, float]:
    """The real runner: ``run_experiment``, which nests its runs under the trial's MLflow run."""
    from trustser.experiment import run_experiment

    return run_experiment(config).summary


@dataclass
class StudyResult:
    study_name: str
    storage: str
    mlflow_run_id: str | None
    evaluated: int = 0  # trials this call computed with the runner
    reused: int = 0  # trials answered from an earlier trial with the same configuration
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    front: list[Candidate] = field(default_factory=list)


def objective_values(summary: Mapping[str, float], space: StudySpace) -> list[float]:
    values = []
    for o in space.objectives:
        if o.key not in summary:
            raise ObjectiveMissingError(
                f"run summary has no '{o.key}' (objective {o.name}); it holds: {', '.join(sorted(summary)[:40])}"
            )
        value = summary[o.key]
        if value is None or not math.isfinite(float(value)):
            raise ObjectiveMissingError(f"objective {o.name} ('{o.key}') is {value} for this configuration")
        values.append(float(value))
    return values


def _finite(summary: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in summary.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f if math.isfinite(f) else None
    return out


def find_previous(storage, chash: str, keys: list[str], prefer_study: str) -> tuple[str, Any] | None:
    """A COMPLETE trial anywhere in ``storage`` with this config hash and every objective key in its summary;
    the current study first, then earliest trial."""
    from optuna.trial import TrialState

    hits = []
    for frozen in storage.get_all_studies():
        for t in storage.get_all_trials(frozen._study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
            summary = t.user_attrs.get("summary") or {}
            if t.user_attrs.get("config_hash") == chash and all(summary.get(k) is not None for k in keys):
                hits.append((frozen.study_name != prefer_study, t.number, frozen.study_name, t))
    if not hits:
        return None
    _, _, name, trial = min(hits, key=lambda h: h[:3])
    return name, trial


def _start_study_run(study, url: str, experiment: str | None):
    """The study's MLflow parent run: ``mlflow run``'s run, else the one this study used before, else a new one."""
    import mlflow

    from trustser import tracking

    tracking.setup_tracking(experiment)
    previous = study.user_attrs.get("mlflow_run_id")
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run()  # under `mlflow run`: the project run is the study run
    if mlflow.active_run() is None and previous:
        try:
            return mlflow.start_run(run_id=previous)
        except Exception as exc:  # another tracking store, or the run lives in another experiment
            log.info("cannot continue study run %s (%s); starting a new one", previous, str(exc).splitlines()[0])
    return mlflow.start_run(run_name=f"study {study.study_name}", nested=mlflow.active_run() is not None)


def _record_study_run(study, run_id: str) -> None:
    """Make ``run_id`` the study's run (user attr ``mlflow_run_id``) and list it in ``mlflow_run_ids``; a run that
    follows another is tagged as resuming it, so the MLflow UI leads from either run to the other."""
    import mlflow

    previous = study.user_attrs.get("mlflow_run_id")
    runs = list(study.user_attrs.get("mlflow_run_ids") or ([previous] if previous else []))
    if run_id not in runs:
        if runs:
            mlflow.set_tags({"trustser.resumes_run": runs[-1], "trustser.study_runs": str(len(runs) + 1)})
        runs.append(run_id)
    study.set_user_attr("mlflow_run_ids", runs)
    study.set_user_attr("mlflow_run_id", run_id)


def run_study(
    space: StudySpace,
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    runner: TrialRunner | None = None,
    experiment: str | None = None,
    progress: bool = False,
    heartbeat: Any = None,
    enqueue: bool = True,
    work: bool = True,
    front: bool = True,
) -> StudyResult:
    """Evaluate the space's configurations (at most ``n_trials`` new trials; default: the rest of the grid).

    Several processes may run this on one study at once (``trustser.study.workers``): ``enqueue=False`` only takes
    queued configurations (``trustser worker``), ``work=False`` only creates the study, its MLflow run and its queue,
    ``front=False`` leaves logging the Pareto front to another process; ``heartbeat`` (a ``storage.Heartbeat``) sets
    how dead trials are detected and retried.
    """
    import contextlib

    import mlflow
    import optuna

    from trustser import tracking
    from trustser.study.pareto import log_front

    runner = runner or experiment_runner
    url = storage or default_storage()
    name = study_name or space.name
    storage_obj = make_storage(url, heartbeat)  # also used to look up earlier results across studies
    keys = [o.key for o in space.objectives]
    result = StudyResult(name, url, None)
    grid = space.sampler.kind == "grid"

    with contextlib.ExitStack() as stack:
        with storage_lock(storage_obj):  # one process at a time creates the study, its MLflow run, its queue
            study = open_study(url, name, space, storage_obj)
            parent = stack.enter_context(_start_study_run(study, url, experiment))
            _record_study_run(study, parent.info.run_id)
            if grid and enqueue:
                trial_queue.enqueue_grid(study, space, n_trials)
        result.mlflow_run_id = parent.info.run_id
        exp_name = mlflow.MlflowClient().get_experiment(parent.info.experiment_id).name
        mlflow.set_tags(
            {
                "optuna_study_name": name,
                "optuna_storage": redact(url),
                "trustser.kind": "study",
                "space_file": space.source,
                "sampler": space.sampler.kind,
            }
        )
        tracking.log_json(space.to_dict(), "space.json")
        # grid: the queued configurations (n_trials of them at most); samplers: n_trials new ones
        n = n_trials if grid or n_trials is not None else space.grid_size

        def objective(trial: optuna.Trial) -> list[float]:
            if grid and not trial_queue.is_queued(trial):  # another worker took the last queued configuration
                raise optuna.TrialPruned("grid study: no queued configuration left")
            params = {dim: trial.suggest_categorical(dim, list(choices)) for dim, choices in space.search}
            config = space.run_config(params, experiment=exp_name, progress=progress)
            chash = config_hash(config)
            trial_queue.claim_configuration(trial, chash)  # waits while another trial evaluates this configuration
            tags = {
                "optuna_study_name": name,
                "optuna_trial_number": str(trial.number),
                "config_hash": chash,
                "trustser.kind": "trial",
            }
            with mlflow.start_run(
                run_name=f"trial {trial.number}: {config_label(params)}", nested=True, tags=tags
            ) as run:
                trial.set_user_attr("mlflow_run_id", run.info.run_id)
                trial.set_user_attr("label", config_label(params))
                mlflow.log_params(params)
                try:
                    previous = find_previous(storage_obj, chash, keys, name)
                    if previous:
                        prev_study, prev = previous
                        summary = dict(prev.user_attrs["summary"])
                        trial.set_user_attr("reused_from_study", prev_study)
                        trial.set_user_attr("reused_from_trial", prev.number)
                        mlflow.set_tags(
                            {
                                "reused_from": f"{prev_study}#{prev.number}",
                                "reused_mlflow_run_id": prev.user_attrs.get("mlflow_run_id") or "unknown",
                            }
                        )
                        result.reused += 1
                    else:
                        summary = _finite(runner(config))
                        result.evaluated += 1
                    values = objective_values(summary, space)
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    trial.set_user_attr("error", message[:2000])
                    mlflow.set_tag("error", message[:5000])
                    result.failed += 1
                    result.errors.append(f"trial {trial.number} ({config_label(params)}): {message}")
                    raise
                trial.set_user_attr("summary", summary)
                mlflow.log_metrics({o.name: v for o, v in zip(space.objectives, values)})
                return values

        if work:
            trial_queue.work(study, objective, n, grid, parent.info.run_id)
        if work and front:
            result.front = log_front(study)
            _tag_pareto(study)
    return result


def _tag_pareto(study) -> None:
    """Tag every completed trial's MLflow run pareto=true|false (the front moves as trials are added)."""
    import mlflow
    from optuna.trial import TrialState

    from trustser.study.pareto import study_rows

    client = mlflow.MlflowClient()
    on_front = {r.trial for r in study_rows(study) if r.pareto}
    front_hashes = {t.user_attrs.get("config_hash") for t in study.best_trials} - {None}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        pareto = t.number in on_front or t.user_attrs.get("config_hash") in front_hashes
        try:
            client.set_tag(run_id, "pareto", "true" if pareto else "false")
        except Exception as exc:  # the run lives in another tracking store
            log.warning("could not tag MLflow run %s of trial %d: %s", run_id, t.number, exc)

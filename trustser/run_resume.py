"""A killed ``trustser run`` resumes: dead runs are marked KILLED, finished folds are reused.

Runs carry ``trustser.config_hash`` (``config_hash`` of the RunConfig), ``trustser.resume_key`` (that hash,
the corpus digest, the weights identity and the trustser version), ``trustser.kind`` (``experiment`` / ``fold``) and
the identity of the process logging them (``tracking.process_tags``: host, pid, process start). A top-level run (not
inside a study trial: tag ``trustser.resumable``) first marks KILLED the RUNNING runs of its configuration whose
process is dead (on this host: pid gone, a zombie, or reused by a later process; ``trustser.killed`` says why),
keeping their FINISHED folds; then, once its corpus digest is known, it reuses every FINISHED fold run with its resume
key whose parent is KILLED or FAILED: the fold run is moved under the new parent (tag ``mlflow.parentRunId`` rewritten;
``trustser.reparented_from`` on the fold, ``trustser.reused_folds`` and ``trustser.resumes_run`` on the new parent,
``trustser.resumed_by`` on the old one), and its metrics, per-clip test outcomes and trained head come back from its
``resume/`` artifacts (``fold_result.json``, ``head.safetensors``), so the summary, the pooled intervals and the
deployable model are those of a run that was never interrupted. So the store keeps one FINISHED run per (backbone,
dataset, fold, configuration) across kills: should two copies of a fold qualify, the newest is reused and the other
marked KILLED (superseded), as is one whose artifacts cannot be read (that fold is then computed again).

Inside a study trial the same reuse happens, but the study's workers decide what is dead: they mark a dead trial's
runs KILLED, its FINISHED folds kept (``study.trial_queue.mark_dead_trial_runs``), and the trial that retries its
configuration reuses those folds (a fine-tuned fold takes an hour on a CPU: a study killed in its fifth fold resumes
there, not at its first).

Not resumed: a run whose parent FINISHED (running a finished configuration again measures it again, as a new parent:
the same command is how one re-measures latency or checks determinism); RUNNING runs whose process lives or whose
host is another machine (no heartbeat tells a dead remote process from a live one: they are left RUNNING, with a
warning, and their folds are not reused); runs deleted in MLflow (delete a dead run to have its folds computed again).
One resume of a configuration at a time: two started together would both reuse the folds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

import trustser
from trustser import EMOTIONS
from trustser.metrics.headline import TestOutcomes
from trustser.run_config import FoldResult, RunConfig
from trustser.training import TrainResult

log = logging.getLogger(__name__)

CONFIG_HASH_TAG = "trustser.config_hash"
RESUME_KEY_TAG = "trustser.resume_key"
RESUMABLE_TAG = "trustser.resumable"
KIND_TAG = "trustser.kind"
RESUME_DIR = "resume"  # artifacts of a fold run that a resumed run reads back
RESUME_FORMAT = 1


def resume_key(chash: str, corpus_digest: str, weights_identity: str) -> str:
    """What a fold run must share with a new run to be reused by it: configuration, corpus, weights and code."""
    import hashlib

    text = json.dumps([chash, corpus_digest, weights_identity, trustser.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mark_dead_runs(chash: str, current_id: str) -> list[str]:
    """Mark KILLED the RUNNING top-level runs of configuration ``chash`` (parents and folds) whose process is dead,
    leaving their FINISHED folds as they are; returns the ids marked. Runs whose process lives, or runs on another
    host, are left RUNNING (the latter with a warning)."""
    import mlflow

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(current_id).info.experiment_id
    running = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{CONFIG_HASH_TAG}` = '{chash}' and tags.`{RESUMABLE_TAG}` = 'true' and attributes.status = 'RUNNING'"
        ),
        max_results=1000,
    )
    marked: list[str] = []
    for run in sorted(running, key=lambda r: r.data.tags.get(KIND_TAG) != "experiment"):  # parents: whole trees
        tags = run.data.tags
        if run.info.run_id == current_id or run.info.run_id in marked:
            continue
        state = tracking.process_state(tags)
        if state == "dead":
            reason = (
                f"its process (pid {tags.get(tracking.PID_TAG)} on {tags.get(tracking.HOST_TAG)}) died; run "
                f"{current_id} of the same configuration ({chash}) resumes it and reuses its finished folds"
            )
            marked += tracking.kill_run_tree(client, run, experiment_id, reason, finished_too=False)
        elif state == "unknown":
            log.warning(
                "run %s of this configuration is RUNNING on host %s, which cannot be checked from here: left "
                "as it is, and its folds are not reused",
                run.info.run_id,
                tags.get(tracking.HOST_TAG, "?"),
            )
    if marked:
        log.warning(
            "marked %d MLflow run(s) of a dead run of this configuration KILLED: %s", len(marked), ", ".join(marked)
        )
    return marked


def resume_folds(
    key: str, fold_names: list[str], config: RunConfig, backbone: Any, parent_id: str
) -> dict[str, FoldResult]:
    """The finished folds of an interrupted run with resume key ``key``, moved under ``parent_id`` and read back
    (see the module docstring); fold name → FoldResult."""
    import mlflow

    from trustser import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{RESUME_KEY_TAG}` = '{key}' and tags.`{KIND_TAG}` = 'fold' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.end_time DESC"],
        max_results=1000,
    )
    parents: dict[str, Any] = {}

    def interrupted(old: str) -> bool:
        if old and old not in parents:
            try:
                parents[old] = client.get_run(old)
            except Exception:  # the parent is gone from the store
                parents[old] = None
        parent = parents.get(old)
        return (
            old != parent_id
            and parent is not None
            and parent.info.lifecycle_stage == "active"
            and parent.info.status in ("KILLED", "FAILED")
        )

    out: dict[str, FoldResult] = {}
    moved_from: dict[str, str] = {}  # fold name → the interrupted parent it is reused from
    for run in found:  # newest first
        name, old = run.data.tags.get("fold", ""), run.data.tags.get("mlflow.parentRunId", "")
        if name not in fold_names or not interrupted(old):
            continue
        if name in out:
            reason = f"superseded: run {out[name].run_id} is the finished {name} of this configuration"
        else:
            try:
                out[name], moved_from[name] = load_fold_state(client, run, config, backbone), old
                continue
            except Exception as exc:
                log.warning("cannot reuse finished %s (run %s): %s; computing it again", name, run.info.run_id, exc)
                reason = (
                    f"its resume artifacts could not be read ({type(exc).__name__}: {exc}); run {parent_id} "
                    f"computes {name} again"
                )
        tracking.kill_run_tree(client, run, experiment_id, reason)
    for name, result in out.items():
        client.set_tag(result.run_id, "trustser.reparented_from", moved_from[name])
        client.set_tag(result.run_id, "mlflow.parentRunId", parent_id)
    old_parents = sorted(set(moved_from.values()))
    for old in old_parents:
        client.set_tag(old, "trustser.resumed_by", parent_id)
    if out:
        mlflow.set_tags(
            {
                "trustser.reused_folds": ", ".join(f"{n}={r.run_id}" for n, r in sorted(out.items())),
                "trustser.resumes_run": ", ".join(old_parents),
            }
        )
        log.warning("resuming run(s) %s: reusing finished %s", ", ".join(old_parents), ", ".join(sorted(out)))
    return out


def log_fold_state(result: FoldResult) -> None:
    """``resume/fold_result.json`` (the fold's metrics, training summary and per-clip test outcomes) and
    ``resume/head.safetensors`` (the trained head's state dict): what a resumed run needs to reuse this fold."""
    import mlflow
    from safetensors.torch import save_file

    from trustser import tracking

    train = result.train
    state = {
        "format": RESUME_FORMAT,
        "fold": result.fold,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "train": {
            "best_epoch": int(train.best_epoch),
            "best_val_uar": float(train.best_val_uar),
            "history": [{k: float(v) for k, v in h.items()} for h in train.history],
            "steps": int(train.steps),
            "stop_reason": train.stop_reason,
        },
        "outcomes": outcomes_to_json(result.outcomes) if result.outcomes is not None else None,
    }
    tracking.log_json(state, f"{RESUME_DIR}/fold_result.json")
    with tracking.artifact_dir() as tmp:
        path = tmp / "head.safetensors"
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in train.head.state_dict().items()}, str(path))
        mlflow.log_artifact(str(path), RESUME_DIR)


def load_fold_state(client: Any, run: Any, config: RunConfig, backbone: Any) -> FoldResult:
    """A finished fold run as a FoldResult, from its ``resume/`` artifacts (the head rebuilt and loaded)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="trustser-resume-") as tmp:
        local = Path(client.download_artifacts(run.info.run_id, RESUME_DIR, tmp))
        state = json.loads((local / "fold_result.json").read_text())
        weights = load_file(str(local / "head.safetensors"))
    if state.get("format") != RESUME_FORMAT:
        raise ValueError(f"resume format {state.get('format')}, this trustser reads {RESUME_FORMAT}")
    if config.unfreeze_top:
        from trustser.finetune import build_finetune_model

        head = build_finetune_model(
            backbone, config.unfreeze_top, len(EMOTIONS), config.train.width, config.train.pooling
        )
    else:  # sized from the stored statistics, as train_head sizes it from the features
        from trustser.head import EmotionHead

        head = EmotionHead(*weights["feat_mean"].shape, len(EMOTIONS), config.train.width, config.train.pooling)
    head.load_state_dict(weights)
    head.eval()
    t = state["train"]
    train = TrainResult(head, t["best_epoch"], t["best_val_uar"], t["history"], t["steps"], t["stop_reason"])
    outcomes = outcomes_from_json(state["outcomes"]) if state["outcomes"] is not None else None
    return FoldResult(state["fold"], run.info.run_id, state["metrics"], train, outcomes)


def outcomes_to_json(outcomes: TestOutcomes) -> dict[str, Any]:
    """Every array of the outcomes with its dtype and shape, exactly (floats round-trip through JSON)."""
    out = {}
    for name in TestOutcomes.__dataclass_fields__:
        array = np.asarray(getattr(outcomes, name))
        out[name] = {
            "dtype": "object" if array.dtype == object else array.dtype.str,
            "shape": list(array.shape),
            "values": array.ravel().tolist(),
        }
    return out


def outcomes_from_json(data: dict[str, Any]) -> TestOutcomes:
    arrays = {}
    for name, item in data.items():
        values = np.empty(len(item["values"]), dtype=object) if item["dtype"] == "object" else None
        if values is not None:
            values[:] = item["values"]  # element by element: a list of strings must not become a 2-D array
        else:
            values = np.array(item["values"], dtype=item["dtype"])
        arrays[name] = values.reshape(item["shape"])
    return TestOutcomes(**arrays)

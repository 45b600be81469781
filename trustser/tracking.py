"""MLflow at the edge: where runs go, and logging helpers that never fight ``mlflow run``.

Default store: a local sqlite database ``mlflow.db`` in the working directory; for any sqlite store, artifacts go
to an absolute ``mlartifacts/`` path beside its database file; ``MLFLOW_TRACKING_URI`` overrides. Under ``mlflow
run`` the project run (``MLFLOW_RUN_ID``) becomes the parent run, and because MLflow refuses to re-log a parameter with another value,
parameters already logged by ``mlflow run`` are left alone and a differing resolved value goes under ``resolved.KEY``.

Dead runs: a run records the process that logs it (tags ``trustser.host``, ``trustser.pid``,
``trustser.process_start``); ``process_state`` tells from those tags whether that process still lives, and
``kill_run_tree`` marks a dead run (and what is nested under it) KILLED with its reason, for the study workers and for
a resumed ``trustser run`` alike.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

DEFAULT_EXPERIMENT = "trustser"
HOST_TAG, PID_TAG, START_TAG = "trustser.host", "trustser.pid", "trustser.process_start"  # process_tags


def default_tracking_uri(workdir: Path | None = None) -> str:
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / 'mlflow.db'}"


def tracking_uri(workdir: Path | None = None) -> str:
    """The configured store: ``MLFLOW_TRACKING_URI``, else the default local sqlite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)


def setup_tracking(experiment: str | None = None, workdir: Path | None = None) -> str:
    """Point MLflow at the configured store and select (creating if needed) the experiment; returns the URI."""
    import mlflow

    uri = tracking_uri(workdir)
    mlflow.set_tracking_uri(uri)
    if os.environ.get("MLFLOW_RUN_ID"):
        return uri  # mlflow run chose the experiment and the run
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=sqlite_artifact_location(uri))
    mlflow.set_experiment(name)
    return uri


def sqlite_artifact_location(uri: str) -> str | None:
    """``mlartifacts/`` beside a sqlite store's database file, as an absolute file URI (None for other stores,
    whose server decides). Beside the database, not the working directory: a store is then self-contained, and
    runs started from another directory do not scatter its artifacts."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///") :])
    if str(database) in ("", ":memory:"):
        return None
    return (database.resolve().parent / "mlartifacts").as_uri()


def log_params_safely(params: Mapping[str, Any]) -> None:
    """Log params on the active run, skipping equal existing values and renaming conflicting ones."""
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh: dict[str, str] = {}
    for key, value in params.items():
        text = "" if value is None else str(value)
        if key not in existing:
            fresh[key] = text[:6000]
        elif existing[key] != text:
            fresh[f"resolved.{key}"] = text[:6000]
    if fresh:
        mlflow.log_params(fresh)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV document for an artifact (quoting by the csv module: clip ids and skip details may hold commas and
    quotes)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


def log_figure(fig: Any, artifact_file: str) -> None:
    """Log a matplotlib figure and close it: pyplot keeps every open figure alive, and a study logs several per
    fold, so an unclosed figure is a memory leak that grows over a sweep (matplotlib warns after 20)."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


@contextmanager
def artifact_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trustser-artifacts-") as tmp:
        yield Path(tmp)


def process_start(pid: int) -> str:
    """What tells this process from a later one that reuses its pid: the boot id and the start time in clock ticks
    since boot (Linux ``/proc``); "" where ``/proc`` is not there (the pid alone is then compared)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces and parentheses
    return f"{boot}/{fields[19]}"  # field 22 of stat, starttime


def process_tags() -> dict[str, str]:
    """Tags naming the process that logs a run, read back by ``process_state``."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), START_TAG: process_start(os.getpid())}


def process_state(tags: Mapping[str, str]) -> str:
    """``alive``, ``dead`` or ``unknown`` for the process named by a run's ``process_tags``.

    Only a process on this host can be checked: a run logged from another machine, or one without the tags, is
    ``unknown`` (nobody can tell a dead remote process from a live one without a heartbeat). A zombie counts as dead;
    a live pid whose start differs from the recorded one is a later process that reused the pid: dead too. Assumes
    that the host name tells apart the machines (and pid namespaces, e.g. containers) sharing a tracking store."""
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) != socket.gethostname() or not pid.isdigit():
        return "unknown"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # another user's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
            return "dead"
    except OSError:
        pass
    recorded = tags.get(START_TAG, "")
    if recorded and process_start(int(pid)) not in ("", recorded):
        return "dead"
    return "alive"


def kill_run_tree(client: Any, run: Any, experiment_id: str, reason: str, finished_too: bool = True) -> list[str]:
    """Mark ``run`` and every run nested under it KILLED (tag ``trustser.killed``: the reason); returns their ids.

    ``finished_too``: FINISHED runs of the tree are marked as well (tag ``trustser.status_before_kill``), for a caller
    that computes them again; without it they keep their status (a resumed ``trustser run`` reuses them)."""
    marked, stack = [], [run]
    killable = ("RUNNING", "SCHEDULED", "FINISHED") if finished_too else ("RUNNING", "SCHEDULED")
    while stack:
        current = stack.pop()
        stack += client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{current.info.run_id}'")
        status = current.info.status
        if status in killable:
            if status != "RUNNING":
                client.set_tag(current.info.run_id, "trustser.status_before_kill", status)
            client.set_tag(current.info.run_id, "trustser.killed", reason[:5000])
            client.set_terminated(current.info.run_id, "KILLED")
            marked.append(current.info.run_id)
    return marked

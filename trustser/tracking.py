"""MLflow at the edge: where runs go, and logging helpers that never fight ``mlflow run``.

Default store: a local sqlite database ``mlflow.db`` in the working directory; for any sqlite store, artifacts go
to an absolute ``mlartifacts/`` path beside its database file; ``MLFLOW_TRACKING_URI`` overrides. Under ``mlflow
run`` the project run (``MLFLOW_RUN_ID``) becomes the parent run, and because MLflow refuses to re-log a parameter with another value,
parameters already logged by ``mlflow run`` are left alone and a differing resolved value goes under ``resolved.KEY``.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

DEFAULT_EXPERIMENT = "trustser"


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
    database = Path(uri[len("sqlite:///"):])
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


def log_figure_png(fig: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_figure(fig, artifact_file)


@contextmanager
def artifact_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trustser-artifacts-") as tmp:
        yield Path(tmp)

"""Fixtures for the scale tests (a pytest plugin named in conftest.py): one PostgreSQL cluster and one MLflow server
(PostgreSQL backend store, artifacts served by the server) per session, started on free loopback ports with
``trustser services start`` and stopped by PID at the end, failures included; a fresh Optuna database and MLflow
experiment per test, so studies never see each other's results (a storage reuses results across its studies).

Started only when a test asks for them. Without PostgreSQL's server programs (Debian: ``apt-get install
postgresql``; scripts/run_tests.sh installs it) the tests that need them are skipped, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parent
SPACE_BASE = {
    "dataset": "emodb",
    "folds": "1",
    "random_init": True,
    "max_seconds": 1.0,
    "train": {"epochs": 1, "batch_size": 16},
    "trust": {"safety": False, "probes": False, "measure_cost": False},
    # with safety and probes off there is no privacy or safety number: optimise the three axes measured
    "objectives": {"performance": "maximize", "fairness": "minimize", "sustainability": "minimize"},
    "sampler": {"kind": "grid", "seed": 0},
}
FAST_HEARTBEAT = ["--heartbeat", "1", "--grace-period", "3"]


def trustser_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trustser.cli", *args]


@pytest.fixture(scope="session")
def scale_services() -> Iterator[dict]:
    """services.json of the session's PostgreSQL + MLflow server (storage URL, tracking URI, PIDs)."""
    from trustser.services import ServiceError, Services, find_pg_binary

    try:
        find_pg_binary("initdb")
        find_pg_binary("postgres")
    except ServiceError as exc:
        message = f"scale tests need a PostgreSQL server: {exc}"
        print(f"\nSKIP: {message}", file=sys.stderr)
        pytest.skip(message)
    # a folder of its own directly under /tmp: when the tests run as root, PostgreSQL runs as user postgres, who
    # cannot enter pytest's private tmp folders
    directory = Path(tempfile.mkdtemp(prefix="trustser-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    try:
        done = subprocess.run(
            trustser_command(
                "services", "start", "--dir", str(directory), "--pg-port", "0", "--mlflow-port", "0", "--fast", "--json"
            ),
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if done.returncode != 0:
            pytest.fail(f"trustser services start failed ({done.returncode}):\n{done.stderr[-4000:]}")
        yield json.loads(done.stdout)
    finally:
        subprocess.run(trustser_command("services", "stop", "--dir", str(directory)), capture_output=True, timeout=120)
        Services(directory).stop()  # nothing left to do unless the command above failed
        shutil.rmtree(directory, ignore_errors=True)


def _connect(url: str, dbname: str):
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=dbname, autocommit=True
    )


@pytest.fixture
def optuna_storage(scale_services) -> Iterator[str]:
    """The URL of a new, empty Optuna database on the session's PostgreSQL, dropped afterwards."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"optuna_{uuid.uuid4().hex[:12]}"
    with _connect(scale_services["storage"], "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_url(scale_services["storage"]).set(database=name).render_as_string(hide_password=False)
    with _connect(scale_services["storage"], "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def tracking_server(scale_services, monkeypatch) -> str:
    """The session's MLflow server as this test's (and its subprocesses') MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scale_services["tracking_uri"])
    return scale_services["tracking_uri"]


@pytest.fixture
def experiment_name(request) -> str:
    return f"{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"


class Sweep:
    """`trustser study ...` as a child process in a session of its own, so that the test can SIGKILL it with all its
    workers at once; killed at teardown whatever happened."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        out = open(log, "ab")
        try:
            process = subprocess.Popen(
                trustser_command(*args), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            out.close()
        self.processes.append(process)
        return process

    def run(self, args: list[str], env: dict[str, str], log: Path, timeout: float = 600) -> int:
        process = self.start(args, env, log)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            pytest.fail(f"`trustser {' '.join(args[:2])}` ran over {timeout} s; its output ends:\n{tail(log)}")

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)


@pytest.fixture
def sweep() -> Iterator[Sweep]:
    s = Sweep()
    try:
        yield s
    finally:
        s.close()


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


def wait_for_file(path: Path, process: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    """The content of ``path`` once it exists; fails if ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the sweep exited ({process.returncode}) before {path.name} appeared:\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear within {timeout} s:\n{tail(log)}")
        time.sleep(0.1)
    return path.read_text()


def worker_env(storage: str, tracking: str, runner: str, **extra: str) -> dict[str, str]:
    """The environment of a sweep's processes: storage, tracking server, injected runner (tests/ importable)."""
    env = {
        **os.environ,
        "TRUSTSER_STORAGE": storage,
        "MLFLOW_TRACKING_URI": tracking,
        "TRUSTSER_TRIAL_RUNNER": runner,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    for key in ("SCALE_PAUSE_AT", "SCALE_PAUSED", "SCALE_HANG"):
        env.pop(key, None)
    env.update(extra)
    return env


def write_space(path: Path, name: str, search: dict, **overrides) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**SPACE_BASE, "name": name, "search": search, **overrides}))
    return path

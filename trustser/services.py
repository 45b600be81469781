"""The servers a distributed study needs, on one machine: a PostgreSQL cluster (Optuna's storage and MLflow's backend
store) and an MLflow tracking server that stores and serves the artifacts. Both listen on 127.0.0.1 unless told
otherwise.

Run:   trustser services start --dir ~/trustser-services        # initdb (once), start both, print the URLs
       eval "$(trustser services env --dir ~/trustser-services)" # TRUSTSER_STORAGE and MLFLOW_TRACKING_URI
       trustser study --space studies/quick.yaml --workers 4
       trustser services stop --dir ~/trustser-services
Look:  the MLflow UI at the printed http://127.0.0.1:<port>; ``optuna-dashboard "$TRUSTSER_STORAGE"``.

What ``DIR`` holds: ``pgdata/`` (the cluster), ``artifacts/`` (MLflow's artifact root), ``postgres.log``,
``mlflow.log``, ``postgres.pid``, ``mlflow.pid``, ``password`` and ``services.json`` (ports and URLs with the password;
both mode 600).

- PostgreSQL refuses to run as root. Started by root, the cluster belongs to the ``postgres`` system user (Debian's
  package creates it; ``pg_user`` picks another) and the server runs as that user; otherwise it runs as the caller.
- Role ``trustser`` with a random password, scram-sha-256 over TCP; no Unix socket. Databases ``optuna`` and
  ``mlflow``. Other hosts connect only when ``host`` is not loopback *and* their network is ``allow``-ed.
- The servers are started as argument lists (no shell, the database URL passed to MLflow in its environment, not on a
  command line other users can read), each in a session of its own, and stopped by the PID recorded at start
  (checked against the process's command line first, so a reused PID is never signalled).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustser.errors import TrustserError

ROLE = "trustser"
DATABASES = ("optuna", "mlflow")
LOOPBACK = "127.0.0.1"
HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-:]*$")


class ServiceError(TrustserError):
    """A service could not be started, found or stopped; the message says which and why."""


@dataclass(frozen=True)
class ServiceConfig:
    directory: Path
    host: str = LOOPBACK  # the interface both servers listen on
    pg_port: int = 5432  # 0: a free port
    mlflow_port: int = 5000  # 0: a free port
    allow: tuple[str, ...] = ()  # networks (CIDR) that may reach PostgreSQL besides loopback
    pg_user: str | None = None  # the OS user running PostgreSQL when started by root (default: postgres)
    durable: bool = True  # False: fsync off, for throwaway clusters (tests)
    timeout_s: float = 120.0


def find_pg_binary(name: str) -> Path:
    """A PostgreSQL server program: on PATH, else the newest /usr/lib/postgresql/<version>/bin (Debian)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    raise ServiceError(
        f"PostgreSQL's `{name}` not found on PATH or in /usr/lib/postgresql/*/bin: install the server "
        "(Debian/Ubuntu: apt-get install -y postgresql) or use an existing PostgreSQL (docs/scale-out.md)"
    )


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_host(host: str) -> str:
    """``host`` as given, when it is an IP address or a host name (it goes into postgresql.conf and a command)."""
    if host in ("*", "0.0.0.0", "::"):
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if HOSTNAME.match(host) and len(host) < 254:
            return host
    raise ServiceError(f"--host must be an IP address or a host name, got {host!r}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host if host not in ("*",) else "0.0.0.0", port))
        except OSError:
            return True
    return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``marker`` (so a PID reused by another program is not
    ours). A zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (not Linux): trust the PID file
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.1)
    return False


def _pg_account(config: ServiceConfig) -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None for the caller (not root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    name = config.pg_user or "postgres"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no user '{name}' to run it: create one "
            f"(useradd --system {name}), pass --pg-user, or start the services as another user"
        ) from None
    if entry.pw_uid == 0:
        raise ServiceError(f"--pg-user {name} is root; PostgreSQL refuses to run as root")
    return entry.pw_uid, entry.pw_gid


def _as_account(account: tuple[int, int] | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account[0], "group": account[1], "extra_groups": []}


def _check_reachable(path: Path, account: tuple[int, int]) -> None:
    """Every folder above ``path`` must let the PostgreSQL user through; ``path``'s own parent we opened up."""
    uid, gid = account
    for folder in [path.parent, *path.parent.parents]:
        st = folder.stat()
        if st.st_uid == uid or st.st_mode & 0o001 or (st.st_gid == gid and st.st_mode & 0o010):
            continue
        raise ServiceError(
            f"the PostgreSQL user (uid {uid}) cannot enter {folder} (mode {oct(st.st_mode & 0o777)}): "
            "choose a --dir outside it (e.g. under /srv or /tmp)"
        )


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _open_log(path: Path):
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def redact(url: str) -> str:
    """A database URL with its password replaced by ***."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Services:
    """The services under one directory: start, stop, status. ``info`` is what ``services.json`` holds."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).expanduser().resolve()
        self.pgdata = self.dir / "pgdata"
        self.info_file = self.dir / "services.json"

    @property
    def info(self) -> dict[str, Any]:
        return _read_json(self.info_file)

    def pid(self, name: str) -> int | None:
        try:
            return int((self.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and pid_alive(pid, "postgres" if name == "postgres" else "mlflow")

    # -- start ------------------------------------------------------------------------------------------------

    def start(self, config: ServiceConfig, mlflow: bool = True) -> dict[str, Any]:
        if importlib.util.find_spec("psycopg") is None:
            raise ServiceError("the PostgreSQL driver is missing: pip install 'trustser[scale]' (psycopg)")
        host = check_host(config.host)
        allow = tuple(str(ipaddress.ip_network(a, strict=False)) for a in config.allow)
        for name in ("postgres", "mlflow"):
            if self.running(name):
                raise ServiceError(
                    f"{name} already runs from {self.dir} (pid {self.pid(name)}); "
                    f"`trustser services stop --dir {self.dir}` first"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        account = _pg_account(config)
        if account is not None:
            # PostgreSQL runs as another user: it must be able to enter DIR (not read it)
            os.chmod(self.dir, os.stat(self.dir).st_mode | 0o011)
            _check_reachable(self.dir, account)
        bind = LOOPBACK if host in ("*", "0.0.0.0") else "::1" if host == "::" else host
        pg_port = config.pg_port or free_port(bind if ":" not in bind else LOOPBACK)
        ml_port = config.mlflow_port or free_port(bind if ":" not in bind else LOOPBACK)
        for port, what in ((pg_port, "--pg-port"), (ml_port, "--mlflow-port")):
            if _port_in_use(host, port):
                raise ServiceError(f"port {port} on {host} is in use: choose another with {what} (0 picks a free one)")
        password = self._password()
        local = LOOPBACK if host in ("*", "0.0.0.0", "::") or is_loopback(host) else host
        started: list[str] = []
        try:
            self._init_cluster(account, password)
            self._configure(host, pg_port, allow, config.durable, account)
            self._start_postgres(account)
            started.append("postgres")
            self._wait_postgres(local, pg_port, password, config.timeout_s)
            self._create_databases(local, pg_port, password)
            url = f"postgresql+psycopg://{ROLE}:{password}@{local}:{pg_port}"
            info: dict[str, Any] = {
                "directory": str(self.dir),
                "host": host,
                "postgres": {
                    "pid": self.pid("postgres"),
                    "port": pg_port,
                    "data": str(self.pgdata),
                    "log": str(self.dir / "postgres.log"),
                },
                "storage": f"{url}/optuna",
                "mlflow_backend_store": f"{url}/mlflow",
            }
            if mlflow:
                tracking = self._start_mlflow(host, local, ml_port, f"{url}/mlflow", config.timeout_s)
                started.append("mlflow")
                info["mlflow"] = {
                    "pid": self.pid("mlflow"),
                    "port": ml_port,
                    "url": tracking,
                    "artifacts": str(self.dir / "artifacts"),
                    "log": str(self.dir / "mlflow.log"),
                }
                info["tracking_uri"] = tracking
            _write_private(self.info_file, json.dumps(info, indent=1))
            return info
        except BaseException:
            for name in reversed(started):
                self._stop_one(name)
            raise

    def _password(self) -> str:
        path = self.dir / "password"
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(24)  # URL-safe: it goes into database URLs as is
        _write_private(path, password + "\n")
        return password

    def _init_cluster(self, account, password: str) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.dir / ".initdb-password"
        _write_private(pwfile, password + "\n")
        if account is not None:
            os.chown(self.pgdata, *account)
            os.chown(pwfile, *account)
        try:
            command = [
                str(find_pg_binary("initdb")),
                "-D",
                str(self.pgdata),
                "-U",
                ROLE,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ]
            done = subprocess.run(
                command, cwd=self.dir, env=_clean_env(), capture_output=True, text=True, **_as_account(account)
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServiceError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")

    def _configure(self, host: str, port: int, allow: tuple[str, ...], durable: bool, account) -> None:
        """Settings in trustser.conf (rewritten at every start), included once from postgresql.conf."""
        conf = self.pgdata / "postgresql.conf"
        include = "include_if_exists = 'trustser.conf'"
        if include not in conf.read_text():
            with open(conf, "a") as f:
                f.write(f"\n{include}\n")
        lines = [
            f"listen_addresses = '{host}'",
            f"port = {port}",
            "unix_socket_directories = ''",
            "max_connections = 200",
            "password_encryption = 'scram-sha-256'",
        ]
        if not durable:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        (self.pgdata / "trustser.conf").write_text("\n".join(lines) + "\n")
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text()
        extra = [f"host all {ROLE} {net} scram-sha-256" for net in allow if f" {net} " not in text]
        if extra:
            with open(hba, "a") as f:
                f.write("\n".join(["# trustser services --allow", *extra]) + "\n")
        if account is not None:
            for path in (self.pgdata / "trustser.conf", conf, hba):
                os.chown(path, *account)

    def _start_postgres(self, account) -> None:
        log = _open_log(self.dir / "postgres.log")
        try:
            process = subprocess.Popen(
                [str(find_pg_binary("postgres")), "-D", str(self.pgdata)],
                cwd=self.pgdata,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_account(account),
            )
        finally:
            log.close()
        (self.dir / "postgres.pid").write_text(f"{process.pid}\n")

    def _wait_postgres(self, host: str, port: int, password: str, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(
                    host=host, port=port, user=ROLE, password=password, dbname="postgres", connect_timeout=3
                ).close()
                return
            except psycopg.OperationalError as exc:
                if not self.running("postgres") or time.monotonic() > deadline:
                    raise ServiceError(
                        f"PostgreSQL did not come up on {host}:{port} ({str(exc).strip()[:200]}); "
                        f"its log ends:\n{_tail(self.dir / 'postgres.log')}"
                    ) from None
                time.sleep(0.2)

    def _create_databases(self, host: str, port: int, password: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=host, port=port, user=ROLE, password=password, dbname="postgres", autocommit=True
        ) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _start_mlflow(self, host: str, local: str, port: int, backend: str, timeout: float) -> str:
        artifacts = self.dir / "artifacts"
        artifacts.mkdir(mode=0o700, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": backend,  # not on the command line: it holds the password
            # no background job runner (GenAI evaluation jobs, trace rollups): seven more processes, unused here
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        log = _open_log(self.dir / "mlflow.log")
        try:
            process = subprocess.Popen(
                command,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        (self.dir / "mlflow.pid").write_text(f"{process.pid}\n")
        url = f"http://{local}:{port}"
        self._wait_http(f"{url}/health", process, timeout)
        return url

    def _wait_http(self, url: str, process: subprocess.Popen, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=3) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(
                    f"the MLflow server did not answer {url} "
                    f"({'exited ' + str(process.returncode) if process.poll() is not None else 'timed out'}); "
                    f"its log ends:\n{_tail(self.dir / 'mlflow.log')}"
                )
            time.sleep(0.3)

    # -- stop, status ---------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop MLflow, then PostgreSQL, by their recorded PIDs; returns what was done, one line each."""
        return [self._stop_one("mlflow"), self._stop_one("postgres")]

    def _stop_one(self, name: str, timeout: float = 30.0) -> str:
        pid_file = self.dir / f"{name}.pid"
        pid = self.pid(name)
        marker = "postgres" if name == "postgres" else "mlflow"
        if pid is None:
            return f"{name}: not started from {self.dir}"
        if not pid_alive(pid, marker):
            pid_file.unlink(missing_ok=True)
            return f"{name}: pid {pid} was not running"
        if name == "postgres":
            os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back open transactions, checkpoint, exit
            gone = _wait_gone(pid, marker, timeout)
            if not gone:
                os.kill(pid, signal.SIGQUIT)  # "immediate": recovery at the next start
                gone = _wait_gone(pid, marker, 10)
        else:
            os.killpg(pid, signal.SIGTERM)  # the server and its uvicorn worker (own session: group id = pid)
            gone = _wait_gone(pid, marker, timeout)
            if not gone:
                os.killpg(pid, signal.SIGKILL)
                gone = _wait_gone(pid, marker, 10)
            try:
                os.killpg(pid, signal.SIGKILL)  # a worker left behind by its parent
            except ProcessLookupError:
                pass
        pid_file.unlink(missing_ok=True)
        return f"{name}: stopped pid {pid}" if gone else f"{name}: pid {pid} did not exit"

    def status(self) -> dict[str, Any]:
        info = self.info
        out: dict[str, Any] = {"directory": str(self.dir)}
        for name in ("postgres", "mlflow"):
            out[name] = {
                "pid": self.pid(name),
                "running": self.running(name),
                "port": (info.get(name) or {}).get("port"),
            }
        if info.get("tracking_uri"):
            out["tracking_uri"] = info["tracking_uri"]
        if info.get("storage"):
            out["storage"] = redact(info["storage"])
        return out

    def env_lines(self) -> list[str]:
        """``export`` lines for a POSIX shell (values quoted)."""
        import shlex

        info = self.info
        if not info:
            raise ServiceError(f"no services.json in {self.dir}: `trustser services start --dir {self.dir}` first")
        lines = [f"export TRUSTSER_STORAGE={shlex.quote(info['storage'])}"]
        if info.get("tracking_uri"):
            lines.append(f"export MLFLOW_TRACKING_URI={shlex.quote(info['tracking_uri'])}")
        return lines

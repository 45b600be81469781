"""Where a study lives: opening the Optuna storage (heartbeats, retries, one process creating the tables), a lock all
processes using one storage share, and creating or loading a study by name.

Below both the study runner and the worker launcher, so neither imports the other for these.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trustser.errors import ConfigError
from trustser.study.space import StudySpace

log = logging.getLogger(__name__)

STORAGE_ENV = "TRUSTSER_STORAGE"
"""The storage URL for ``trustser study`` / ``trustser worker`` when ``--storage`` is not given."""
LOCK_ID = int.from_bytes(b"trustser", "big") >> 1  # PostgreSQL advisory lock key (a signed 64-bit integer)
LOCK_TIMEOUT_S = 300  # a lock holder silent this long (machine gone) loses its lock to the server


def default_storage(workdir: Path | None = None) -> str:
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / 'optuna.db'}"


def redact(url: str) -> str:
    """A storage URL fit for a tag: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: keep only the scheme
        return url.split("://", 1)[0] + "://…" if "@" in url else url


@dataclass(frozen=True)
class Heartbeat:
    """Failure detection of RUNNING trials: a beat every ``interval`` s, dead after ``grace`` s without one, retried
    at most ``max_retry`` times."""

    interval: int = 10
    grace: int = 60
    max_retry: int = 2

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval or self.max_retry < 0:
            raise ConfigError(
                f"heartbeat: need interval >= 1 s, grace period > interval, max retry >= 0; got "
                f"interval {self.interval}, grace {self.grace}, max retry {self.max_retry}"
            )


def make_storage(url: str, heartbeat: Heartbeat | None = None):
    """Optuna's RDB storage for ``url`` with heartbeats and the retry callback on (cached like ``get_storage``'s)."""
    import optuna
    from optuna.storages import RDBStorage

    heartbeat = heartbeat or Heartbeat()
    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )
    # Optuna 4.9 renamed failed_trial_callback; both spellings exist until 6.0
    callback_arg = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters
        else "failed_trial_callback"
    )
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # survive a database restart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are marked experimental
        try:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            lock_engine = create_engine(url, poolclass=NullPool)
            try:
                with _engine_lock(lock_engine):  # on an empty database, one process creates Optuna's tables
                    rdb = RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat.interval,
                        grace_period=heartbeat.grace,
                        **{callback_arg: retry(max_retry=heartbeat.max_retry)},
                    )
            finally:
                lock_engine.dispose()
        except ImportError as exc:
            raise ConfigError(
                f"storage {redact(url)}: its database driver is missing ({exc.__cause__ or exc}); "
                "for PostgreSQL: pip install 'trustser[scale]' (psycopg)"
            ) from None
        except Exception as exc:  # bad URL, unreachable server, wrong password
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {redact(url)}: {first}") from None
    return optuna.storages.get_storage(rdb)


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


def open_study(storage: str | None, study_name: str, space: StudySpace | None = None, storage_obj=None):
    """Create (when ``space`` is given) or load a trustser study; a reloaded study must optimise the same axes."""
    import optuna

    url = storage or default_storage()
    if space is None:
        try:
            return optuna.load_study(study_name=study_name, storage=storage_obj or url)
        except KeyError:
            names = optuna.study.get_all_study_names(url)
            raise ConfigError(
                f"no study '{study_name}' in {redact(url)}; studies there: {', '.join(names) or 'none'}"
            ) from None
    directions = [o.direction for o in space.objectives]
    names = [o.name for o in space.objectives]
    study = optuna.create_study(
        storage=storage_obj or url,
        study_name=study_name,
        directions=directions,
        sampler=_sampler(space),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("objectives")
    if stored is not None and stored != names:
        raise ConfigError(
            f"study '{study_name}' in {redact(url)} optimises {stored}, the space {space.source} "
            f"asks for {names}; choose another --study-name"
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study '{study_name}' in {redact(url)} has other directions than {space.source}")
    study.set_user_attr("objectives", names)
    with warnings.catch_warnings():  # experimental since Optuna 3.2; optuna-dashboard's axes and columns read it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("space_file", space.source)
    return study


def resolve_study_name(storage: str | None, study_name: str | None) -> str:
    """The given name, or the only study in the storage."""
    import optuna

    if study_name:
        return study_name
    url = storage or default_storage()
    names = optuna.study.get_all_study_names(url)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"no studies in {redact(url)}; run `trustser study --space ...` first, or pass --storage")
    raise ConfigError(
        f"{redact(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); name one with --study-name"
    )


def _sampler(space: StudySpace):
    import optuna

    if space.sampler.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=space.sampler.seed)
    # grid: trials are enqueued with fixed params; the random sampler only fills trials beyond the grid
    return optuna.samplers.RandomSampler(seed=space.sampler.seed)

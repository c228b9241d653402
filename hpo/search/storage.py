"""Where trials live: opening a storage (its URL is named by hpo.urls), SQLite tuned for several processes,
the heartbeat that finds dead workers, and opening an existing study by name without creating anything.

Storage is any Optuna storage URL; by default one SQLite file, runs/hpo.db, holding every study (readable by
the `optuna` CLI and optuna-dashboard). PostgreSQL when workers span machines.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from hpo.errors import ConfigError, StudyError
from hpo.hints import command_hint
from hpo.search.proxy import SCHEME as PROXY_SCHEME
from hpo.search.proxy import ProxyStorage, open_proxy
from hpo.urls import redact, sqlite_path, storage_url

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")






# Seconds between a running trial's heartbeats, and the silence after which its worker counts as dead:
# the trial is then marked FAIL and re-enqueued. Tests shorten them through the environment.
HEARTBEAT_ENV = {"HPO_HEARTBEAT_INTERVAL": 10, "HPO_HEARTBEAT_GRACE": 30}


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds, from HPO_HEARTBEAT_INTERVAL / HPO_HEARTBEAT_GRACE or the defaults."""
    values = []
    for name, default in HEARTBEAT_ENV.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) <= 0:
            raise StudyError(f"{name}: expected a positive whole number of seconds, but got {raw!r}")
        values.append(int(raw))
    interval, grace = values
    if grace <= interval:
        raise StudyError(f"HPO_HEARTBEAT_GRACE ({grace}s) must exceed HPO_HEARTBEAT_INTERVAL ({interval}s), "
                         f"or live trials would be taken for dead ones")
    return interval, grace


def _tune_sqlite(engine) -> None:
    """Let several processes share one SQLite file.

    SQLite's default deferred BEGIN takes the write lock only at a transaction's first write; two
    processes that both read and then write deadlock, and one gets 'database is locked' at once, whatever
    the busy timeout. BEGIN IMMEDIATE takes the lock up front, where the timeout makes it wait instead.
    WAL lets readers that do not use this engine (optuna-dashboard, `optuna` CLI) read beside a writer.
    synchronous=NORMAL, SQLite's advice for WAL: a commit no longer waits for the disk (it waited about 2 ms, a
    few thousand times per study). A killed process still loses nothing it committed, and the file stays
    consistent; only a power loss or an operating-system crash can roll back the last commits.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not issue its own BEGIN; _begin does
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # the file is busy: WAL is an optimisation, retried on the next connection
        if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # per connection; safe in WAL mode only

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage | ProxyStorage:
    """An RDB storage with a heartbeat, so that a killed worker's trial is marked failed and retried; for
    grpc://HOST:PORT, a client of `hpo proxy` with hpo's own heartbeat (hpo.search.proxy)."""
    if url.startswith(PROXY_SCHEME):
        if not heartbeat:
            return open_proxy(url, None, None, None)
        interval, grace = heartbeat_settings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return open_proxy(url, interval, grace, RetryHeartbeatStaleTrialCallback(max_retry=2))
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Wait for the write lock instead of failing with 'database is locked' when workers share the file.
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        with warnings.catch_warnings():  # Optuna calls the heartbeat experimental; hpo relies on it knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = {"heartbeat_interval": interval, "grace_period": grace,
                      "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=2)}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(with_driver(url), engine_kwargs=engine_kwargs, **kwargs)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as e:
            # Processes that open a new database at the same moment all create its tables; the losers of
            # that race fail with 'already exists' (SQLite: OperationalError; PostgreSQL: ProgrammingError,
            # DuplicateTable) or a duplicate schema version, and find the tables next time.
            if attempt < 2 and (isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)):
                time.sleep(0.2)
                continue
            error = e
        except Exception as e:  # a wrong URL, a server that is down, a missing driver: the user's to fix
            error = e
        raise StudyError(f"cannot open storage {redact(url)}: {type(error).__name__}: "
                         f"{str(error).splitlines()[0]}") from None
    if storage.engine.name == "sqlite":
        storage.engine.dispose()  # drop the connections made while opening; new ones get the tuning
        _tune_sqlite(storage.engine)
    return storage




def with_driver(url: str) -> str:
    """postgresql://... with the driver that is installed: SQLAlchemy 2.1 reads a bare postgresql:// as
    psycopg 3, while hpo depends on psycopg2 (psycopg2-binary). An explicit postgresql+DRIVER:// is kept."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        for module in ("psycopg2", "psycopg"):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{module}://{rest}"
    return url



def close_storage(storage) -> None:
    """Close a storage's database connections (RDB) or its channel to the proxy."""
    if isinstance(storage, RDBStorage):
        storage.engine.dispose()
    elif isinstance(storage, ProxyStorage):
        storage.close()


def fail_stale(study: optuna.Study) -> None:
    """Mark the running trials of dead workers (silent past the grace period) FAIL; the storage's
    callback re-enqueues each as a WAITING trial with the same parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)



# --- opening a study by name --------------------------------------------------------------------


def study_name(name: str, smoke: bool = False) -> str:
    """A study's name in the storage: NAME, or the NAME-smoke study that `hpo study NAME --smoke` makes.
    A study file's path is accepted too (its stem is the name)."""
    if name.endswith((".yaml", ".yml")):
        name = Path(name).stem
    if not SAFE_NAME.match(name):
        raise ConfigError("<command line>", "name", f"{name!r} is not a safe study name (letters, digits, _ . -)")
    return name + ("-smoke" if smoke and not name.endswith("-smoke") else "")


def open_study(name: str, storage: str | None = None, smoke: bool = False) -> optuna.Study:
    """Load an existing study without creating anything: no storage file, no folder, no study."""
    full = study_name(name, smoke)
    url = storage_url(storage, mkdir=False)
    smoke_flag = " --smoke" if smoke else ""
    first = command_hint(f"study {name}{smoke_flag}", make=f"study NAME={name}" + (" ARGS=--smoke" if smoke else ""))
    if sqlite_path(url) is not None and not sqlite_path(url).is_file():
        raise StudyError(f"no study {full!r}: storage {redact(url)} does not exist yet; run `{first}` first")
    rdb = open_storage(url, heartbeat=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=full, storage=rdb)
    except KeyError:
        known = optuna.study.get_all_study_names(rdb)
        # The usual slip: the study was run with --smoke, this command without.
        if study_name(full, smoke=True) in known:
            raise StudyError(f"no study {full!r} in {redact(url)}, but {full + '-smoke'!r} is there: add --smoke "
                             f"(or run `{first.replace(' ARGS=--smoke', '')}` for the full study)") from None
        near = difflib.get_close_matches(full, known, n=1, cutoff=0.6)  # only what the storage holds
        hint = ""
        if near:
            base, is_smoke = near[0].removesuffix("-smoke"), near[0].endswith("-smoke")
            hint = f"did you mean {base!r}{' with --smoke' if is_smoke and not smoke else ''}? " \
                if is_smoke or not smoke else ""
        raise StudyError(f"no study {full!r} in {redact(url)} (studies there: {', '.join(known) or 'none'}); "
                         f"{hint}run `{first}` first") from None

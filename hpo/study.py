"""Study wiring: sampler, pruner and storage from their names; baselines; provenance; the run.

Registries are plain dicts of whitelisted names. Storage is any Optuna storage URL; by default one
SQLite file, runs/hpo.db, holding every study (readable by `optuna` CLI and optuna-dashboard).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import secrets
import sqlite3
import subprocess
import time
import warnings
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hpo.config import ROOT, StudyConfig
from hpo.errors import StudyError

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
}
# Defaults a careful user would pick; a study's sampler_options override them.
SAMPLER_DEFAULTS = {
    # multivariate+group model the depth-conditional widths jointly; constant_liar keeps parallel workers apart.
    "tpe": {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": 10},
}

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
# Warm-up of 4 epochs and 8 finished trials before pruning: Optuna's percentile pruners compare against
# COMPLETE trials only, and pruning at epoch 2 kills every slow starter (low lr, long cosine schedules),
# a short-horizon bias that left a study with its baselines and little else.
PRUNER_DEFAULTS = {
    "median": {"n_startup_trials": 8, "n_warmup_steps": 4},
    # Optuna's `percentile` is the share of trials kept: 75 prunes only the bottom quarter.
    "percentile": {"percentile": 75.0, "n_startup_trials": 8, "n_warmup_steps": 4},
    "hyperband": {"min_resource": 1, "reduction_factor": 3},
    "successive_halving": {"min_resource": 1, "reduction_factor": 3},
}

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
# Finished trials that count towards n_trials; failed ones (crashes, killed workers) are retried.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def grid_space(space) -> dict[str, list]:
    """GridSampler's search space: every categorical and small int range; float ranges cannot be gridded."""
    grid = {}
    for name, dist in space.distributions().items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
            values = list(range(dist.low, dist.high + 1, dist.step))
            if len(values) > 64:
                raise StudyError(f"{space.source}: {name}: an int range of {len(values)} values is too large for the "
                                 f"grid sampler; give it `step` or `choices`")
            grid[name] = values
        else:
            raise StudyError(f"{space.source}: {name}: the grid sampler needs `choices` (or a small int range), "
                             f"not a {'log ' if getattr(dist, 'log', False) else ''}range")
    return grid


def make_sampler(cfg: StudyConfig, space=None, seed: int | None = None) -> optuna.samplers.BaseSampler:
    options = {**SAMPLER_DEFAULTS.get(cfg.sampler, {}), **cfg.sampler_options}
    seed = cfg.seed if seed is None else seed
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(space or cfg.space), seed=seed, **options)
    return SAMPLERS[cfg.sampler](seed=seed, **options)


def max_epochs(space) -> int:
    d = space.params.get("epochs")
    if d is None:
        return 10
    return int(d.value if d.kind == "fixed" else d.high if d.kind == "int" else max(d.choices))


def make_pruner(cfg: StudyConfig, space=None) -> optuna.pruners.BasePruner:
    options = dict(PRUNER_DEFAULTS.get(cfg.pruner, {}))
    if cfg.pruner == "hyperband":
        options["max_resource"] = max_epochs(space or cfg.space)
    options.update(cfg.pruner_options)
    return PRUNERS[cfg.pruner](**options)


# --- storage ------------------------------------------------------------------------------------


def storage_url(arg: str | None = None, mkdir: bool = True) -> str:
    """The storage URL to use; readers (export, compare) pass mkdir=False so that they create nothing."""
    url = arg or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    if mkdir and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        # Relative SQLite paths are relative to the working directory; make the folder.
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


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
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not issue its own BEGIN; _begin does
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # the file is busy: WAL is an optimisation, retried on the next connection

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    """An RDB storage with a heartbeat, so that a killed worker's trial is marked failed and retried."""
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Wait for the write lock instead of failing with 'database is locked' when workers share the file.
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        kwargs = {"heartbeat_interval": interval, "grace_period": grace,
                  "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=2)}
    for attempt in range(3):
        try:
            storage = RDBStorage(with_driver(url), engine_kwargs=engine_kwargs, **kwargs)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            # Processes that open a new database at the same moment all create its tables; the losers of
            # that race fail with 'already exists' or a duplicate schema version, and find the tables next time.
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


def redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def with_driver(url: str) -> str:
    """postgresql://... with the driver that is installed: SQLAlchemy 2.1 reads a bare postgresql:// as
    psycopg 3, while hpo depends on psycopg2 (psycopg2-binary). An explicit postgresql+DRIVER:// is kept."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        for module in ("psycopg2", "psycopg"):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{module}://{rest}"
    return url


# --- provenance ---------------------------------------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("hpo", "optuna", "torch", "optuna-dashboard", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_hash(cfg: StudyConfig) -> str:
    return hashlib.sha256(json.dumps([cfg.raw, repr(cfg.space.params)], sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- the study ----------------------------------------------------------------------------------


def create_or_load(cfg: StudyConfig, storage, study_name: str, split_meta: dict, space=None,
                   sampler: optuna.samplers.BaseSampler | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (recording its provenance) or load it to resume. Returns (study, created)."""
    space = space or cfg.space
    sampler = sampler or make_sampler(cfg, space)
    try:  # exactly one of several processes starting at once creates it; the others load it
        study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=False,
                                    directions=cfg.directions, sampler=sampler, pruner=make_pruner(cfg, space))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                  pruner=make_pruner(cfg, space))
        created = False
        wait_until_ready(study)
    if created:
        study.set_metric_names([{"accuracy": "val_accuracy", "params": "n_params", "latency": "latency_ms"}[o]
                                for o in cfg.objectives])
        attrs = {
            "hpo_study": cfg.name, "study_file": cfg.source, "study_yaml": cfg.raw, "description": cfg.description,
            "space_file": space.source, "space": {n: repr(d) for n, d in space.params.items()},
            "config_hash": config_hash(cfg), "objectives": list(cfg.objectives), "sampler": cfg.sampler,
            "pruner": cfg.pruner, "seed": cfg.seed, "split": split_meta, "paper": cfg.paper,
            "tables": list(cfg.tables), "protocol": cfg.protocol, "versions": versions(), "git_commit": git_commit(),
        }
        for k, v in attrs.items():
            study.set_user_attr(k, v)
    return study, created


def enqueue_baselines(study: optuna.Study, cfg: StudyConfig, space=None, baselines=None) -> int:
    """Enqueue the paper's configurations as real trials, once (skip_if_exists); returns how many are new."""
    space = space or cfg.space
    baselines = cfg.baselines if baselines is None else baselines
    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for b in baselines:
        study.enqueue_trial(space.trial_params(b.hp), user_attrs={"baseline": b.name, "paper_reported": b.reported},
                            skip_if_exists=True)
    if not study.user_attrs.get(READY_ATTR):
        study.set_user_attr(READY_ATTR, True)
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - before


# Set once the creator has recorded the study's provenance and enqueued its baselines.
READY_ATTR = "baselines_enqueued"


def wait_until_ready(study: optuna.Study, timeout: float = 30.0) -> None:
    """A process that joins a study another one has just created waits until the creator has enqueued the
    baselines: enqueuing them from both at the same moment could duplicate them (skip_if_exists only sees
    what is already stored). A study with trials, or from before this attribute, is ready as it is."""
    deadline = time.monotonic() + timeout
    while (not study.user_attrs.get(READY_ATTR) and not study.get_trials(deepcopy=False)
           and time.monotonic() < deadline):
        time.sleep(0.2)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


# --- workers ------------------------------------------------------------------------------------


def fail_stale(study: optuna.Study) -> None:
    """Mark the running trials of dead workers (silent past the grace period) FAIL; the storage's
    callback re-enqueues each as a WAITING trial with the same parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def joining_seed() -> int:
    """A sampler seed for a process that resumes or joins a study. The study's own seed would replay the
    random start-up trials that the first process already drew; resumed and parallel runs cannot be
    reproduced anyway, since their trials interleave by timing."""
    return secrets.randbits(31)


class StudyFull(Exception):
    """Raised by BudgetStudy.ask when every trial slot is taken: optimize() ends without a new trial."""


class SurplusTrial(Exception):
    """A trial that started after the study's last slot was taken (see BudgetStudy)."""


def taken(study: optuna.Study) -> tuple[int, int]:
    """(trial slots in use, running trials), from one read of the storage: counted trials and running ones
    hold a slot (a running trial may yet be counted). One snapshot, so that a trial finishing between two
    reads cannot look like "every slot taken, none running"."""
    states = [t.state for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))]
    return len(states), states.count(TrialState.RUNNING)


class BudgetStudy(optuna.Study):
    """A study that ends at exactly n_trials counted trials, however many workers (processes, machines) share it.

    Optuna's MaxTrialsCallback stops a worker only after its own trial has finished, so N workers overshoot
    by up to N-1 trials. Here every counted or running trial holds a slot, and `ask`, which optimize calls
    for each new trial just after failing stale ones, creates no trial while every slot is taken: it waits
    as long as some of them are running (a running trial may still fail and free its slot: a killed
    worker's trial is failed by the heartbeat after the grace period and re-enqueued, and this worker then
    retries it), and ends the run once all of them are counted. Between that check and the new trial lie
    a few milliseconds in which another worker may take the last slot; `guard` catches that trial: it is
    not run, and ends FAIL (not counted) with outcome `surplus`.

    Optuna never fails a running trial that has no heartbeat at all: a worker killed between creating a
    trial and its heartbeat's first write leaves it RUNNING for good, and here it would hold its slot for
    good. While waiting, such a trial that stays without a heartbeat for longer than the grace period
    (by this worker's clock) is failed and re-enqueued as a stale one is.
    """

    poll_seconds = 1.0

    def __init__(self, study_name: str, storage, n_trials: int, *, sampler=None, pruner=None, on_wait=None,
                 should_stop=None):
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self.n_trials = n_trials
        self._rdb = storage if isinstance(storage, RDBStorage) and storage.heartbeat_interval else None
        self.on_wait = on_wait  # called with the number of running trials when this worker starts to wait
        self.should_stop = should_stop  # polled while waiting: True ends the run (e.g. Ctrl-C)

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        waiting, silent_since = False, {}
        while True:
            in_use, running = taken(self)
            if in_use < self.n_trials:
                break
            if not running or (self.should_stop is not None and self.should_stop()):
                raise StudyFull
            if not waiting and self.on_wait is not None:
                self.on_wait(running)
            waiting = True
            time.sleep(self.poll_seconds)
            fail_stale(self)
            self._fail_silent(silent_since)
        return super().ask(fixed_distributions)

    def _fail_silent(self, silent_since: dict[int, float]) -> None:
        """Fail (and re-enqueue, through the storage's stale-trial callback) running trials that have had no
        heartbeat at all for longer than the grace period; `silent_since` maps trial ids to when first seen."""
        if self._rdb is None:
            return
        query = sqlalchemy.text(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL")
        with self._rdb.engine.connect() as connection:
            silent = {row[0] for row in connection.execute(query, {"study": self._study_id})}
        now = time.monotonic()
        for trial_id in set(silent_since) - silent:
            del silent_since[trial_id]
        for trial_id in silent:
            if now - silent_since.setdefault(trial_id, now) <= self._rdb.grace_period:
                continue
            try:
                if not self._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile, or failed by another worker
            callback = self._rdb.get_heartbeat_stale_trial_callback()
            if callback is not None:
                callback(self, self._storage.get_trial(trial_id))

    def guard(self, objective):
        def guarded(trial: optuna.Trial):
            ahead = [t for t in self.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))
                     if t.number < trial.number]
            if len(ahead) >= self.n_trials:
                reason = f"all {self.n_trials} trials were taken by other workers when it started; not run"
                trial.set_user_attr("outcome", "surplus")
                trial.set_user_attr("reason", reason)
                raise SurplusTrial(reason)
            return objective(trial)

        return guarded

    def run(self, objective, *, max_trials: int, timeout: float | None = None, callbacks=()) -> None:
        """optimize() until every slot is taken, `max_trials` have run here (a bound for when trials keep
        failing, which frees their slots), the timeout passes, or a callback calls stop()."""
        try:
            self.optimize(self.guard(objective), n_trials=max_trials, timeout=timeout, catch=(Exception,),
                          callbacks=list(callbacks), gc_after_trial=False)
        except StudyFull:
            pass


def smoke_variant(cfg: StudyConfig, space):
    """The same study at tiny scale: one epoch, a few trials, two baselines, its own study name."""
    # Under the three-cycle schedule `epochs` is 3 x cycle_epochs: one epoch per cycle is its smallest run.
    cycles = {"cycle_epochs": 1} if any(space.possible("cycle_epochs", 0)) else {}
    space = space.with_fixed(epochs=1, **cycles)
    baselines = tuple(replace(b, hp={**b.hp, "epochs": 1}) for b in cfg.baselines[:2])
    cfg = replace(cfg, n_trials=min(cfg.n_trials, 4), baselines=baselines)
    return cfg, space

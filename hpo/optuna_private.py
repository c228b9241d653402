"""Every private name of Optuna and optuna-dashboard that hpo uses, and nowhere else (STYLE.md, lesson 17).

Written against optuna 5.1.0, optuna-dashboard 0.21.0 and SQLAlchemy 2.1.9 (WRITTEN_AGAINST).
tests/test_optuna_private.py checks each behaviour relied on here, so an upgrade that changes one fails
there first, with the name of what changed. Where a public API does the job, use it instead of adding here.

- A study's storage and ids: Optuna 5 reaches study system attributes only through the storage
  (Study.system_attrs is gone), and neither Study nor FrozenTrial exposes its storage id publicly.
- Trial notes: optuna-dashboard's key format for a note (its `_note` module), so that a trial's first note can be
  written without save_note's two reads of every study system attribute. The format is written out here rather
  than imported: importing optuna_dashboard loads its web app, Optuna's importance module and scikit-learn (about
  a second), in every worker process, which writes notes but serves no dashboard.
- Silent running trials: Optuna fails a stale trial only once it has a heartbeat; one that never wrote one is
  found by a query on Optuna's own `trials` and `trial_heartbeats` tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread
from optuna.trial import FrozenTrial

WRITTEN_AGAINST = {"optuna": "5.1.0", "optuna-dashboard": "0.21.0", "sqlalchemy": "2.1.9"}
NOTE_CHUNK = 2045  # the longest text one chunk of a note holds (optuna_dashboard._note.SYSTEM_ATTR_MAX_LENGTH)


def _note_ver_key(trial_id: int) -> str:  # optuna_dashboard._note.note_ver_key
    return f"dashboard:{trial_id}:note_ver"


def _note_str_key_prefix(trial_id: int) -> str:  # optuna_dashboard._note.note_str_key_prefix
    return f"dashboard:{trial_id}:note_str:"


def storage(study: optuna.Study) -> BaseStorage:
    """The storage a study was opened on (possibly Optuna's cache around an RDBStorage)."""
    return study._storage


def backend(study: optuna.Study) -> BaseStorage:
    """The storage under Optuna's cache: the RDBStorage for a database study."""
    return getattr(study._storage, "_backend", study._storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def save_first_trial_note(trial: optuna.Trial, body: str) -> None:
    """A trial's first note as optuna_dashboard.save_note stores it (version 1, in one chunk of at most
    NOTE_CHUNK characters), in two writes and no read."""
    if len(body) > NOTE_CHUNK:
        raise ValueError(f"a first note is one chunk: {len(body)} > {NOTE_CHUNK} characters")
    sid, tid = trial.study._study_id, trial._trial_id
    trial.storage.set_study_system_attr(sid, _note_ver_key(tid), 1)
    trial.storage.set_study_system_attr(sid, f"{_note_str_key_prefix(tid)}0", body)

_SILENT = sqlalchemy.text(
    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL")


def silent_running_trials(rdb: RDBStorage, study: optuna.Study) -> set[int]:
    """Ids of the study's RUNNING trials that have never written a heartbeat."""
    with rdb.engine.connect() as connection:
        return {row[0] for row in connection.execute(_SILENT, {"study": study._study_id})}


# --- what `hpo study --pack` needs of Study.optimize (hpo.search.pack_runner) ---------------------------------------
# A pack asks and tells its members itself (study.ask / study.tell), outside Study.optimize, but keeps two things
# optimize gives each trial: a heartbeat thread while it runs (so that a killed worker's trials are failed and
# retried), and the flags that let a callback call study.stop() (Optuna allows that only inside optimize).


def heartbeat_thread(study: optuna.Study, trial: optuna.Trial):
    """An unstarted thread that records trial's heartbeat in study's storage until joined (a no-op thread where
    the storage keeps no heartbeat), as Study.optimize runs for each trial."""
    return get_heartbeat_thread(trial._trial_id, study._storage)


@contextmanager
def optimize_loop(study: optuna.Study) -> Iterator[None]:
    """Inside: study.stop() is allowed (as in Study.optimize) and `stop_requested(study)` tells whether it was
    called."""
    study._stop_flag = False
    study._thread_local.in_optimize_loop = True
    try:
        yield
    finally:
        study._thread_local.in_optimize_loop = False


def stop_requested(study: optuna.Study) -> bool:
    return bool(study._stop_flag)


class Heartbeat(BaseHeartbeat):
    """Optuna's heartbeat interface, which Study.optimize and fail_stale_trials test storages for, with its private
    method under a public name: a storage that keeps its own heartbeat (hpo.search.proxy) implements
    `stale_trial_ids`."""

    def stale_trial_ids(self, study_id: int) -> list[int]:
        raise NotImplementedError

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)


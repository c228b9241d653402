"""The private Optuna names `hpo study --pack` needs, in one place (STYLE lesson 17). Written against Optuna
5.1; tests/test_pack.py::test_the_private_optuna_names_packs_use_exist
fails when an upgrade changes them.

A pack asks and tells its members itself (study.ask / study.tell), outside Study.optimize, but keeps two things
optimize gives each trial: a heartbeat thread while it runs (so that a killed worker's trials are failed and
retried), and the flags that let a callback call study.stop() (Optuna allows that only inside optimize)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread


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

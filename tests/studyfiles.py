"""Tiny study files for the worker, crash, PostgreSQL, dashboard and memory tests.

The data set is `mnist` as written by conftest.write_tiny_idx (HPO_DATA_DIR); the paper's Table 3
configurations are the baselines, so that every study holds enqueued trials that must not be duplicated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.search.storage import open_storage
from hpo.trials import COUNTED

ROOT = Path(__file__).resolve().parent.parent


def write_study(directory: Path, name: str = "tiny", *, n_trials: int = 6, epochs: int = 1, batch_size: int = 64,
                width: str = "{low: 8, high: 64, per_layer: true}", memory_mb: int | None = None,
                threads: int = 1, pruner: str = "none", baselines: bool = True, pack: int = 1,
                workers: int = 1, extra: str = "") -> Path:
    """`extra`: more study-file lines, appended as they are."""
    directory.mkdir(parents=True, exist_ok=True)
    space = directory / f"{name}_space.yaml"
    space.write_text(f"depth: 2\nwidth: {width}\nactivation: relu\noptimizer: adam\n"
                     f"lr: {{low: 1e-4, high: 1e-1, log: true}}\nbatch_size: {batch_size}\nepochs: {epochs}\n")
    budget = (f"{{threads: {threads}" + (f", memory_mb: {memory_mb}" if memory_mb else "")
              + (f", pack: {pack}" if pack > 1 else "") + (f", workers: {workers}" if workers > 1 else "") + "}")
    study = directory / f"{name}.yaml"
    study.write_text(
        f"dataset: mnist\nspace: {space}\nsampler: tpe\npruner: {pruner}\nseed: 0\nn_trials: {n_trials}\n"
        f"split: {{val_size: 100, seed: 0}}\nbudget: {budget}\n"
        + ("baselines: {paper: youn_hong_2024, tables: [3], "
           f"protocol: {{epochs: {epochs}, batch_size: {batch_size}}}}}\n" if baselines else "")
        + extra
    )
    return study


def hpo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", *args]


def run_hpo(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`hpo ARGS` in a fresh process (the environment carries the test's HPO_STORAGE and data)."""
    return subprocess.run(hpo_command(*args), check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def load(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))


def count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def baseline_trials(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]


def assert_no_duplicate_baselines(study: optuna.Study, expected: int = 3) -> None:
    """Each paper configuration is in the study once (a retried one: once per attempt, all but one FAIL)."""
    alive = [t for t in baseline_trials(study) if t.state != TrialState.FAIL]
    names = [t.user_attrs["baseline"] for t in alive]
    assert sorted(set(names)) == sorted(names), names
    assert len(names) == expected, names
    params = [tuple(sorted(t.params.items())) for t in alive]
    assert len(set(params)) == len(params), params


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")

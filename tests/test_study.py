"""The whole path: `hpo study` end to end, provenance, baselines, resume and interruption."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

import hpo
from hpo.cli import main
from hpo.search import objective as objective_mod
from hpo.trials import COUNTED, PROVENANCE_ATTR, set_provenance, study_attrs
from tests.test_export import SPACE
from tests.test_objective import tiny_study


def _load(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=os.environ["HPO_STORAGE"])


def test_smoke_study_end_to_end_on_fashion_mnist(fmnist_available, capsys):
    assert main(["study", "relu3_adam", "--smoke"]) == 0
    out = capsys.readouterr().out
    study = _load("relu3_adam-smoke")
    counted = [t for t in study.trials if t.state in COUNTED]
    assert len(counted) == 6  # 4 trials, then the 2 best again with another seed (confirm, scaled down by --smoke)
    assert [t.number for t in counted if t.user_attrs.get("confirm_of") is not None] == [4, 5]
    baselines = [t for t in study.trials if t.user_attrs.get("baseline")]
    assert [t.user_attrs["baseline"] for t in baselines] == ["T3 784-50-30-10 adam lr=0.001",
                                                             "T3 784-60-30-10 adam lr=0.001"]
    assert baselines[0].params == {"width_1": 50, "width_2": 30, "lr": 0.001, "batch_size": 64, "schedule": "constant",
                                   "weight_decay": 0.0, "dropout": 0.0, "label_smoothing": 0.0,
                                   "augment": "none"}  # the space searches augment; the paper trains without
    attrs = study_attrs(study)
    assert attrs["split"]["eval"] == "validation" and attrs["split"]["val_size"] == 10000
    assert attrs["split"]["dataset"] == "fashion_mnist" and attrs["split"]["verified"] == "payload sha256"
    assert attrs["versions"]["optuna"].startswith("5.") and attrs["protocol"]["epochs"] == 10
    assert study.metric_names == ["val_accuracy"]
    assert "top 4 trials" in out and "baseline" in out and "outcomes:" in out
    # readable by optuna's own CLI
    optuna_cli = Path(sys.executable).parent / "optuna"
    r = subprocess.run([str(optuna_cli), "trials", "--study-name", "relu3_adam-smoke", "--storage",
                        os.environ["HPO_STORAGE"], "-f", "json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"number": 3' in r.stdout
    r = subprocess.run([str(optuna_cli), "studies", "--storage", os.environ["HPO_STORAGE"]], capture_output=True,
                       text=True, timeout=120)
    widest = max(len(line) for line in r.stdout.splitlines())
    assert r.returncode == 0 and widest < 300, r.stdout  # split, protocol and provenance sit in a system attribute


def test_rerunning_continues_and_never_redoes_completed_trials(tmp_path, tiny_mnist):
    path = tiny_study(tmp_path, pruner="none")
    assert main(["study", path, "--trials", "2"]) == 0
    first = {t.number: (t.params, t.value) for t in _load("t").trials}
    assert main(["study", path, "--trials", "4"]) == 0
    trials = _load("t").trials
    assert len([t for t in trials if t.state in COUNTED]) == 4
    assert {t.number: (t.params, t.value) for t in trials if t.number in first} == first
    # already complete: nothing more runs
    assert main(["study", path, "--trials", "4"]) == 0
    assert len(_load("t").trials) == 4


def test_ctrl_c_leaves_storage_consistent_and_the_study_resumes(tmp_path, tiny_mnist, monkeypatch, capsys):
    path = tiny_study(tmp_path, pruner="none", n_trials=4)
    calls = {"n": 0}
    real_call = objective_mod.Objective.__call__

    def interrupted_third(self, trial):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_call(self, trial)

    monkeypatch.setattr(objective_mod.Objective, "__call__", interrupted_third)
    assert main(["study", path]) == 130
    assert "run the same command to continue" in capsys.readouterr().out
    trials = _load("t").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    kept = {t.number: t.value for t in trials[:2]}
    monkeypatch.setattr(objective_mod.Objective, "__call__", real_call)
    assert main(["study", path]) == 0
    trials = _load("t").trials
    assert len([t for t in trials if t.state in COUNTED]) == 4
    assert {t.number: t.value for t in trials[:2]} == kept


def test_baselines_are_enqueued_once(tmp_path, fmnist_available):
    assert main(["study", "relu2_sgd", "--smoke", "--trials", "2"]) == 0
    assert main(["study", "relu2_sgd", "--smoke", "--trials", "3"]) == 0
    names = [t.user_attrs.get("baseline") for t in _load("relu2_sgd-smoke").trials if t.user_attrs.get("baseline")]
    assert names == ["T1 784-50-10 sgd lr=0.001", "T1 784-40-10 sgd lr=0.01"]


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    assert "study" in capsys.readouterr().out


def test_python_use_emits_no_experimental_warning(tmp_path, tiny_mnist, monkeypatch):
    """hpo opts into Optuna's heartbeat, TPE `group` and metric names knowingly and silences their
    ExperimentalWarnings where it calls them, so that a notebook sees what the CLI shows: nothing."""
    monkeypatch.chdir(tmp_path)
    path = tiny_study(tmp_path, space=SPACE, sampler="tpe", pruner="median", n_trials=4,
                      baselines="{paper: youn_hong_2024, tables: [3]}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # pyproject's filterwarnings would hide them otherwise
        hpo.run_study(path, smoke=True)
    experimental = [f"{w.filename}:{w.lineno}: {w.message}" for w in seen
                    if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert experimental == []


def test_long_provenance_stays_out_of_the_attributes_optuna_studies_prints(tmp_path, tiny_mnist):
    path = tiny_study(tmp_path, pruner="none", n_trials=1)
    assert main(["study", path]) == 0
    study = _load("t")
    assert not {"study_yaml", "description", "space", "versions"} & set(study.user_attrs)
    attrs = study_attrs(study)
    assert attrs["study_yaml"]["dataset"] == "mnist" and attrs["versions"]["optuna"].startswith("5.")
    assert attrs["space"]["lr"] == {"kind": "float", "low": 1e-3, "high": 0.1, "log": True}, attrs["space"]
    optuna_cli = Path(sys.executable).parent / "optuna"
    r = subprocess.run([str(optuna_cli), "studies", "--storage", os.environ["HPO_STORAGE"]], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "study_yaml" not in r.stdout and "Dist(" not in r.stdout, r.stdout


def test_a_study_from_before_reads_the_same():
    """Studies stored before PROVENANCE_ATTR keep everything, the space as reprs, in their user attributes."""
    old = optuna.create_study()
    old.set_user_attr("space", {"lr": "Dist(name='lr', kind='float', low=1e-05, high=0.1, log=True)"})
    old.set_user_attr("study_yaml", {"dataset": "mnist"})
    assert study_attrs(old)["study_yaml"] == {"dataset": "mnist"}
    assert study_attrs(old)["space"]["lr"].startswith("Dist(")
    set_provenance(old, {"versions": {"optuna": "5"}})
    assert old._storage.get_study_system_attrs(old._study_id)[PROVENANCE_ATTR] == {"versions": {"optuna": "5"}}
    assert study_attrs(old)["versions"] == {"optuna": "5"} and study_attrs(old)["study_yaml"] == {"dataset": "mnist"}

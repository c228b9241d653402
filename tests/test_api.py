"""The commands as Python functions (hpo/api.py): the README's "From Python" snippet, run as written."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import hpo


def test_the_readme_python_snippet_runs(fmnist_available, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # exports and reports go to ./runs
    study = hpo.run_study("relu3_adam", smoke=True)
    assert isinstance(study, optuna.Study) and study.study_name == "relu3_adam-smoke"
    (path, trial), = hpo.export("relu3_adam", smoke=True)
    assert path == Path("runs/relu3_adam-smoke/best.yaml") and path.is_file()
    result = hpo.train(str(path), seeds=2, epochs=1)
    assert result["stats"]["n"] == 2 and result["where"] == "test"
    comparison = hpo.compare("relu3_adam", smoke=True)
    assert {e["kind"] for e in comparison["entries"]} == {"paper", "optimum", "reference"}
    assert hpo.report("relu3_adam", smoke=True) == Path("runs/relu3_adam-smoke/report.md")


def test_the_package_names_its_api_and_nothing_else():
    assert sorted(hpo.__all__) == ["compare", "export", "report", "run_study", "train"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hpo.nope  # noqa: B018

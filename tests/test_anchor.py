"""The anchor of every refactoring: relu3_adam's three paper baselines, trained by `hpo study` on the real
Fashion-MNIST split, give exactly the validation accuracies they gave when the numbers were first published
in the README (0.8686, 0.8733, 0.8716 on this machine's CPU build of torch). A change that moves them
changed what training computes."""

from __future__ import annotations

import pytest
import torch

from hpo.search.runner import run_study


def test_relu3_adam_baselines_are_unchanged(fmnist_available, tmp_path, monkeypatch):
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip("the recorded numbers are for torch 2.13.0 (CPU build)")
    # On the study's own 2 threads, as published: the floats depend on the thread count (the suite's cap is 1).
    monkeypatch.setenv("HPO_MAX_THREADS", "2")
    study = run_study("relu3_adam", trials=3, storage=f"sqlite:///{tmp_path / 'anchor.db'}")
    got = {t.user_attrs["baseline"]: t.values[0] for t in study.trials}
    assert got == {"T3 784-50-30-10 adam lr=0.001": 0.8686, "T3 784-60-30-10 adam lr=0.001": 0.8733,
                   "T3 784-60-40-10 adam lr=0.001": 0.8716}

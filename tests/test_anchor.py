"""The anchor of every refactoring: relu3_adam's three paper baselines, trained by `hpo study` on the real
Fashion-MNIST split, give exactly the validation accuracies they gave when the numbers were pinned. A change
that moves them changed what training computes.

The floats depend on torch's thread count. This test pins the run on one thread (0.8674, 0.8689, 0.8697), the
suite's cap and what each of relu3_adam's two workers uses (`make study NAME=relu3_adam` prints them as trials 0-2
since 2026-12-05). On 2 threads in one process (`--workers 1`) they are 0.8686, 0.8733, 0.8716. On 2 cores beside
another test process, 2 threads that spin while they wait would make this test several times slower, and one
thread trains these models as fast alone."""

from __future__ import annotations

import pytest
import torch

from hpo.search.runner import run_study


def test_relu3_adam_baselines_are_unchanged(fmnist_available, tmp_path, monkeypatch):
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip("the recorded numbers are for torch 2.13.0 (CPU build)")
    monkeypatch.setenv("HPO_MAX_THREADS", "1")
    study = run_study("relu3_adam", trials=3, storage=f"sqlite:///{tmp_path / 'anchor.db'}")
    # the three trials are the baselines; relu3_adam then confirms its best (all three, here) once more each
    got = {t.user_attrs["baseline"]: t.values[0] for t in study.trials if "baseline" in t.user_attrs}
    assert sorted(t.user_attrs.get("confirm_of") for t in study.trials if "baseline" not in t.user_attrs) == [0, 1, 2]
    assert got == {"T3 784-50-30-10 adam lr=0.001": 0.8674, "T3 784-60-30-10 adam lr=0.001": 0.8689,
                   "T3 784-60-40-10 adam lr=0.001": 0.8697}

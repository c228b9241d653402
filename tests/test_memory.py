"""hpo.training.memory and the memory cap per trial (budget.memory_mb): refused on the estimate before training,
stopped on the measured peak after an epoch, the study goes on; memory does not grow across trials."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import weakref
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from studyfiles import load, write_study

import hpo.search.objective as objective_mod
from hpo.search.runner import run_study
from hpo.search.study import load_data, prepare
from hpo.search.studyfile import load_study
from hpo.training.augment import BatchAugment, draw, generator
from hpo.training.memory import OPTIMIZER_STATE, PeakMemory, augment_bytes, current_rss, estimate_bytes
from hpo.training.models import build_model
from hpo.training.spec import TrainConfig

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.yaml"))


def _estimate(optimizer="adam", batch_size=64, widths=(64, 32), dropout=0.0):
    model = build_model(TrainConfig(widths=widths, dropout=dropout), (1, 28, 28), 10)
    return estimate_bytes(model, optimizer=optimizer, batch_size=batch_size, in_features=784, n_train=1000,
                          n_eval=100), sum(p.numel() * 4 for p in model.parameters())


def test_the_estimate_counts_optimizer_state_and_activations():
    adam, param_bytes = _estimate("adam")
    sgd, _ = _estimate("sgd")
    momentum, _ = _estimate("sgd_momentum")
    assert adam - sgd == 2 * param_bytes and momentum - sgd == param_bytes
    assert sgd >= 3 * param_bytes  # weights, gradients, the foreach update's temporaries
    small, _ = _estimate(batch_size=32)
    large, _ = _estimate(batch_size=512)
    assert large > small
    assert _estimate(dropout=0.2)[0] > adam  # dropout keeps a mask and an output per layer


@pytest.mark.parametrize("kind,shift", [("shift", 2), ("shift_flip", 8)])
def test_the_estimate_counts_augmentation_buffers_as_allocated(kind, shift):
    """What augment_bytes adds equals what a BatchAugment really holds after an epoch's draws and one batch."""
    model = build_model(TrainConfig(widths=(16,)), (1, 28, 28), 10)
    kw = dict(optimizer="adam", batch_size=64, in_features=784, n_train=1000, n_eval=100)
    added = estimate_bytes(model, **kw, augment=kind, augment_shift=shift) - estimate_bytes(model, **kw)
    assert added == augment_bytes(kind, shift, batch_size=64, in_features=784, n_train=1000) > 0
    assert augment_bytes("none", shift, batch_size=64, in_features=784, n_train=1000) == 0
    aug = BatchAugment(kind, shift, 0, 784, -1.0, "cpu")
    aug.epoch(1000)
    aug.batch(torch.zeros(64, 784), 0)
    draws = draw(kind, shift, 1000, generator(0))
    held = [aug.shifter.table, aug.codes, draws, *aug.shifter._buffers]
    assert added == sum(t.numel() * t.element_size() for t in held)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_fits_its_largest_configuration_in_its_memory_cap(path):
    """The cap refuses what cannot fit, never the shipped spaces' own corners (nor the paper's configurations)."""
    cfg = load_study(str(path))
    if not cfg.budget.memory_mb:
        pytest.skip(f"{path.name} sets no memory cap")
    space = cfg.space
    depth = max(space.possible("depth", 1))
    width = space.possible("width", 64)
    widths = width[0] if isinstance(width[0], tuple) else (max(width),) * depth
    batch_size = max(space.possible("batch_size", 64))
    optimizer = max(space.possible("optimizer", "adam"), key=lambda o: OPTIMIZER_STATE[o])
    for model_kind in space.possible("model", "mlp"):
        tc = TrainConfig(model=model_kind, widths=widths, batch_size=batch_size, optimizer=optimizer,
                         activation=space.possible("activation", "relu")[0],
                         dropout=max(space.possible("dropout", 0.0)))
        augments = space.possible("augment", "none")
        need = estimate_bytes(build_model(tc, (1, 28, 28), 10), optimizer=optimizer, batch_size=batch_size,
                              in_features=784, n_train=60000 - cfg.val_size, n_eval=cfg.val_size,
                              augment="shift_flip" if "shift_flip" in augments else augments[0],
                              augment_shift=max(space.possible("augment_shift", 0)))
        assert need < cfg.budget.memory_mb * 2**20, (model_kind, widths, need / 2**20)


PEAK_SCRIPT = """
import gc, torch
from hpo.training.memory import PeakMemory
gc.collect()
meter = PeakMemory().start()
x = torch.ones(16 * 2**20)  # 64 MiB, touched
del x
print(meter.growth(), PeakMemory().start().growth())
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_sees_an_allocation_that_is_already_freed():
    # In a fresh process: inside the test session another test's leftover thread or a collection of its garbage can
    # free as much as the allocation adds between start() and the allocation, which hides it from the peak.
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True).stdout
    grown, after_restart = (int(v) for v in out.split())
    assert grown >= 60 * 2**20
    assert after_restart < 60 * 2**20  # a new start forgets the old peak


def test_over_the_cap_on_its_estimate_a_trial_is_not_trained_and_the_study_goes_on(tiny_mnist, tmp_path):
    study_file = write_study(tmp_path, n_trials=4, batch_size=256, width="{low: 30, high: 64, per_layer: true}",
                             memory_mb=1)
    run_study(str(study_file), console=Console(file=io.StringIO()))
    study = load(os.environ["HPO_STORAGE"])
    assert len(study.trials) == 4
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "memory_cap"
        assert t.user_attrs["reason"].startswith("needs an estimated ")
        assert t.user_attrs["reason"].endswith("over the 1 MiB cap; not trained")
        assert "epochs_trained" not in t.user_attrs and not t.intermediate_values


class _Swelling(PeakMemory):
    """A trial whose memory grows 100 MiB per measurement, whatever the allocator does."""

    def start(self):
        self.calls = 0
        return self

    def growth(self) -> int:
        self.calls += 1
        return self.calls * 100 * 2**20


def test_over_the_cap_while_training_a_trial_is_stopped_after_the_epoch(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(objective_mod, "PeakMemory", _Swelling)
    study_file = write_study(tmp_path, n_trials=2, epochs=3, memory_mb=50, baselines=False)
    run_study(str(study_file), console=Console(file=io.StringIO()))
    study = load(os.environ["HPO_STORAGE"])
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "memory_cap"
        assert "by the end of epoch 1, over the 50 MiB cap" in t.user_attrs["reason"]
        assert t.user_attrs["epochs_trained"] == 1 and len(t.user_attrs["val_curve"]) == 1


def test_memory_does_not_grow_across_many_trials(tiny_mnist, tmp_path, monkeypatch):
    """30 trials in one process: no trial's model outlives it (no reference kept, not even until a
    garbage collection), and resident memory levels off."""
    cfg, space = prepare(str(write_study(tmp_path, epochs=1, memory_mb=2048, baselines=False,
                                         width="{low: 16, high: 256, per_layer: true}")))
    splits = load_data(cfg)
    models = []
    build = objective_mod.build_model
    monkeypatch.setattr(objective_mod, "build_model", lambda *a, **k: models.append(weakref.ref(m := build(*a, **k)))
                        or m)
    rss: list[int] = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective_mod.Objective(cfg, splits, threads=1, space=space), n_trials=30,
                   callbacks=[lambda s, t: rss.append(current_rss())])
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(models) == 30
    assert sum(ref() is not None for ref in models) == 0  # before any gc.collect()
    gc.collect()
    grown = rss[-1] - rss[9]
    assert grown < 32 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over trials 10-30"

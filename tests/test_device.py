"""Every command that trains honours the data's device; a guard that runs here without a GPU.

The guard stands in for a GPU: inside it, torch's default device is `meta`, so a tensor that the code makes
without naming a device lands on `meta` instead of beside the data, and a mode fails the first call in which
tensors of two devices meet (on a GPU this is the CPU accumulator that meets CUDA tensors, or a CUDA kernel
fed a CPU tensor). `.item()` on a `meta` tensor fails too. Models are built on the CPU on purpose
(hpo.training.models.build_model) and moved to the data's device by train(). Where CUDA is available the
same tests also run with the data on the GPU.
"""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from hpo import data as data_mod
from hpo.bench.throughput import fwd_bwd_epoch, matmul_epoch
from hpo.cli import main
from hpo.results.mix_seeds import mix_over_seeds
from hpo.results.retrain import run_seeds
from hpo.search.objective import Objective, measure_latency_ms
from hpo.search.studyfile import load_study
from hpo.training.diagnostics import trial_attrs
from hpo.training.fastmlp import fast_step
from hpo.training.loop import train
from hpo.training.models import accuracy, build_model
from hpo.training.runtime import resolve_device
from hpo.training.spec import TrainConfig
from tests.test_objective import tiny_study

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# Where tensors of two devices meet on purpose: an explicit copy between them, and torch's own Module.to() (its
# shallow-copy check and `param.data = moved`), seen on a real GPU.
TRANSFERS = {"copy_", "_has_compatible_shallow_copy_type", "to", "__set__"}  # __set__: param.data = …


class DevicesMeet(AssertionError):
    pass


class _SameDevice(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        if len(devices) > 1 and getattr(func, "__name__", "") not in TRANSFERS:
            raise DevicesMeet(f"{getattr(func, '__qualname__', func)}: tensors on {sorted(map(str, devices))} meet")
        return func(*args, **kwargs)


class device_guard:
    """`with device_guard():` — tensors made without a device go to `meta`; tensors of two devices may not meet."""

    def __enter__(self):
        self._default, self._same = torch.device("meta"), _SameDevice()
        self._default.__enter__()
        self._same.__enter__()
        return self

    def __exit__(self, *exc):
        self._same.__exit__(*exc)
        self._default.__exit__(*exc)


@pytest.fixture(params=DEVICES)
def splits(request, tiny_mnist):
    return data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0).to(request.param)


def test_the_guard_catches_an_accumulator_made_off_the_data_device(tiny_mnist):
    """The bug the guard is for (models.accuracy once summed CUDA counts into a CPU tensor)."""
    x = torch.randn(8, 3)

    def count_positive(x):
        total = torch.zeros((), dtype=torch.long)  # no device: the CPU, whatever x is on
        total += (x > 0).sum()
        return total.item()

    assert count_positive(x) == int((x > 0).sum())  # fine on a CPU-only run: nothing would show the bug
    with pytest.raises((DevicesMeet, RuntimeError)), device_guard():
        count_positive(x)


@pytest.mark.parametrize("cfg", [
    TrainConfig(widths=(16, 8), epochs=2),  # the hand-written ReLU MLP step
    TrainConfig(widths=(16, 8), epochs=1, optimizer="sgd_momentum", lr=0.05, schedule="cosine", dropout=0.1,
                label_smoothing=0.1, init="kaiming"),
    TrainConfig(widths=(16,), activation="tanh", epochs=1, optimizer="adamw", schedule="onecycle", weight_decay=1e-4),
    TrainConfig(widths=(12, 12), activation=("leaky_relu", "prelu"), epochs=1, optimizer="sgd", lr=0.1),
    TrainConfig(model="cnn", widths=(4, 8, 16), activation="mix", cycle_epochs=1),
], ids=["fast-relu", "sgd-momentum-cosine", "tanh-adamw-onecycle", "per-layer", "cnn-mix-cycles"])
def test_train_keeps_every_tensor_on_the_data_device(splits, cfg):
    with device_guard():
        r = train(cfg, splits, threads=1)
        acc = accuracy(r.model, splits.eval_x, splits.eval_y)
        attrs = trial_attrs(r.model, splits.eval_x)
    assert r.status == "complete" and r.epochs == cfg.epochs
    assert next(r.model.parameters()).device.type == splits.train_x.device.type
    assert acc == pytest.approx(r.eval_acc) and len(attrs["dead_units"]) == len(cfg.widths)


def test_the_same_seed_gives_the_same_network_on_any_device(tiny_mnist):
    """Models are initialised on the CPU: a seed names one network, wherever it then trains."""
    with device_guard():
        a = build_model(TrainConfig(widths=(16, 8), seed=3), (1, 28, 28), 10)
    b = build_model(TrainConfig(widths=(16, 8), seed=3), (1, 28, 28), 10)
    assert all(p.device.type == "cpu" for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_objective_trials_stay_on_the_data_device(splits, tmp_path):
    cfg = load_study(tiny_study(tmp_path, pruner="none", objectives="[accuracy, params, latency]"))
    study = optuna.create_study(directions=cfg.directions)
    with device_guard():
        study.optimize(Objective(cfg, splits, threads=1), n_trials=2)
    reasons = [t.user_attrs.get("reason") for t in study.trials]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, reasons
    assert all(t.user_attrs["latency_ms"] > 0 for t in study.trials)


def test_latency_is_measured_on_the_data_device(splits):
    model = build_model(TrainConfig(widths=(8,)), (1, 28, 28), 10).to(splits.eval_x.device)
    with device_guard():
        assert measure_latency_ms(model, splits.eval_x, repeats=3) > 0


def test_compare_runs_and_mix_seeds_stay_on_the_data_device(splits):
    hp = TrainConfig(widths=(8,), epochs=1).to_dict()
    mix = TrainConfig(widths=(8,), activation="mix", epochs=1).to_dict()
    with device_guard():
        runs = run_seeds(hp, splits, [0, 1], threads=1)
        mixed = mix_over_seeds(mix, splits, [0], threads=1)
    assert [r["status"] for r in runs] == ["complete"] * 2
    assert len(mixed[0]["mix_p"]) == 1 and mixed[0]["status"] == "complete"


def test_bench_bounds_run_on_the_asked_device(splits):
    device = str(splits.train_x.device)
    with device_guard():
        assert matmul_epoch(256, 64, device=device) > 0
        assert fwd_bwd_epoch(splits.train_x, splits.train_y, 256, 64) > 0


def test_the_fast_step_writes_gradients_that_are_missing(tiny_mnist):
    """After zero_grad(set_to_none=True) the hand-written step allocates .grad again, equal to autograd's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    loss_fn = nn.CrossEntropyLoss()
    step = fast_step(model, loss_fn)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    model.zero_grad(set_to_none=True)
    assert model[0].weight.grad is None
    loss = step(x, y)
    fast = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        ref = loss_fn(model(x), y)
        ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for g, p in zip(fast, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_splits_move_once_and_stay_put(tiny_mnist):
    s = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    assert s.to("cpu") is s
    moved = s.to("meta")
    assert moved.train_x.device.type == "meta" and moved.meta == s.meta


def test_resolve_device_names_the_flag_and_the_reason():
    assert resolve_device(None) == "cpu" and resolve_device(None, "cpu") == "cpu"
    with pytest.raises(Exception, match="--device: expected cpu or cuda, but got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="--device: cuda was asked for, but torch sees no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["train", "CONFIG", "--device", "cuda"],
    ["bench", "--quick", "--only", "throughput", "--device", "cuda", "--out", "OUT"],
])
def test_commands_refuse_cuda_without_a_gpu_in_one_line(argv, tmp_path, capsys, tiny_mnist):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: mnist\ntrain: {widths: [8], activation: relu, optimizer: adam, lr: 0.001, "
                      "batch_size: 32, epochs: 1, seed: 0}\n")
    argv = [str(config) if a == "CONFIG" else str(tmp_path / "b.md") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device: cuda was asked for, but torch sees no CUDA device" in err
    assert not (tmp_path / "b.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_study_on_cuda_without_a_gpu_stops_in_one_line_naming_the_file(tmp_path, capsys, tiny_mnist, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tiny_study(tmp_path, budget="{device: cuda}")
    assert main(["study", study]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t.yaml: budget.device: cuda was asked for, but torch sees no CUDA device" in err

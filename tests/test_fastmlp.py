"""The hand-written ReLU MLP step computes what autograd computes, and declines everything else."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hpo import data as data_mod
from hpo.training import fastmlp
from hpo.training.loop import train
from hpo.training.models import mlp
from hpo.training.spec import TrainConfig


def autograd_step(model, loss_fn, x, y):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("widths, dropout, smoothing", [
    ((60, 40), 0.0, 0.0), ((32,), 0.0, 0.1), ((24, 16, 8), 0.3, 0.0), ((60, 40), 0.2, 0.15),
])
def test_loss_and_gradients_match_autograd(widths, dropout, smoothing):
    torch.manual_seed(0)
    model = mlp(784, widths, 10, "relu", dropout)
    twin = copy.deepcopy(model)
    x, y = torch.randn(50, 784), torch.randint(0, 10, (50,))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    torch.manual_seed(7)  # the same dropout noise for both: the same generator calls in the same order
    want_loss, want_grads = autograd_step(model, loss_fn, x, y)
    step = fastmlp.fast_step(twin, loss_fn)
    assert step is not None
    torch.manual_seed(7)
    loss = step(x, y)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, want_loss)
    for got, want in zip([p.grad for p in twin.parameters()], want_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_eval_mode_turns_dropout_off():
    torch.manual_seed(0)
    model = mlp(784, (16,), 10, "relu", 0.5).eval()
    x, y = torch.randn(8, 784), torch.randint(0, 10, (8,))
    step = fastmlp.fast_step(model, nn.CrossEntropyLoss())
    torch.testing.assert_close(step(x, y), step(x, y))


@pytest.mark.parametrize("make", [
    lambda: mlp(784, (16,), 10, "tanh"),  # another activation
    lambda: mlp(784, (16,), 10, "leaky_relu"),
    lambda: nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.ReLU(), nn.Linear(16, 10)),
    lambda: nn.Sequential(nn.Linear(784, 16), nn.ReLU()),  # does not end on a Linear
    lambda: nn.Sequential(nn.Linear(784, 16, bias=False), nn.ReLU(), nn.Linear(16, 10)),
])
def test_anything_else_trains_through_autograd(make):
    assert fastmlp.fast_step(make(), nn.CrossEntropyLoss()) is None


def test_frozen_parameters_hooks_and_other_losses_decline():
    model = mlp(784, (16,), 10)
    assert fastmlp.fast_step(model, nn.CrossEntropyLoss(reduction="sum")) is None
    assert fastmlp.fast_step(model, nn.NLLLoss()) is None
    model[0].weight.requires_grad_(False)
    assert fastmlp.fast_step(model, nn.CrossEntropyLoss()) is None
    hooked = mlp(784, (16,), 10)
    hooked[1].register_forward_hook(lambda *a: None)
    assert fastmlp.fast_step(hooked, nn.CrossEntropyLoss()) is None


def test_train_learns_the_same_with_and_without_the_fast_path(tiny_mnist):
    splits = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    cfg = TrainConfig(widths=(32, 16), optimizer="adam", lr=3e-3, epochs=2, batch_size=32, dropout=0.1,
                      label_smoothing=0.05)
    fast = train(cfg, splits, threads=1)
    slow = train(cfg, splits, threads=1, fast=False)
    assert fast.status == slow.status == "complete"
    # Same computation up to floating-point summation order.
    assert fast.loss_curve == pytest.approx(slow.loss_curve, rel=1e-3)
    assert fast.eval_curve == pytest.approx(slow.eval_curve, abs=0.02)

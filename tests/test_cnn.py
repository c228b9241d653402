"""The CNN option: Bansal 2022's shape (conv, conv, fc, fc; three activation layers), built from plain values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hpo import data as data_mod
from hpo.errors import ConfigError
from hpo.search.space import Space
from hpo.training.activations import Mix, activation_layers
from hpo.training.loop import train
from hpo.training.models import MODELS, accuracy, build_model, cnn, count_params
from hpo.training.spec import TrainConfig


def test_the_paper_s_shape_from_flat_inputs():
    model = cnn(784, (16, 32, 64), 10, activation="mix")
    out = model(torch.randn(5, 784))
    assert out.shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [16, 32] and [f.out_features for f in fcs] == [64, 10]
    assert len(activation_layers(model)) == 3 and all(isinstance(a, Mix) for a in activation_layers(model))
    # 3x3 convs; two 2x2 poolings leave 7x7 maps
    assert count_params(model) == (9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 7 * 7 * 64 + 64) + (64 * 10 + 10) + 3 * 3


def test_per_layer_activations_in_order():
    model = cnn(784, (4, 4, 8), 10, activation=("relu", "tanh", "mix"))
    assert [type(a) for a in activation_layers(model)] == [nn.ReLU, nn.Tanh, Mix]


def test_build_model_dispatches_and_inits_convs():
    assert "cnn" in MODELS
    a = build_model(TrainConfig(model="cnn", widths=(4, 8), init="kaiming", seed=3), (1, 28, 28), 10)
    b = build_model(TrainConfig(model="cnn", widths=(4, 8), init="kaiming", seed=3), (1, 28, 28), 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    conv = next(m for m in a.modules() if isinstance(m, nn.Conv2d))
    assert torch.count_nonzero(conv.bias) == 0  # kaiming init zeroes conv biases too


@pytest.mark.parametrize("widths", [(8,), (4, 4, 4, 4, 4, 4)])
def test_cnn_refuses_depths_it_cannot_build(widths):
    with pytest.raises(ValueError, match="cnn needs 2 to 5 widths"):
        cnn(784, widths, 10)


@pytest.mark.parametrize("raw", [{"model": "cnn"}, {"model": "cnn", "depth": {"low": 1, "high": 3}},
                                 {"model": {"choices": ["mlp", "cnn"]}, "depth": 6}])
def test_space_refuses_cnn_depths_it_cannot_build(raw):
    with pytest.raises(ConfigError, match="model cnn needs depth 2-5"):
        Space.parse(raw, "s.yaml")


def test_cnn_trains_on_a_small_fashion_mnist_subset(fmnist_available):
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0, train_limit=600,
                                  eval_limit=300)
    cfg = TrainConfig(model="cnn", widths=(8, 16, 32), activation="relu", optimizer="adam", lr=3e-3, epochs=1,
                      batch_size=32)
    r = train(cfg, splits, threads=1)
    assert r.status == "complete" and r.epochs == 1 and math.isfinite(r.loss_curve[0])
    assert r.eval_acc > 0.3  # ten classes: chance is 0.1
    assert accuracy(r.model, splits.eval_x, splits.eval_y, chunk=7) == pytest.approx(r.eval_acc)

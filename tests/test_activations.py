"""Activations: values and gradients against closed forms, the mixture's convexity, properties, `hpo activations`."""

from __future__ import annotations

import math

import pytest
import torch

from hpo.cli import main
from hpo.data import Splits
from hpo.errors import ConfigError
from hpo.search.papers import load_paper
from hpo.search.space import Space
from hpo.tools import activation_properties as act
from hpo.tools.activation_properties import value_and_grad
from hpo.training.activations import ACTIVATIONS, Mix, make_activation, mix_p
from hpo.training.loop import train
from hpo.training.models import mlp
from hpo.training.spec import TrainConfig

PAPER_MIX_FMNIST = load_paper("bansal_2022").mix_weights["fashion_mnist"]

X = torch.linspace(-6, 6, 1000, dtype=torch.float64)  # even count: no point lands on a kink at 0


def _phi(x):
    return torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _Phi(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _sig(x):
    return 1 / (1 + torch.exp(-x))


# (value, derivative) written from the formulas, not from torch.nn
REFERENCE = {
    "relu": (lambda x: torch.where(x > 0, x, 0 * x), lambda x: (x > 0).double()),
    "leaky_relu": (lambda x: torch.where(x >= 0, x, 0.01 * x), lambda x: torch.where(x >= 0, 1.0, 0.01)),
    "prelu": (lambda x: torch.where(x >= 0, x, 0.25 * x), lambda x: torch.where(x >= 0, 1.0, 0.25)),
    "elu": (lambda x: torch.where(x > 0, x, torch.exp(x) - 1), lambda x: torch.where(x > 0, 1.0, torch.exp(x))),
    "gelu": (lambda x: x * _Phi(x), lambda x: _Phi(x) + x * _phi(x)),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * (1 - _sig(x)))),
    "tanh": (lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
             lambda x: 1 - ((torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))) ** 2),
    "sigmoid": (_sig, lambda x: _sig(x) * (1 - _sig(x))),
    "sin": (torch.sin, torch.cos),
    # mix at its initial, equal weights
    "mix": (lambda x: (torch.relu(x) + torch.tanh(x) + torch.sin(x)) / 3,
            lambda x: ((x > 0).double() + 1 - torch.tanh(x) ** 2 + torch.cos(x)) / 3),
}


def test_every_registered_activation_has_a_reference():
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_values_and_gradients_match_the_closed_forms(name):
    y, g = value_and_grad(make_activation(name, 8), X)
    f, df = REFERENCE[name]
    # rtol 1e-7: leaky_relu and prelu keep their slope as a float32 (0.01 is 0.0099999998)
    torch.testing.assert_close(y, f(X), atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(g, df(X).double(), atol=1e-10, rtol=1e-7)


def test_leaky_relu_takes_its_slope():
    y, g = value_and_grad(make_activation("leaky_relu", 4, negative_slope=0.2), X)
    torch.testing.assert_close(y, torch.where(X >= 0, X, 0.2 * X))
    assert set(g.unique().tolist()) == {0.2, 1.0}


@pytest.mark.parametrize("p", PAPER_MIX_FMNIST)
def test_mix_with_given_weights_is_the_weighted_sum(p):
    m = Mix(p)
    torch.testing.assert_close(m.p().double(), torch.tensor(p, dtype=torch.float64) / sum(p), atol=1e-6, rtol=0)
    y, g = value_and_grad(m, X)
    q = m.p().double().detach()
    torch.testing.assert_close(y, q[0] * torch.relu(X) + q[1] * torch.tanh(X) + q[2] * torch.sin(X))
    torch.testing.assert_close(g, q[0] * (X > 0).double() + q[1] * (1 - torch.tanh(X) ** 2) + q[2] * torch.cos(X))


def test_mix_refuses_weights_that_are_not_a_mixture():
    for bad in ([0.5, -0.1, 0.6], [0, 0, 0], [1, 2]):
        with pytest.raises(ValueError):
            Mix(bad)


def test_mix_weights_stay_a_convex_combination_however_hard_they_are_pushed():
    m = Mix()
    with torch.no_grad():
        m.v.copy_(torch.tensor([-50.0, 3.0, -1e4]))  # what an unconstrained w would turn negative
    p = m.p()
    assert (p >= 0).all() and p.sum().item() == pytest.approx(1, abs=1e-6) and (m.w >= 0).all()


def _blobs(n=400, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centres = torch.randn(4, 20, generator=g) * 2
    x = centres[y] + torch.randn(n, 20, generator=g)
    return Splits(x[:300], y[:300], x[300:], y[300:])


def test_mix_weights_stay_convex_through_training_and_do_move():
    data = _blobs()
    cfg = TrainConfig(widths=(16, 16), activation="mix", optimizer="adam", lr=0.2, epochs=4, batch_size=16)
    model = mlp(20, cfg.widths, 4, "mix")
    seen = []
    train(cfg, data, threads=1, model=model, on_epoch=lambda e, a: seen.append(mix_p(model)))
    assert len(seen) == 4
    for per_layer in seen:
        for p in per_layer:
            assert min(p) >= 0 and sum(p) == pytest.approx(1, abs=1e-5)
    assert any(abs(v - 1 / 3) > 0.05 for p in seen[-1] for v in p)  # learned, not stuck at the start


def test_activation_is_a_per_layer_categorical_in_a_space():
    space = Space.parse({"depth": 2, "activation": {"choices": ["relu", "mix", "sin"], "per_layer": True}}, "s.yaml")
    assert space.params["activation"].choices == ("relu", "mix", "sin")
    with pytest.raises(ConfigError, match="activation: unknown value 'swish'"):
        Space.parse({"activation": "swish"}, "s.yaml")


def test_properties_follow_the_definitions():
    props = {p.name: p for p in (act.properties(n, f) for n, f in act.showcase().items())}
    relu, sin, tanh, elu = props["relu"], props["sin"], props["tanh"], props["elu"]
    assert relu.monotonic and not relu.bounded and not relu.smooth and relu.unit_slope and relu.extremal
    assert relu.low == 0 and relu.high == math.inf
    assert not sin.monotonic and sin.bounded and sin.smooth and not sin.unit_slope
    assert tanh.monotonic and tanh.bounded and tanh.smooth and tanh.unit_slope and not tanh.extremal
    assert elu.smooth and elu.unit_slope and elu.low == pytest.approx(-1)
    assert not props["gelu"].unit_slope and not props["gelu"].monotonic and props["gelu"].dmax > 1
    assert props["leaky_relu"].unit_slope and not props["leaky_relu"].extremal
    assert props["sigmoid"].dmax == pytest.approx(0.25)
    equal = props["mix (P equal, 1/3 each)"]
    assert not equal.monotonic and not equal.unit_slope and not equal.smooth
    assert equal.dmax == pytest.approx(1, abs=1e-6)
    # relu is the only one whose slope is always 0 or 1: the fuzzy-logic argument's optimum
    assert [n for n, p in props.items() if p.extremal] == ["relu"]


def test_cli_writes_plots_and_the_table(tmp_path, capsys):
    out = tmp_path / "act"
    assert main(["activations", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "monotonic" in printed and "0<=s'<=1" in printed and "mix (P equal, 1/3 each)" in printed
    names = {p.name for p in out.iterdir()}
    assert {"activations.png", "relu.png", "mix_P_equal_1_3_each.png", "properties.md"} <= names
    assert all((out / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    assert "| relu | [0, ∞) | yes | no | no | yes | yes |" in (out / "properties.md").read_text()


def test_cli_refuses_an_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["activations", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not a folder" in err
    assert f.read_text() == "x"


def test_cli_mix_seeds_needs_a_study(capsys):
    assert main(["activations", "--mix-seeds", "3"]) == 2
    assert "needs --study" in capsys.readouterr().err

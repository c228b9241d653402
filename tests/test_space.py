"""The search-space grammar as a table of cases, and how it becomes Optuna suggestions."""

from __future__ import annotations

import optuna
import pytest

from hpo.errors import ConfigError
from hpo.search.space import Space, on_boundary, parse_param

# (name, spec, expected kind, expected attributes)
VALID = [
    ("lr", 0.1, "fixed", {"value": 0.1}),
    ("lr", 1, "fixed", {"value": 1.0}),  # an int where a float is wanted is fine
    ("optimizer", "adam", "fixed", {"value": "adam"}),
    ("width", [60, 40], "fixed", {"value": (60, 40), "per_layer": True}),
    ("lr", {"low": 1e-4, "high": 1.0, "log": True}, "float", {"low": 1e-4, "high": 1.0, "log": True}),
    ("dropout", {"low": 0.0, "high": 0.5, "step": 0.1}, "float", {"step": 0.1}),
    ("epochs", {"low": 2, "high": 20}, "int", {"low": 2, "high": 20}),
    ("width", {"low": 8, "high": 64, "log": True, "per_layer": True}, "int", {"per_layer": True, "log": True}),
    ("batch_size", {"choices": [32, 64]}, "categorical", {"choices": (32, 64)}),
    ("activation", {"choices": ["relu", "tanh"], "per_layer": True}, "categorical", {"per_layer": True}),
    ("schedule", {"choices": ["constant", "cosine", "onecycle"]}, "categorical", {}),
]


@pytest.mark.parametrize("name,spec,kind,attrs", VALID)
def test_valid_forms(name, spec, kind, attrs):
    d = parse_param(name, spec, "s.yaml")
    assert d.kind == kind
    for k, v in attrs.items():
        assert getattr(d, k) == v


# (name, spec, the key the message must name, a fragment of the message)
INVALID = [
    ("weight_decay", {"low": 0, "high": 1e-3, "log": True}, "weight_decay.low", "`low > 0` must hold for a log range"),
    ("lr", {"low": 0, "high": 1.0, "log": True}, "lr.low", "`lr > 0` must hold"),
    ("lr", {"low": 1.0, "high": 0.1}, "lr.low", "`low <= high`"),
    ("lr", {"low": 1e-3}, "lr.high", "missing"),
    ("lr", {"low": 1e-3, "high": 1.0, "log": True, "step": 0.1}, "lr.step", "cannot have a step"),
    ("lr", {"low": 1e-3, "high": 1.0, "lgo": True}, "lr.lgo", "unknown key"),
    ("lr", "fast", "lr", "expected float"),
    ("epochs", {"low": 1.5, "high": 3}, "epochs.low", "expected int"),
    ("epochs", 0, "epochs", "`>= 1`"),
    ("optimizer", "adagrad", "optimizer", "unknown value 'adagrad'"),
    ("optimizer", {"choices": ["adam", "rmsprop"]}, "optimizer.choices[1]", "unknown value"),
    ("activation", "swish2", "activation", "unknown value"),
    ("batch_size", {"choices": []}, "batch_size.choices", "non-empty"),
    ("batch_size", {"choices": [64, 64]}, "batch_size.choices", "duplicate"),
    ("optimizer", {"low": 1, "high": 2}, "optimizer", "categorical"),
    ("lr", {"choices": [0.1], "low": 0.1}, "lr.low", "categorical takes `choices` only"),
    ("lr", {"low": 0.1, "high": 1.0, "per_layer": True}, "lr.per_layer", "only width and activation"),
    ("lr", [0.1, 0.2], "lr", "only allowed for per-layer"),
    ("dropout", 1.5, "dropout", "`0 <= value < 1`"),
    ("depht", 2, "depht", "unknown hyperparameter"),
    ("log", {"low": 1, "high": 2, "log": "yes"}, "log", "unknown hyperparameter"),
    ("lr", {"low": 0.1, "high": 1.0, "log": "yes"}, "lr.log", "true or false"),
]


@pytest.mark.parametrize("name,spec,key,fragment", INVALID)
def test_invalid_forms_name_the_file_and_key(name, spec, key, fragment):
    with pytest.raises(ConfigError) as e:
        parse_param(name, spec, "search_spaces/x.yaml")
    assert str(e.value).startswith(f"search_spaces/x.yaml: {key}: "), str(e.value)
    assert fragment in str(e.value)


def test_fixed_per_layer_list_must_match_depth():
    with pytest.raises(ConfigError, match="has 2 entries but depth is 3"):
        Space.parse({"depth": 3, "width": [60, 40]}, "s.yaml")
    with pytest.raises(ConfigError, match="needs a fixed `depth`"):
        Space.parse({"depth": {"low": 1, "high": 3}, "width": [60, 40]}, "s.yaml")


def _ask(space: Space, seed: int = 0, params: dict | None = None):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if params:
        study.enqueue_trial(params)
    trial = study.ask()
    return trial, space.suggest(trial)


def test_depth_is_drawn_then_one_width_per_layer():
    space = Space.parse({"depth": {"low": 1, "high": 4}, "width": {"low": 8, "high": 64, "per_layer": True}}, "s")
    for seed in range(10):
        trial, hp = _ask(space, seed)
        depth = trial.params["depth"]
        assert len(hp["widths"]) == depth
        assert sorted(k for k in trial.params if k.startswith("width_")) == [f"width_{i}" for i in range(1, depth + 1)]
        assert all(8 <= w <= 64 for w in hp["widths"])


def test_shared_width_and_fixed_values():
    space = Space.parse({"depth": 2, "width": {"low": 8, "high": 64}, "optimizer": "sgd", "lr": 0.5}, "s")
    trial, hp = _ask(space)
    assert hp["widths"][0] == hp["widths"][1] == trial.params["width"]
    assert hp["optimizer"] == "sgd" and hp["lr"] == 0.5
    assert "optimizer" not in trial.params  # fixed values are not Optuna parameters


def test_per_layer_activation():
    space = Space.parse({"depth": 3, "width": 16, "activation": {"choices": ["relu", "tanh"], "per_layer": True}}, "s")
    trial, hp = _ask(space, 3)
    assert len(hp["activation"]) == 3 and set(hp["activation"]) <= {"relu", "tanh"}
    assert {"activation_1", "activation_2", "activation_3"} <= set(trial.params)


def test_trial_params_round_trip_for_baselines():
    space = Space.parse({"depth": 2, "width": {"low": 8, "high": 64, "per_layer": True},
                         "lr": {"low": 1e-5, "high": 1e-1, "log": True}, "optimizer": "adam"}, "s")
    hp = {"widths": (60, 40), "lr": 1e-3, "optimizer": "adam"}
    params = space.trial_params(hp)
    assert params == {"width_1": 60, "width_2": 40, "lr": 1e-3}
    _, got = _ask(space, params=params)
    assert got["widths"] == (60, 40) and got["lr"] == 1e-3


def test_problems_flags_configs_outside_the_space():
    space = Space.parse({"depth": 2, "width": {"low": 8, "high": 64, "per_layer": True},
                         "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "optimizer": "adam"}, "s")
    assert space.problems({"widths": (60, 40), "lr": 1e-3, "optimizer": "adam"}) == []
    assert any("width" in p for p in space.problems({"widths": (100, 40), "lr": 1e-3}))
    assert any("lr=1.0" in p for p in space.problems({"widths": (60, 40), "lr": 1.0}))
    assert any("optimizer" in p for p in space.problems({"widths": (60, 40), "optimizer": "sgd"}))
    assert any("depth" in p for p in space.problems({"widths": (60,)}))


def test_on_boundary():
    d = parse_param("lr", {"low": 1e-4, "high": 1.0, "log": True}, "s")
    assert on_boundary(d, 1.0) == "high"
    assert on_boundary(d, 1e-4) == "low"
    assert on_boundary(d, 1e-2) is None
    w = parse_param("width", {"low": 8, "high": 64}, "s")
    assert on_boundary(w, 64) == "high" and on_boundary(w, 30) is None

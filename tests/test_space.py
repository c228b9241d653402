"""The search-space grammar as a table of cases, and how it becomes Optuna suggestions."""

from __future__ import annotations

import optuna
import pytest
import torch

from hpo.errors import ConfigError, StudyError
from hpo.provenance import ROOT
from hpo.search.files import read_yaml
from hpo.search.samplers import grid_space
from hpo.search.space import Space, on_boundary, parse_param
from hpo.search.study import enqueue_baselines
from hpo.search.studyfile import load_space, load_study
from hpo.training.augment import AUGMENTS
from hpo.training.models import build_model
from hpo.training.spec import TrainConfig

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
    ("momentum", {"low": 0.5, "high": 0.99, "when": {"optimizer": ["sgd_momentum"]}}, "float",
     {"when": (("optimizer", ("sgd_momentum",)),)}),
    ("weight_decay", {"low": 0.0, "high": 0.1, "when": {"optimizer": ["adamw"], "schedule": ["cosine", "constant"]}},
     "float", {"when": (("optimizer", ("adamw",)), ("schedule", ("cosine", "constant")))}),
    ("batch_size", {"choices": [32, 64], "when": {"model": ["cnn"]}}, "categorical", {"when": (("model", ("cnn",)),)}),
    ("augment", "shift_flip", "fixed", {"value": "shift_flip"}),
    ("augment", {"choices": ["none", "shift", "shift_flip"]}, "categorical",
     {"choices": ("none", "shift", "shift_flip")}),
    ("augment_shift", {"low": 1, "high": 4}, "int", {"low": 1, "high": 4}),
    ("augment_shift", 0, "fixed", {"value": 0}),
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
    ("momentum", {"low": 0.5, "high": 0.9, "when": {"optimzer": ["adam"]}}, "momentum.when.optimzer",
     "unknown hyperparameter"),
    ("momentum", {"low": 0.5, "high": 0.9, "when": {"optimizer": "sgd_momentum"}}, "momentum.when.optimizer",
     "non-empty list"),
    ("momentum", {"low": 0.5, "high": 0.9, "when": {"optimizer": []}}, "momentum.when.optimizer", "non-empty list"),
    ("momentum", {"low": 0.5, "high": 0.9, "when": ["optimizer"]}, "momentum.when", "expected a mapping"),
    ("momentum", {"low": 0.5, "high": 0.9, "when": {}}, "momentum.when", "expected a mapping"),
    ("momentum", {"low": 0.5, "high": 0.9, "when": {"optimizer": ["rmsprop"]}}, "momentum.when.optimizer[0]",
     "unknown value 'rmsprop'"),
    ("dropout", {"low": 0, "high": 0.5, "when": {"batch_size": [64, "big"]}}, "dropout.when.batch_size[1]",
     "expected int"),
    ("depth", {"low": 1, "high": 3, "when": {"model": ["mlp"]}}, "depth.when", "cannot be conditional"),
    ("augment", "crop", "augment", "unknown value 'crop'"),
    ("augment", {"choices": ["shift", "rotate"]}, "augment.choices[1]", "unknown value 'rotate'"),
    ("augment", {"low": 1, "high": 2}, "augment", "categorical"),
    ("augment_shift", 9, "augment_shift", "`0 <= augment_shift <= 8` must hold"),
    ("augment_shift", {"low": -1, "high": 2}, "augment_shift.low", "`0 <= augment_shift <= 8`"),
    ("augment_shift", 1.5, "augment_shift", "expected int"),
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
    depth = parse_param("depth", {"low": 1, "high": 3}, "s")
    assert on_boundary(depth, 1) == "low" and on_boundary(depth, 3) == "high" and on_boundary(depth, 2) is None
    epochs = parse_param("epochs", {"low": 10, "high": 60}, "s")
    assert on_boundary(epochs, 11) == "low" and on_boundary(epochs, 12) is None


# --- conditions: `when` in a file, and what the registry knows ------------------------------------

_M = {"low": 0.8, "high": 0.99}
# (space, the key the message must name, a fragment of the message): checked against the whole space
INVALID_SPACES = [
    ({"momentum": {**_M, "when": {"optimizer": ["sgd_momentum"]}}}, "momentum.when.optimizer", "not in this space"),
    ({"optimizer": "sgd_momentum", "momentum": {**_M, "when": {"optimizer": ["sgd_momentum"]}}},
     "momentum.when.optimizer",
     "fixed to 'sgd_momentum' in this space; a condition needs a hyperparameter drawn from `choices`"),
    ({"lr": {"low": 0.01, "high": 0.1}, "dropout": {"low": 0, "high": 0.5, "when": {"lr": [0.1]}}}, "dropout.when.lr",
     "lr is a range in this space"),
    ({"optimizer": {"choices": ["sgd_momentum", "adam"]}, "momentum": {**_M, "when": {"optimizer": ["adamw"]}}},
     "momentum.when.optimizer[0]", "'adamw' is not among optimizer's choices (sgd_momentum, adam)"),
    ({"depth": 2, "activation": {"choices": ["relu", "tanh"], "per_layer": True},
      "dropout": {"low": 0, "high": 0.5, "when": {"activation": ["relu"]}}}, "dropout.when.activation", "per layer"),
    ({"schedule": {"choices": ["constant", "cosine"], "when": {"batch_size": [64]}},
      "batch_size": {"choices": [64, 128], "when": {"schedule": ["cosine"]}}}, "schedule.when",
     "conditions form a cycle: schedule -> batch_size -> schedule"),
    ({"augment": {"choices": ["none", "shift"], "when": {"augment_shift": [1]}}, "augment_shift": {"choices": [1, 2]}},
     "augment.when", "conditions form a cycle: augment -> augment_shift -> augment"),
    ({"optimizer": {"choices": ["adam", "adamw"]}, "optimizer_": 1}, "optimizer_", "unknown hyperparameter"),
    # what the registry knows: a hyperparameter that can never matter in this space is an error, not a no-op
    ({"optimizer": "adam", "momentum": _M}, "momentum", "only matters when optimizer is sgd_momentum, which no trial"),
    ({"momentum": 0.9}, "momentum", "only matters when optimizer is sgd_momentum"),  # the default optimizer: adam
    ({"optimizer": {"choices": ["sgd_momentum", "adam"]}, "schedule": "onecycle", "momentum": _M}, "momentum",
     "only matters when schedule is not onecycle"),
    ({"optimizer": {"choices": ["sgd_momentum", "adam"]}, "momentum": {**_M, "when": {"optimizer": ["adam"]}}},
     "momentum", "only matters when optimizer is sgd_momentum"),
    ({"activation": {"choices": ["relu", "tanh"]}, "negative_slope": {"low": 0.01, "high": 0.3}}, "negative_slope",
     "only matters when activation is leaky_relu"),
    ({"depth": 2, "activation": ["relu", "elu"], "negative_slope": 0.1}, "negative_slope", "leaky_relu"),
    ({"mix_lr": 0.1}, "mix_lr", "only matters when cycle_epochs > 0"),
    ({"augment_shift": {"low": 1, "high": 3}}, "augment_shift", "only matters when augment is not none"),
    ({"augment": "none", "augment_shift": 2}, "augment_shift", "augment is not none"),
]


@pytest.mark.parametrize("raw, key, fragment", INVALID_SPACES)
def test_invalid_conditions_name_the_file_and_key(raw, key, fragment):
    with pytest.raises(ConfigError) as e:
        Space.parse(raw, "search_spaces/x.yaml")
    msg = str(e.value)
    assert msg.startswith(f"search_spaces/x.yaml: {key}: ") and "\n" not in msg, msg
    assert fragment in msg, msg


WIDE_LIKE = {"depth": {"low": 1, "high": 3}, "width": {"low": 8, "high": 64, "per_layer": True},
             "optimizer": {"choices": ["sgd_momentum", "adam", "adamw"]}, "lr": {"low": 1e-4, "high": 0.3, "log": True},
             "momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": ["sgd_momentum"]}},
             "schedule": {"choices": ["constant", "cosine", "onecycle"]}}


@pytest.mark.parametrize("raw", [WIDE_LIKE, {k: v for k, v in WIDE_LIKE.items() if k != "momentum"} | {"momentum": _M}],
                         ids=["when", "registry-only"])
def test_only_sgd_momentum_trials_draw_momentum(raw):
    space = Space.parse(raw, "s")
    seen = set()
    for seed in range(40):
        trial, hp = _ask(space, seed)
        uses = trial.params["optimizer"] == "sgd_momentum" and trial.params["schedule"] != "onecycle"
        assert ("momentum" in trial.params) == ("momentum" in hp) == uses
        assert TrainConfig(**hp).active("momentum") == uses
        seen.add(uses)
    assert seen == {True, False}


def test_the_shipped_wide_space_draws_no_momentum_for_adam_and_adamw():
    space = load_space("wide", "t", "space")
    # TPE as studies configure it (hpo.search.samplers): multivariate + group handles define-by-run spaces.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True,
                                                                   n_startup_trials=5))
    optimizers = set()
    for k in range(30):
        trial = study.ask()
        hp = space.suggest(trial)
        study.tell(trial, (k * 7919) % 31 / 31)  # values in no order, so that TPE keeps exploring
        optimizers.add(hp["optimizer"])
        if hp["optimizer"] != "sgd_momentum" or hp["schedule"] == "onecycle":
            assert "momentum" not in trial.params and "momentum" not in hp
        else:
            assert 0.8 <= trial.params["momentum"] <= 0.99
    assert optimizers == {"sgd_momentum", "adam", "adamw"}


def test_a_parent_listed_after_its_child_is_drawn_first():
    space = Space.parse({"momentum": _M, "optimizer": {"choices": ["sgd_momentum", "adam"]}}, "s")
    for seed in range(10):
        trial, hp = _ask(space, seed)
        assert ("momentum" in trial.params) == (trial.params["optimizer"] == "sgd_momentum")


def test_a_file_condition_searches_a_field_that_still_matters_elsewhere():
    """weight_decay drawn for adamw only; adam trials train with the default (0), which does matter."""
    space = Space.parse({"optimizer": {"choices": ["adam", "adamw"]},
                         "weight_decay": {"low": 1e-4, "high": 0.1, "log": True,
                                          "when": {"optimizer": ["adamw"]}}}, "s")
    for seed in range(10):
        trial, hp = _ask(space, seed)
        assert ("weight_decay" in trial.params) == (hp["optimizer"] == "adamw")
        assert "weight_decay" in TrainConfig(**hp).to_dict(active_only=True)


def test_a_child_of_an_undrawn_parent_is_not_drawn():
    space = Space.parse({"optimizer": {"choices": ["adam", "sgd_momentum"]},
                         "schedule": {"choices": ["constant", "cosine"], "when": {"optimizer": ["sgd_momentum"]}},
                         "batch_size": {"choices": [32, 64], "when": {"schedule": ["cosine"]}}}, "s")
    for seed in range(30):
        trial, _ = _ask(space, seed)
        assert ("schedule" in trial.params) == (trial.params["optimizer"] == "sgd_momentum")
        assert ("batch_size" in trial.params) == (trial.params.get("schedule") == "cosine")


def test_per_layer_activations_draw_one_slope_per_leaky_relu_layer():
    space = Space.parse({"depth": 3, "width": 16, "activation": {"choices": ["relu", "leaky_relu"], "per_layer": True},
                         "negative_slope": {"low": 0.05, "high": 0.3}}, "s")
    assert set(space.distributions()) >= {"negative_slope_1", "negative_slope_2", "negative_slope_3"}
    patterns = set()
    for seed in range(30):
        trial, hp = _ask(space, seed)
        leaky = [i for i in (1, 2, 3) if trial.params[f"activation_{i}"] == "leaky_relu"]
        slopes = sorted(k for k in trial.params if k.startswith("negative_slope"))
        assert slopes == [f"negative_slope_{i}" for i in leaky]
        assert "negative_slope" not in trial.params
        if leaky:
            assert len(hp["negative_slope"]) == 3
            for i in (1, 2, 3):
                want = trial.params[f"negative_slope_{i}"] if i in leaky else TrainConfig().negative_slope
                assert hp["negative_slope"][i - 1] == want
            built = [m.negative_slope for m in build_model(TrainConfig(**hp), (1, 28, 28), 10)
                     if isinstance(m, torch.nn.LeakyReLU)]
            assert built == [trial.params[f"negative_slope_{i}"] for i in leaky]
        else:
            assert "negative_slope" not in hp
        patterns.add(len(leaky))
    assert len(patterns) >= 3


def test_a_shared_activation_draws_one_slope_only_when_it_is_leaky_relu():
    space = Space.parse({"activation": {"choices": ["relu", "leaky_relu"]},
                         "negative_slope": {"low": 0.05, "high": 0.3}}, "s")
    for seed in range(10):
        trial, hp = _ask(space, seed)
        assert ("negative_slope" in trial.params) == ("negative_slope" in hp) == (hp["activation"] == "leaky_relu")


def test_mix_lr_is_drawn_only_under_the_three_cycle_schedule():
    space = Space.parse({"depth": 2, "activation": ["mix", "relu"], "cycle_epochs": {"choices": [0, 2]},
                         "mix_lr": {"low": 1e-3, "high": 1e-1, "log": True}}, "s")
    for seed in range(10):
        trial, hp = _ask(space, seed)
        assert ("mix_lr" in trial.params) == (trial.params["cycle_epochs"] > 0)


def test_augment_and_its_strength_are_searched_together():
    space = Space.parse({"augment": {"choices": ["none", "shift", "shift_flip"]},
                         "augment_shift": {"low": 1, "high": 4}}, "s")
    kinds = set()
    for seed in range(20):
        trial, hp = _ask(space, seed)
        assert ("augment_shift" in trial.params) == (hp["augment"] != "none")
        cfg = TrainConfig(**hp)
        assert cfg.augment == hp["augment"] and (cfg.augment == "none" or 1 <= cfg.augment_shift <= 4)
        kinds.add(hp["augment"])
    assert kinds == set(AUGMENTS)


def test_baselines_enqueue_their_active_parameters_only():
    space = Space.parse(WIDE_LIKE, "s")
    adam = {"widths": (60, 40), "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "schedule": "constant"}
    sgd = {**adam, "optimizer": "sgd_momentum", "momentum": 0.85}
    assert space.trial_params(adam) == {"depth": 2, "width_1": 60, "width_2": 40, "optimizer": "adam", "lr": 1e-3,
                                        "schedule": "constant"}
    assert space.trial_params(sgd)["momentum"] == 0.85
    assert "momentum" not in space.trial_params({**sgd, "schedule": "onecycle"})
    for hp in (adam, sgd):
        trial, got = _ask(space, params=space.trial_params(hp))
        assert set(trial.params) == set(space.trial_params(hp))
        assert TrainConfig(**got) == TrainConfig(**hp) or hp is adam  # adam: momentum takes its default
        assert TrainConfig(**got).to_dict(active_only=True) == TrainConfig(**hp).to_dict(active_only=True)
    # inactive values lie outside nothing
    assert space.problems({**adam, "momentum": 0.1}) == []
    assert any("momentum=0.1" in p for p in space.problems({**sgd, "momentum": 0.1}))


@pytest.mark.parametrize("name", ["wide", "relu3_adam"])
def test_augmenting_studies_enqueue_their_paper_baselines_without_momentum_or_augmentation(name):
    """The paper trains without augmentation (protocol `augment: none`): a baseline must not leave `augment`
    to the sampler, and so draws no augment_shift either."""
    cfg = load_study(name)
    assert "augment" in cfg.space.params
    study = optuna.create_study(direction="maximize")
    assert enqueue_baselines(study, cfg) == len(cfg.baselines) == 3
    for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        params = t.system_attrs["fixed_params"]
        assert params.get("optimizer", "adam") == "adam" and "momentum" not in params  # relu3_adam fixes it
        assert params["augment"] == "none" and "augment_shift" not in params
    trial = study.ask()
    hp = cfg.space.suggest(trial)
    assert trial.params.get("optimizer", "adam") == "adam" and "momentum" not in trial.params
    assert TrainConfig(**hp).augment == "none" and "augment_shift" not in trial.params


def test_spaces_without_conditions_draw_what_they_drew_before():
    """relu2_sgd, relu3_sgd fix their optimizer and activation: nothing of theirs is conditional, and
    the Optuna parameters are the same names in the same order as the grammar always drew them."""
    for name, want in [("relu3_sgd", ["width_1", "width_2", "lr", "batch_size", "epochs", "schedule",
                                      "weight_decay", "dropout", "label_smoothing"]),
                       ("relu2_sgd", ["width", "lr", "batch_size", "epochs", "schedule", "weight_decay", "dropout",
                                      "label_smoothing"])]:
        trial, _ = _ask(load_space(name, "t", "space"))
        assert list(trial.params) == want


def test_the_readme_s_example_space_parses(tmp_path):
    section = (ROOT / "README.md").read_text().split("## Writing a search space")[1].split("\n## ")[0]
    (tmp_path / "example.yaml").write_text(section.split("```yaml\n")[1].split("```")[0])
    space = Space.parse(read_yaml(tmp_path / "example.yaml")[0], "README.md")
    assert space.params["momentum"].when == (("optimizer", ("sgd_momentum",)),)
    assert {"augment", "augment_shift"} <= set(space.params)


@pytest.mark.parametrize("raw, conditional", [
    (WIDE_LIKE, ["momentum"]),
    ({"optimizer": "sgd_momentum", "momentum": _M}, []),  # always drawn: the default schedule is constant
    ({"optimizer": {"choices": ["sgd_momentum", "adam"]}, "momentum": 0.9}, []),  # fixed: nothing is drawn
    ({"activation": {"choices": ["relu", "leaky_relu"]}, "negative_slope": {"low": 0.01, "high": 0.3}},
     ["negative_slope"]),
    ({"augment": "shift", "augment_shift": {"choices": [1, 2]}}, []),
    ({"optimizer": {"choices": ["adam", "adamw"]}, "lr": {"low": 1e-3, "high": 0.1, "when": {"optimizer": ["adamw"]}}},
     ["lr"]),
])
def test_conditional_lists_what_some_trials_skip(raw, conditional):
    assert Space.parse(raw, "s").conditional() == conditional


def test_the_grid_sampler_refuses_a_conditional_hyperparameter():
    space = Space.parse({"augment": {"choices": ["none", "shift"]}, "augment_shift": {"choices": [1, 2]}}, "x.yaml")
    with pytest.raises(StudyError, match="^x.yaml: augment_shift: is drawn only in some trials"):
        grid_space(space)
    for name in ("activations", "mixed_activation"):  # the shipped grid spaces fix what is conditional
        grid_space(load_space(name, "t", "space"))


def test_problems_check_the_slopes_of_leaky_relu_layers_only():
    space = Space.parse({"depth": 3, "width": 16, "activation": {"choices": ["relu", "leaky_relu"], "per_layer": True},
                         "negative_slope": {"low": 0.05, "high": 0.3}}, "s")
    hp = {"widths": (16, 16, 16), "activation": ("leaky_relu", "relu", "leaky_relu"), "negative_slope": (0.1, 5.0, 0.2)}
    assert space.problems(hp) == []  # 5.0 belongs to a relu layer: not used
    assert space.trial_params(hp) == {"activation_1": "leaky_relu", "activation_2": "relu",
                                      "activation_3": "leaky_relu", "negative_slope_1": 0.1, "negative_slope_3": 0.2}
    assert space.problems({**hp, "negative_slope": (0.9, 0.01, 0.2)}) == [
        "negative_slope=[0.9, 0.2] is outside [0.05, 0.3]"]

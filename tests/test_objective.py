"""Sampler/pruner wiring (ask/tell, no training) and every trial outcome recorded with its reason."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo import data as data_mod
from hpo.errors import ConfigError
from hpo.search import objective as objective_mod
from hpo.search.objective import Objective
from hpo.search.samplers import PRUNERS, SAMPLERS, grid_space, make_pruner, make_sampler, percent_steps
from hpo.search.space import Space
from hpo.search.studyfile import load_study
from hpo.trials import trial_state

SPACE = """\
# test space
depth: {low: 1, high: 2}
width: {low: 8, high: 32, per_layer: true}
optimizer: {choices: [sgd, adam]}
lr: {low: 1e-3, high: 1e-1, log: true}
batch_size: {choices: [32, 64]}
epochs: {low: 1, high: 3}
"""


def tiny_study(tmp_path, space: str = SPACE, **extra) -> str:
    (tmp_path / "sp.yaml").write_text(space)
    keys = {"dataset": "mnist", "space": str(tmp_path / "sp.yaml"), "sampler": "random", "n_trials": 3,
            "split": "{val_size: 100, seed: 0}", **extra}
    lines = ["# test study"] + [f"{k}: {v}" for k, v in keys.items()]
    (tmp_path / "t.yaml").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "t.yaml")


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_every_sampler_and_pruner_drives_the_space_with_ask_tell(tmp_path, sampler, pruner):
    cfg = load_study(tiny_study(tmp_path, sampler=sampler, pruner=pruner))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    for i in range(4):
        trial = study.ask()
        hp = cfg.space.suggest(trial)
        assert len(hp["widths"]) == trial.params["depth"]
        for step in range(1, hp["epochs"] + 1):
            trial.report(0.1 * i + 0.01 * step, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, 0.1 * i)
    assert len(study.trials) == 4


def test_grid_sampler_enumerates_choices_and_small_int_ranges(tmp_path):
    space = Space.parse({"depth": 1, "width": {"low": 8, "high": 32, "step": 8},
                         "optimizer": {"choices": ["sgd", "adam"]}}, "s")
    assert grid_space(space) == {"width": [8, 16, 24, 32], "optimizer": ["sgd", "adam"]}
    with pytest.raises(Exception, match="grid sampler needs `choices`"):
        grid_space(Space.parse({"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, "s"))


def test_grid_points_are_the_same_in_every_process_whatever_seed_it_joins_with():
    """Two workers (each with its own joining seed) asking in turn cover the grid once: the shipped
    mixed_activation, 5 seeds on 2 workers, had run seed 2 twice and seed 0 never."""
    cfg = load_study("mixed_activation")
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(study_name="g", storage=storage, direction="maximize", sampler=make_sampler(cfg))
    joined = optuna.load_study(study_name="g", storage=storage, sampler=make_sampler(cfg, seed=12345))
    drawn = []
    for i in range(5):
        (first, joined)[i % 2].optimize(
            lambda t: drawn.append(t.suggest_categorical("seed", [0, 1, 2, 3, 4])) or 0.5, n_trials=1)
    assert sorted(drawn) == [0, 1, 2, 3, 4]


def test_hyperband_uses_the_space_epoch_range(tmp_path):
    cfg = load_study(tiny_study(tmp_path, pruner="hyperband"))
    assert make_pruner(cfg)._max_resource == 3


def _run(tmp_path, monkeypatch=None, space=SPACE, n=2, **extra):
    cfg = load_study(tiny_study(tmp_path, space=space, **extra))
    splits = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    study.optimize(Objective(cfg, splits, threads=1), n_trials=n, catch=(Exception,))
    return study


def test_complete_trial_records_what_it_did(tmp_path, tiny_mnist):
    study = _run(tmp_path, pruner="none", n=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE and t.user_attrs["outcome"] == "complete"
    for key in ("config", "n_params", "epochs_trained", "train_seconds", "samples_per_sec", "val_curve", "loss_curve"):
        assert key in t.user_attrs
    assert len(t.user_attrs["val_curve"]) == t.user_attrs["epochs_trained"] == t.user_attrs["config"]["epochs"]
    assert list(t.intermediate_values.values()) == pytest.approx(t.user_attrs["val_curve"], abs=1e-5)
    assert t.value == pytest.approx(t.user_attrs["val_curve"][-1], abs=1e-5)


def test_parameter_cap_refuses_to_train(tmp_path, tiny_mnist):
    study = _run(tmp_path, pruner="none", budget="{max_params: 100}")
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "param_cap"
        assert "exceed the cap of 100" in t.user_attrs["reason"] and t.user_attrs["n_params"] > 100
        assert "val_curve" not in t.user_attrs and not t.intermediate_values


def test_divergence_is_recorded_and_the_study_carries_on(tmp_path, tiny_mnist):
    space = SPACE.replace("lr: {low: 1e-3, high: 1e-1, log: true}", "lr: 1e8").replace("{choices: [sgd, adam]}", "sgd")
    study = _run(tmp_path, space=space, pruner="none", n=3)
    assert len(study.trials) == 3
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "diverged"
        assert "loss became" in t.user_attrs["reason"]


def test_time_cap_is_recorded(tmp_path, tiny_mnist):
    study = _run(tmp_path, pruner="none", budget="{trial_timeout: 0.0001}")
    for t in study.trials:
        assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "time_cap"
        assert "time cap" in t.user_attrs["reason"]


def test_pruned_trials_keep_their_curve(tmp_path, tiny_mnist):
    cfg = load_study(tiny_study(tmp_path, pruner="none"))
    splits = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    study.enqueue_trial({"epochs": 3})
    study.optimize(Objective(cfg, splits, threads=1), n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED and t.user_attrs["outcome"] == "pruned"
    assert t.user_attrs["epochs_trained"] == 1 and len(t.user_attrs["val_curve"]) == 1


def test_a_crash_is_recorded_and_the_study_carries_on(tmp_path, tiny_mnist, monkeypatch):
    calls = {"n": 0}
    real_train = objective_mod.train

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of cheese")
        return real_train(*a, **k)

    monkeypatch.setattr(objective_mod, "train", flaky)
    study = _run(tmp_path, pruner="none", n=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["outcome"] == "crashed"
    assert "out of cheese" in study.trials[0].user_attrs["reason"]


@pytest.mark.parametrize("outcome, state", [
    ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("diverged", TrialState.PRUNED),
    ("time_cap", TrialState.PRUNED), ("param_cap", TrialState.PRUNED), ("memory_cap", TrialState.PRUNED),
    ("crashed", TrialState.FAIL), ("interrupted", TrialState.FAIL), ("surplus", TrialState.FAIL),
])
def test_each_outcome_ends_in_one_optuna_state(outcome, state):
    assert trial_state(outcome) == state


def test_multi_objective_returns_accuracy_and_params(tmp_path, tiny_mnist):
    cfg = load_study(tiny_study(tmp_path, pruner="none", objectives="[accuracy, params, latency]"))
    splits = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    study = optuna.create_study(directions=cfg.directions)
    study.optimize(Objective(cfg, splits, threads=1), n_trials=1)
    t = study.trials[0]
    assert t.values[1] == t.user_attrs["n_params"]
    assert t.values[2] == pytest.approx(t.user_attrs["latency_ms"], abs=1e-4) and t.values[2] > 0


@pytest.mark.parametrize("epochs", [1, 3, 7, 20, 40])
def test_percent_steps_cover_every_point_of_a_schedule_once_in_order(epochs):
    steps = [s for e in range(1, epochs + 1) for s in percent_steps(e, epochs)]
    assert steps == list(range(5, 101, 5))
    # each point is reported with the first epoch at or after it
    for e in range(1, epochs + 1):
        assert all((e - 1) / epochs < s / 100 <= e / epochs for s in percent_steps(e, epochs))


def test_percent_steps_report_each_trial_at_the_same_points_of_its_own_schedule(tmp_path, tiny_mnist):
    """A 2-epoch and a 4-epoch trial meet the pruner at the same steps, 5 ... 100 (percent of their schedule)."""
    cfg = load_study(tiny_study(tmp_path, pruner="median", pruner_step="percent",
                                space=SPACE.replace("epochs: {low: 1, high: 3}", "epochs: {low: 2, high: 4}")))
    assert make_pruner(cfg)._n_warmup_steps == 25  # a quarter of its own schedule, not 4 epochs
    splits = data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for e in (2, 4):
        study.enqueue_trial({"epochs": e})
    study.optimize(Objective(cfg, splits, threads=1), n_trials=2)
    for t in study.trials:
        assert sorted(t.intermediate_values) == list(range(5, 101, 5))
        curve = t.user_attrs["val_curve"]
        assert t.intermediate_values[100] == pytest.approx(curve[-1], abs=1e-5)
        assert t.intermediate_values[5] == pytest.approx(curve[0], abs=1e-5)


@pytest.mark.parametrize("extra, message", [
    ({"pruner_step": "fraction"}, "pruner_step: expected one of epoch, percent"),
    ({"pruner": "hyperband", "pruner_step": "percent"}, "pruner_step: the hyperband pruner's resource is the epoch"),
])
def test_a_bad_pruner_step_names_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_study(tiny_study(tmp_path, **extra))


def _categorical_study(explore: float, n: int = 40) -> optuna.Study:
    """A study whose categorical `c` has one clearly best choice, so that TPE alone commits to it."""
    from hpo.search.samplers import ExploringTPESampler

    sampler = ExploringTPESampler(seed=3, explore=explore, multivariate=True, group=True, n_startup_trials=6)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + {"a": 1.0, "b": 0.0, "c": 0.0}[
        t.suggest_categorical("c", ["a", "b", "c"])], n_trials=n)
    return study


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_exploring_tpe_is_tpe_at_zero_and_tries_the_least_tried_choice_when_exploring():
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=3, multivariate=True, group=True, n_startup_trials=6))
    plain.optimize(lambda t: t.suggest_float("x", 0, 1) + {"a": 1.0, "b": 0.0, "c": 0.0}[
        t.suggest_categorical("c", ["a", "b", "c"])], n_trials=40)
    assert [t.params for t in _categorical_study(0.0).trials] == [t.params for t in plain.trials]
    always = _categorical_study(1.0).trials
    for i, t in enumerate(always[6:], 6):  # every trial after the start sets c to a least-tried choice so far
        tried = [u.params["c"] for u in always[:i]]
        assert tried.count(t.params["c"]) == min(tried.count(c) for c in "abc")
    assert len({t.params["x"] for t in always}) == len(always)  # x is still TPE's draw


@pytest.mark.parametrize("options,key,fragment", [
    ("{explore: 2}", "sampler_options.explore", "between 0 and 1"),
    ("{explor: 0.2}", "sampler_options.explor", "unknown option"),
])
def test_the_exploring_share_is_checked_where_the_study_file_gives_it(tmp_path, options, key, fragment):
    with pytest.raises(ConfigError, match=f"{key}: .*{fragment}"):
        load_study(tiny_study(tmp_path, sampler="tpe", sampler_options=options))

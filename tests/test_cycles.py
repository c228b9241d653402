"""The three-cycle schedule: each cycle trains only what it should, and the run is stitched into one."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

from hpo.data import Splits
from hpo.errors import ConfigError
from hpo.search.runner import run_study
from hpo.search.space import Space
from hpo.training.activations import mixing_parameters
from hpo.training.cycles import train_cycles
from hpo.training.loop import train
from hpo.training.models import mlp
from hpo.training.spec import TrainConfig


def _blobs(n=300, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = (torch.randn(4, 20, generator=g) * 2)[y] + torch.randn(n, 20, generator=g)
    return Splits(x[:200], y[:200], x[200:], y[200:])


def _split(model):
    mixing = {id(p) for p in mixing_parameters(model)}
    return ([p.detach().clone() for p in model.parameters() if id(p) not in mixing],
            [p.detach().clone() for p in model.parameters() if id(p) in mixing])


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _moved(a, b) -> bool:
    return all(not torch.equal(x, y) for x, y in zip(a, b))


# Weight decay on: a frozen parameter handed to the optimizer would still decay; it must not be handed over.
CFG = TrainConfig(widths=(16, 8), activation=("mix", "relu"), optimizer="adamw", lr=1e-2, mix_lr=0.1,
                  weight_decay=1e-2, batch_size=32, cycle_epochs=1)


def test_each_cycle_changes_only_what_it_trains():
    model = mlp(20, CFG.widths, 4, CFG.activation)
    snaps = [_split(model)]
    r = train(CFG, _blobs(), threads=1, model=model, on_epoch=lambda e, a: snaps.append(_split(model)))
    assert r.status == "complete" and len(snaps) == 4
    (net0, mix0), (net1, mix1), (net2, mix2), (net3, mix3) = snaps
    assert _moved(net0, net1) and _same(mix0, mix1)  # cycle 1: network only
    assert _same(net1, net2) and _moved(mix1, mix2)  # cycle 2: mixing weights only
    assert _moved(net2, net3) and _same(mix2, mix3)  # cycle 3: network only


def test_the_run_is_stitched_into_one():
    cfg = CFG.replace(cycle_epochs=2)
    assert cfg.epochs == 6  # what is trained, recorded
    steps = []
    r = train(cfg, _blobs(), threads=1, on_epoch=lambda e, a: steps.append((e, a)))
    assert [e for e, _ in steps] == [1, 2, 3, 4, 5, 6]
    assert r.epochs == 6 and len(r.eval_curve) == len(r.loss_curve) == 6
    assert [a for _, a in steps] == r.eval_curve
    assert r.samples == 6 * 200 and r.n_params == sum(p.numel() for p in r.model.parameters())


def test_trainability_is_restored_after_the_run_and_after_a_stop():
    model = mlp(20, CFG.widths, 4, CFG.activation)
    train(CFG, _blobs(), threads=1, model=model)
    assert all(p.requires_grad for p in model.parameters())

    class Stop(Exception):
        pass

    def stop(epoch, acc):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(CFG, _blobs(), threads=1, model=model, on_epoch=stop)
    assert all(p.requires_grad for p in model.parameters())


def test_one_time_cap_covers_all_cycles():
    r = train(CFG.replace(cycle_epochs=50, batch_size=4), _blobs(), threads=1, max_seconds=1e-4)
    assert r.status == "time_cap" and r.reason.startswith("cycle 1 (network weights)")


def test_cycles_need_a_mix_layer():
    with pytest.raises(ValueError, match="needs at least one `mix`"):
        train_cycles(CFG.replace(activation="relu"), _blobs(), run=train, threads=1)


@pytest.mark.parametrize("raw, key", [
    ({"cycle_epochs": 2}, "cycle_epochs"),
    ({"cycle_epochs": 2, "activation": "relu"}, "cycle_epochs"),
    ({"cycle_epochs": 2, "activation": {"choices": ["mix", "relu"]}}, "cycle_epochs"),
    ({"cycle_epochs": 2, "activation": "mix", "epochs": 5}, "epochs"),
    ({"cycle_epochs": -1, "activation": "mix"}, "cycle_epochs"),
    ({"mix_lr": 0.0}, "mix_lr"),
])
def test_space_refuses_a_schedule_it_cannot_run(raw, key):
    with pytest.raises(ConfigError, match=f"s.yaml: {key}"):
        Space.parse(raw, "s.yaml")


def test_space_accepts_the_schedule_with_mix():
    space = Space.parse({"depth": 2, "activation": ["mix", "relu"], "cycle_epochs": {"low": 0, "high": 3},
                         "epochs": 4, "mix_lr": 1e-2}, "s.yaml")
    assert space.params["cycle_epochs"].kind == "int"


def test_a_seed_replicate_factor_is_left_to_the_sampler_for_baselines():
    space = Space.parse({"depth": 1, "lr": {"low": 1e-3, "high": 1.0, "log": True},
                         "seed": {"choices": [0, 1, 2]}}, "s.yaml")
    assert space.trial_params({"widths": (30,), "lr": 0.1}) == {"lr": 0.1}


def test_mixed_activation_study_at_smoke_scale_records_p_and_dead_units(tmp_path, tiny_mnist):
    """The shipped space through the whole path (study → objective → cycles → CNN), on tiny data."""
    (tmp_path / "t.yaml").write_text("# test\ndataset: mnist\nspace: mixed_activation\nsampler: grid\npruner: none\n"
                                     "n_trials: 2\nsplit: {val_size: 100, seed: 0}\nbudget: {threads: 1}\n")
    study = run_study(str(tmp_path / "t.yaml"), smoke=True)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    assert sorted(t.user_attrs["config"]["seed"] for t in trials) == sorted(t.params["seed"] for t in trials)
    for t in trials:
        c = t.user_attrs["config"]
        assert c["model"] == "cnn" and c["cycle_epochs"] == 1 and c["epochs"] == 3
        assert len(t.user_attrs["val_curve"]) == 3 and len(t.intermediate_values) == 3
        assert len(t.user_attrs["mix_p"]) == 3 and len(t.user_attrs["dead_units"]) == 3
        for p in t.user_attrs["mix_p"]:
            assert min(p) >= 0 and sum(p) == pytest.approx(1, abs=1e-4)

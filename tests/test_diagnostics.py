"""Dead units on constructed networks, learned P over seeds, and the report sections."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from torch import nn

from hpo import data as data_mod
from hpo.cli import main
from hpo.results.activation_report import p_summary, report_sections
from hpo.results.mix_seeds import mix_over_seeds
from hpo.search.papers import load_paper
from hpo.search.storage import open_storage
from hpo.training.activations import Mix
from hpo.training.diagnostics import dead_units, trial_attrs
from hpo.training.models import cnn
from hpo.urls import storage_url

PAPER_MIX_FMNIST = load_paper("bansal_2022").mix_weights["fashion_mnist"]


def _set(layer: nn.Module, weight: list, bias: list) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def test_dead_units_of_a_constructed_mlp():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    # layer 1: unit 0 and unit 2 see nothing and have a negative bias (dead); unit 1 copies x0 + 1 (alive)
    _set(model[0], [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], [-1.0, 1.0, -0.5])
    # layer 2: unit 0 is -(unit 1) - 1 < 0 always (dead); unit 1 is +(unit 1) (alive where x0 > -1)
    _set(model[2], [[0, -1, 0], [0, 1, 0]], [-1.0, 0.0])
    x = torch.randn(500, 4)
    assert dead_units(model, x) == pytest.approx([2 / 3, 1 / 2], abs=1e-5)


def test_a_unit_alive_for_one_sample_is_not_dead():
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    _set(model[0], [[1.0]], [0.0])
    x = torch.cat([-torch.rand(999, 1) - 0.1, torch.tensor([[0.5]])])  # only the last sample is positive
    assert dead_units(model, x, chunk=64) == [0.0]
    assert dead_units(model, x[:-1]) == [1.0]


def test_dead_channels_of_a_constructed_cnn():
    model = cnn(16, (2, 3), n_classes=2)  # 4x4 images: conv(2 channels) → pool → act → fc(3) → act → out
    conv, fc = model[1], model[5]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([-1.0, 1.0]))  # channel 0 dead everywhere, channel 1 alive
        fc.weight.zero_()
        fc.bias.copy_(torch.tensor([1.0, -2.0, -3.0]))  # two of three fc units dead
    assert dead_units(model, torch.randn(50, 16)) == pytest.approx([0.5, 2 / 3], abs=1e-5)


def test_trial_attrs_record_mix_p_only_for_mix_layers():
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert set(trial_attrs(plain, torch.randn(10, 3))) == {"dead_units"}
    mixed = nn.Sequential(nn.Linear(3, 4), Mix(PAPER_MIX_FMNIST[0]), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    attrs = trial_attrs(mixed, torch.randn(10, 3))
    assert attrs["mix_p"][1] is None and attrs["mix_p"][0] == pytest.approx(PAPER_MIX_FMNIST[0], abs=1e-4)
    assert len(attrs["dead_units"]) == 2


def _splits() -> data_mod.Splits:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (240,), generator=g)
    x = (torch.randn(3, 16, generator=g) * 2)[y] + torch.randn(240, 16, generator=g)
    return data_mod.Splits(x[:180], y[:180], x[180:], y[180:])


def test_mix_over_seeds_trains_once_per_seed():
    config = {"widths": [8, 8], "activation": "mix", "epochs": 1, "lr": 0.05, "batch_size": 16}
    runs = mix_over_seeds(config, _splits(), [0, 1], threads=1)
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "complete" for r in runs)
    assert runs[0]["mix_p"] != runs[1]["mix_p"]
    for r in runs:
        assert len(r["mix_p"]) == 2 and all(sum(p) == pytest.approx(1, abs=1e-4) for p in r["mix_p"])
    s = p_summary(runs, PAPER_MIX_FMNIST)
    assert [row["layer"] for row in s] == [1, 2] and s[0]["n"] == 2
    assert s[0]["mean"][0] == pytest.approx((runs[0]["mix_p"][0][0] + runs[1]["mix_p"][0][0]) / 2)
    assert s[1]["paper"] == list(PAPER_MIX_FMNIST[1])


def _study(with_mix=True, with_acts=True) -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="demo")
    study.set_user_attr("split", {"dataset": "fashion_mnist"})  # the mix section compares with the paper on it
    dist = {"seed": CategoricalDistribution([0, 1, 2])}
    acts = {"relu": [0.85, 0.86], "tanh": [0.83, 0.84]} if with_acts else {"relu": [0.85]}
    for act, accs in acts.items():
        for seed, acc in enumerate(accs):
            study.add_trial(optuna.trial.create_trial(
                params={"seed": seed}, distributions=dist, value=acc,
                user_attrs={"config": {"widths": [60, 40], "activation": act, "seed": seed, "epochs": 10},
                            "dead_units": [0.1 * (act == "relu"), 0.0]}))
    if with_mix:
        for seed, (acc, p1) in enumerate([(0.87, 0.5), (0.88, 0.6), (0.70, 0.9)]):
            config = {"model": "cnn", "widths": [16, 32, 64], "activation": "mix", "seed": seed, "cycle_epochs": 3,
                      "lr": 1e-3, "mix_lr": 1e-2, "epochs": 9}
            if seed == 2:
                config["lr"] = 0.1  # another configuration: not part of the best one's seeds
            study.add_trial(optuna.trial.create_trial(
                params={"seed": seed}, distributions=dist, value=acc,
                user_attrs={"config": config, "dead_units": [0.0, 0.0, 0.0],
                            "mix_p": [[p1, 0.2, 0.8 - p1], [0.3, 0.7, 0.0], [0.1, 0.1, 0.8]]}))
    return study


def test_report_sections_cover_accuracy_mix_and_dead_units(tmp_path):
    sections = report_sections(_study(), tmp_path / "fig", link_prefix="fig/")
    assert [s.splitlines()[0] for s in sections] == ["## Accuracy by activation",
                                                     "## Learned mixing weights vs Bansal 2022", "## Dead units"]
    acc, mix, dead = sections
    # two runs: the mean and the range, no std (display.spread); min and max are the next columns
    assert "| relu | 2 | 0.8550 | 0.8500 | 0.8600 | seeds | 10.0% / 0.0% |" in acc
    assert "| mix | 3 |" in acc and "| trials |" in acc  # mix trials differ in lr: not a spread over seeds
    # the best mix configuration's two seeds: P_relu layer 1 = 0.5, 0.6
    assert "| 1 | 2 | 0.5500 (0.5000-0.6000) | 0.5178 |" in mix and "relu / relu" in mix
    assert "| 3 | 2 |" in mix and "sin / sin" in mix
    assert "| relu | 2 | 10.0% | 0.0% | - | 2 |" in dead
    for name in ("accuracy_by_activation.png", "mix_weights.png", "dead_units.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000 and f"](fig/{name})" in "\n".join(sections)


def test_report_prefers_stored_seed_runs_and_says_when_one_seed_is_all_there_is(tmp_path):
    study = _study(with_acts=False)
    one = report_sections(study, tmp_path)
    assert "one seed gives no spread" not in one[0]  # two seeds of the best configuration
    study.set_user_attr("mix_seed_runs", {"trial": 4, "config": {"model": "cnn", "widths": [16, 32, 64],
                                                                  "cycle_epochs": 3}, "runs": [
        {"seed": s, "accuracy": 0.9, "mix_p": [[0.6, 0.1, 0.3], [0.3, 0.7, 0.0], [0.1, 0.0, 0.9]]} for s in range(4)]})
    mix = next(s for s in report_sections(study, tmp_path) if s.startswith("## Learned"))
    assert "--mix-seeds 4" in mix and "| 1 | 4 | 0.6000 ± 0.0000 |" in mix


def test_one_run_per_activation_shows_no_spread(tmp_path):
    study = optuna.create_study(direction="maximize")
    for act, acc in (("relu", 0.8), ("sin", 0.7)):
        study.add_trial(optuna.trial.create_trial(value=acc, user_attrs={"config": {"activation": act}}))
    (acc,) = report_sections(study, tmp_path)
    assert "| relu | 1 | 0.8000 | 0.8000 | 0.8000 | - | - |" in acc


def test_report_has_nothing_to_say_about_a_study_without_diagnostics(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"config": {"activation": "relu"}}))
    assert report_sections(study, tmp_path) == []


def test_cli_retrains_a_study_s_best_mix_config_over_seeds(tiny_mnist, capsys):
    url = storage_url()
    study = optuna.create_study(study_name="mixdemo", storage=open_storage(url, heartbeat=False), direction="maximize")
    study.set_user_attr("split", {"dataset": "mnist", "val_size": 100, "split_seed": 0})
    config = {"widths": [8], "activation": "mix", "epochs": 1, "batch_size": 32, "seed": 0}
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"config": config, "mix_p": [[0.3, 0.3, 0.4]]}))
    assert main(["activations", "--study", "mixdemo", "--mix-seeds", "2"]) == 0
    out = capsys.readouterr().out
    # 0.4848: Bansal's MNIST row, as the study ran on MNIST
    assert "seed 0: complete" in out and "seed 1: complete" in out and "0.4848" in out
    stored = optuna.load_study(study_name="mixdemo", storage=url).user_attrs["mix_seed_runs"]
    assert stored["trial"] == 0 and [r["seed"] for r in stored["runs"]] == [0, 1]


def test_cli_mix_seeds_refuses_unknown_studies_and_studies_without_mix(tiny_mnist, capsys):
    assert main(["activations", "--study", "nope", "--mix-seeds", "2"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err  # the shared open_study message
    study = optuna.create_study(study_name="plain", storage=open_storage(storage_url(), heartbeat=False))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"config": {"widths": [8]}}))
    assert main(["activations", "--study", "plain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no complete trial with a `mix`" in err


def test_dead_units_are_drawn_only_when_there_is_something_to_see(tmp_path):
    quiet = optuna.create_study(direction="maximize", study_name="quiet")
    for t in _study(with_mix=False).trials:  # a few tenths of a percent: bars near 0 would tell nothing
        quiet.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                                  user_attrs={**t.user_attrs, "dead_units": [0.004, 0.0]}))
    (tmp_path / "dead_units.png").write_bytes(b"old")
    dead = report_sections(quiet, tmp_path)[-1]
    assert dead.startswith("## Dead units") and "No picture: every mean stays below 1%." in dead
    assert "dead_units.png" not in dead and not (tmp_path / "dead_units.png").exists()

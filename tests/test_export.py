"""Export: best trial, top K and Pareto set as re-trainable configs; the export → train round trip;
validation of config files; bad input leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import yaml

from hpo.cli import main
from hpo.errors import ConfigError
from hpo.hints import hpo_command
from hpo.provenance import ROOT
from hpo.results.export import export, load_config
from hpo.results.retrain import train_file
from hpo.search.runner import run_study
from hpo.training.spec import TrainConfig
from tests.test_objective import tiny_study

# Wide enough to hold the paper's Table 1 and Table 3 configurations as baselines.
SPACE = """\
# test space
depth: {low: 1, high: 2}
width: {low: 8, high: 64, per_layer: true}
optimizer: {choices: [sgd, adam]}
lr: {low: 1e-3, high: 1.0, log: true}
batch_size: {choices: [32, 64]}
epochs: {low: 1, high: 10}
"""


def smoke_study(tmp_path, monkeypatch, **extra) -> optuna.Study:
    """A --smoke study `t-smoke` on the tiny MNIST stand-in, run from tmp_path (so runs/ lands there)."""
    monkeypatch.chdir(tmp_path)
    keys = {"pruner": "none", "n_trials": 4, "baselines": "{paper: youn_hong_2024, tables: [3]}", **extra}
    return run_study(tiny_study(tmp_path, space=SPACE, **keys), smoke=True)


def _load(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=os.environ["HPO_STORAGE"])


def test_export_then_train_round_trip_on_fashion_mnist(fmnist_available, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = run_study("relu3_adam", smoke=True)
    assert main(["export", "relu3_adam", "--smoke"]) == 0
    path = tmp_path / "runs" / "relu3_adam-smoke" / "best.yaml"
    best = max((t for t in study.trials if t.values), key=lambda t: (t.values[0], -t.number))

    cfg = load_config(path)
    assert cfg.dataset.spec() == "fashion_mnist" and (cfg.val_size, cfg.split_seed) == (10000, 0)
    assert cfg.train == TrainConfig.from_dict(best.user_attrs["config"])
    assert cfg.provenance["trial"] == best.number and cfg.provenance["val_accuracy"] == best.values[0]
    assert cfg.provenance["sampler"] == "tpe" and cfg.provenance["versions"]["optuna"].startswith("5.")
    assert "git_commit" in cfg.provenance["exported_with"] and cfg.provenance["exported_at"]

    # Re-trained with the study's seed on the study's split, the trial's validation accuracy comes back.
    r = train_file(str(path), seeds=1, validation=True)
    assert r["reproduced"] is True
    assert abs(r["runs"][0]["accuracy"] - best.values[0]) <= 0.005
    assert r["meta"]["eval"] == "validation" and r["meta"]["n_train"] == cfg.n_train

    # The test-set run: full training set in principle, a subset here; seeds are seed, seed+1.
    r = train_file(str(path), seeds=2, train_limit=2000, eval_limit=500)
    assert [x["seed"] for x in r["runs"]] == [cfg.train.seed, cfg.train.seed + 1]
    assert r["meta"]["eval"] == "test" and r["meta"]["n_eval"] == 500
    assert 0.3 < r["stats"]["mean"] <= 1 and r["stats"]["min"] <= r["stats"]["mean"] <= r["stats"]["max"]


def test_top_k_files_ranked_and_a_new_export_replaces_the_old(tmp_path, monkeypatch, tiny_mnist, capsys):
    study = smoke_study(tmp_path, monkeypatch)
    assert main(["export", "t", "--smoke", "--top", "3"]) == 0
    folder = tmp_path / "runs" / "t-smoke"
    files = [folder / n for n in ("best.yaml", "top2.yaml", "top3.yaml")]
    values = [load_config(f).provenance["val_accuracy"] for f in files]
    assert values == sorted(values, reverse=True)
    assert values[0] == max(t.values[0] for t in study.trials if t.values)
    assert [load_config(f).provenance["rank"] for f in files] == [1, 2, 3]
    assert "wrote runs/t-smoke/top3.yaml" in capsys.readouterr().out

    assert main(["export", "t", "--smoke"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["best.yaml"]
    assert main(["export", "t", "--smoke", "--out", "elsewhere/mine.yaml"]) == 0
    assert load_config(tmp_path / "elsewhere" / "mine.yaml").provenance["rank"] == 1


def test_multi_objective_export_writes_the_pareto_set(tmp_path, monkeypatch, tiny_mnist):
    smoke_study(tmp_path, monkeypatch, objectives="[accuracy, params]", n_trials=6, sampler="random")
    assert main(["export", "t", "--smoke"]) == 0
    study = _load("t-smoke")
    files = sorted((tmp_path / "runs" / "t-smoke").glob("pareto*.yaml"))
    assert files and not (tmp_path / "runs" / "t-smoke" / "best.yaml").exists()
    configs = [load_config(f) for f in files]
    assert {c.provenance["trial"] for c in configs} == {t.number for t in study.best_trials}
    points = [(c.provenance["values"]["val_accuracy"], c.provenance["values"]["n_params"]) for c in configs]
    for a in points:  # no member dominates another: more accurate means more parameters
        for b in points:
            assert not (b[0] >= a[0] and b[1] <= a[1] and b != a)
    assert [p[0] for p in points] == sorted((p[0] for p in points), reverse=True)  # pareto1 is the most accurate


def test_hand_written_config_with_defaults_trains(tmp_path, tiny_mnist):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset: mnist\ntrain: {widths: [16], activation: relu, optimizer: adam, lr: 0.01,\n"
                    "  batch_size: 32, epochs: 1, seed: 3}\n")
    cfg = load_config(path)
    assert cfg.train.widths == (16,) and cfg.train.schedule == "constant" and cfg.val_size == 10000
    r = train_file(str(path), seeds=2)
    assert [x["seed"] for x in r["runs"]] == [3, 4] and r["meta"]["n_eval"] == 200
    assert "mix_p" not in r["runs"][0]  # no mix layer, no P


def test_hpo_train_of_a_mix_config_records_and_prints_its_learned_p(tmp_path, tiny_mnist, capsys):
    """mixed_activation's test-set numbers come from `hpo train`: each run keeps its P per layer."""
    path = tmp_path / "mix.yaml"
    path.write_text("dataset: mnist\ntrain: {model: cnn, widths: [4, 4, 8], activation: mix, optimizer: adam,\n"
                    "  lr: 0.001, mix_lr: 0.01, cycle_epochs: 1, epochs: 3, batch_size: 64, seed: 0}\n")
    r = train_file(str(path), seeds=2, json_out=tmp_path / "t.json")
    for run in r["runs"]:
        assert len(run["mix_p"]) == 3 and all(abs(sum(p) - 1) < 1e-5 for p in run["mix_p"])
    assert r["runs"][0]["mix_p"] != r["runs"][1]["mix_p"]  # each seed learns its own
    out = " ".join(capsys.readouterr().out.split())  # the table's title may wrap
    assert "learned P per layer over 2 seeds" in out and "P_relu" in out
    assert "mix_p" in (tmp_path / "t.json").read_text()


GOOD = {"dataset": "mnist", "split": {"val_size": 100, "seed": 0},
        "train": {"widths": [16], "activation": "relu", "optimizer": "adam", "lr": 0.01, "batch_size": 32,
                  "epochs": 1, "seed": 0}}


@pytest.mark.parametrize("change, key", [
    (lambda d: d.pop("dataset"), "dataset"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.update(dataset="cifar"), "dataset"),
    (lambda d: d["train"].pop("lr"), "train.lr"),
    (lambda d: d["train"].update(lrate=0.1), "train.lrate"),
    (lambda d: d["train"].update(optimizer="lion"), "train.optimizer"),
    (lambda d: d["train"].update(epochs="ten"), "train.epochs"),
    (lambda d: d["train"].update(widths=[16, 0]), "train.widths[1]"),
    (lambda d: d["train"].update(activation=["relu", "tanh"]), "train.activation"),
    (lambda d: d["split"].update(val=3), "split.val"),
    (lambda d: d["split"].update(seed=True), "split.seed"),
    (lambda d: d.update(provenance=[1]), "provenance"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, change, key):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    change(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key and "bad.yaml" in str(e.value)


def _one_line_exit_2(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpo: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///runs/hpo.db")  # the default, relative: must not be created
    assert "does not exist yet" in _one_line_exit_2(["export", "nosuch"], capsys)
    assert "does not exist yet" in _one_line_exit_2(["compare", "nosuch", "--smoke"], capsys)
    assert not (tmp_path / "runs").exists()

    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="empty", storage=storage, direction="maximize")
    assert "no study 'nosuch'" in _one_line_exit_2(["export", "nosuch", "--storage", storage], capsys)
    assert "'empty' has no completed trials" in _one_line_exit_2(["export", "empty", "--storage", storage], capsys)
    assert "no completed trials" in _one_line_exit_2(["compare", "empty", "--storage", storage], capsys)
    assert "no completed trials" in _one_line_exit_2(["report", "empty", "--storage", storage], capsys)
    assert "not a safe study name" in _one_line_exit_2(["export", "../x", "--storage", storage], capsys)
    assert "--top" in _one_line_exit_2(["export", "empty", "--top", "0", "--storage", storage], capsys)

    (tmp_path / "bad.yaml").write_text("dataset: mnist\ntrain: {widths: [8]}\n")
    err = _one_line_exit_2(["train", "bad.yaml"], capsys)
    assert "bad.yaml: train.activation: missing" in err
    assert "no such file" in _one_line_exit_2(["train", "missing.yaml"], capsys)
    assert sorted(p.name for p in Path(tmp_path).iterdir() if not p.name.startswith("db.sqlite")) == ["bad.yaml"]


def test_hints_say_what_to_run_first_in_the_form_the_user_typed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///runs/hpo.db")
    err = _one_line_exit_2(["compare", "wide"], capsys)
    assert err.endswith("hpo study wide` first"), err
    monkeypatch.setenv("HPO_MAKE", "1")  # what the Makefile exports: `make compare NAME=wide` before the study
    assert _one_line_exit_2(["compare", "wide"], capsys).endswith("run `make study NAME=wide` first")
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="other", storage=storage)
    err = _one_line_exit_2(["export", "wide", "--smoke", "--storage", storage], capsys)
    assert "(studies there: other)" in err and err.endswith("run `make study NAME=wide ARGS=--smoke` first"), err


def test_train_given_a_study_file_says_so_and_what_to_run(capsys):
    err = _one_line_exit_2(["train", str(ROOT / "studies" / "relu3_adam.yaml")], capsys)
    assert "is a study file, not a trained configuration" in err and "study relu3_adam`" in err, err
    assert "export relu3_adam`" in err and "runs/relu3_adam/best.yaml" in err


def test_exported_headers_name_an_hpo_that_runs_from_here(tmp_path, monkeypatch, tiny_mnist):
    smoke_study(tmp_path, monkeypatch)
    (path, _), = export("t", smoke=True)
    header = [line for line in path.read_text().splitlines() if line.startswith("# Re-train")][0]
    assert f"{hpo_command()} train {path} --seeds 5" in header
    monkeypatch.setenv("PATH", "/nonexistent")  # a fresh shell without the venv on its PATH
    assert hpo_command() != "hpo" and Path(hpo_command()).is_file()


def test_an_old_study_s_adam_trial_exports_without_its_momentum(tmp_path, tiny_mnist):
    """Trials recorded before conditional hyperparameters drew momentum for adam and stored every TrainConfig
    field (no augment fields yet): they still export, with the active fields only, and read back."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    study.set_user_attr("split", {"dataset": "mnist", "val_size": 100, "split_seed": 0, "n_train": 500, "n_eval": 100})
    old = {k: v for k, v in TrainConfig(widths=(16,), optimizer="adam", lr=0.01, momentum=0.828, batch_size=32,
                                         epochs=1).to_dict().items() if k not in ("augment", "augment_shift")}
    dists = {"optimizer": optuna.distributions.CategoricalDistribution(["sgd_momentum", "adam"]),
             "momentum": optuna.distributions.FloatDistribution(0.8, 0.99)}
    study.add_trial(optuna.trial.create_trial(params={"optimizer": "adam", "momentum": 0.828}, distributions=dists,
                                              value=0.9, user_attrs={"config": old}))
    [(path, _)] = export("old", out=tmp_path / "best.yaml", storage=url)
    train = yaml.safe_load(path.read_text())["train"]
    assert "momentum" not in train and "negative_slope" not in train and "mix_lr" not in train
    assert train["optimizer"] == "adam" and train["lr"] == 0.01
    cfg = load_config(path).train
    assert cfg == TrainConfig.from_dict({**old, "momentum": TrainConfig().momentum})


def test_per_layer_slopes_and_augmentation_read_back(tmp_path):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    doc["train"].update(widths=[16, 8], activation=["leaky_relu", "relu"], negative_slope=[0.2, 0.01],
                        augment="shift_flip", augment_shift=3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path).train
    assert cfg.negative_slope == (0.2, 0.01) and cfg.augment == "shift_flip" and cfg.augment_shift == 3
    for change, key in [({"negative_slope": [0.2]}, "train.negative_slope"), ({"augment": "crop"}, "train.augment"),
                        ({"augment_shift": 20}, "train.augment_shift")]:
        bad = yaml.safe_load(yaml.safe_dump(doc))
        bad["train"].update(change)
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert e.value.key == key, str(e.value)


def test_a_study_run_with_smoke_asked_for_without_says_add_smoke(tmp_path, monkeypatch, capsys):
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="relu3_adam-smoke", storage=storage)
    err = _one_line_exit_2(["export", "relu3_adam", "--storage", storage], capsys)
    assert "'relu3_adam-smoke' is there: add --smoke" in err, err
    err = _one_line_exit_2(["export", "relu3adam", "--smoke", "--storage", storage], capsys)
    assert "did you mean 'relu3_adam'?" in err, err


def test_a_misspelt_study_is_matched_only_against_what_the_storage_holds(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="relu2_sgd-smoke", storage=storage)
    err = _one_line_exit_2(["report", "relu3_sgd", "--storage", storage], capsys)
    assert "did you mean 'relu2_sgd' with --smoke?" in err and "studies there: relu2_sgd-smoke" in err, err
    err = _one_line_exit_2(["report", "relu3_sgd", "--storage", "runs/hpo.db"], capsys)
    assert "--storage: 'runs/hpo.db' is not a storage URL; for a SQLite file write sqlite:///runs/hpo.db" in err

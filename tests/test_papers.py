"""Papers and models as files: the issue's example paper accepted as written and audited end to end on a .npz,
a user's model through study, export, train, compare and report, and the bad-file tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo import data as data_mod
from hpo.cli import main
from hpo.errors import ConfigError
from hpo.search.papers import load_paper
from hpo.search.studyfile import load_study
from tests.conftest import write_tiny_idx

SMITH = """\
# papers/smith_2023.yaml (a made-up example)
title: "Smith 2023, Tuning small MLPs by hand"
dataset: {path: ../data/fm.npz}
metric: accuracy
tables:
  1:
    caption: two hidden layers
    rows:
      - {width: [60, 40], optimizer: adam, lr: 0.001, reported: 0.9707}
      - {width: [30, 10], optimizer: sgd, lr: 0.1, reported: 0.91, note: lr read from a merged cell}
protocol:
  epochs: {value: 2, reason: not stated}
  batch_size: {value: 64, reason: not stated}
"""

SPACE = """\
depth: 2
width: {low: 8, high: 64, per_layer: true}
optimizer: {choices: [adam, sgd]}
lr: {low: 1e-3, high: 1e-1, log: true}
epochs: 2
"""


def _npz(path, seed=0):
    """A learnable 10-class set of 28x28 images (the tests' IDX generator), as Keras' mnist.npz lays it out."""
    folder = write_tiny_idx(path.parent / f"idx{seed}", n_train=400, n_test=100, seed=seed, gz=False)
    arrays = [data_mod.read_idx(folder / f) for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])


@pytest.fixture
def smith(tmp_path, monkeypatch):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "smith_2023.yaml").write_text(SMITH)
    _npz(tmp_path / "data" / "fm.npz")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "smith.yaml").write_text("dataset: {path: data/fm.npz}\nspace: space.yaml\nn_trials: 4\n"
                                         "pruner: none\nsplit: {val_size: 100}\n"
                                         "baselines: {paper: papers/smith_2023.yaml, tables: [1]}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_issue_s_paper_file_is_accepted_as_written(smith):
    paper = load_paper("papers/smith_2023.yaml")
    assert paper.title == "Smith 2023, Tuning small MLPs by hand" and paper.tables == [1]
    assert [r.reported for r in paper.rows] == [0.9707, 0.91] and paper.rows[1].note == "lr read from a merged cell"
    assert main(["check", "papers/smith_2023.yaml", "smith.yaml"]) == 0


def test_a_paper_file_audited_end_to_end_on_an_npz(smith, capsys):
    cfg = load_study("smith.yaml")
    assert [b.hp["widths"] for b in cfg.baselines] == [(60, 40), (30, 10)]
    assert all(b.hp["epochs"] == 2 and b.hp["batch_size"] == 64 for b in cfg.baselines)
    assert main(["study", "smith.yaml"]) == 0
    assert main(["export", "smith"]) == 0
    assert main(["train", "runs/smith/best.yaml", "--seeds", "2", "--json", "runs/smith/train.json"]) == 0
    assert main(["compare", "smith", "--seeds", "2", "--reuse", "runs/smith/train.json"]) == 0
    assert main(["report", "smith"]) == 0
    result = json.loads((smith / "runs" / "smith" / "compare.json").read_text())
    assert [e["reported"] for e in result["entries"] if e["kind"] == "paper"] == [0.9707, 0.91]
    report = (smith / "runs" / "smith" / "report.md").read_text()
    assert "**Smith 2023, Tuning small MLPs by hand**" in report and "Table 1: two hidden layers" in report
    assert "| T1 60-40 adam lr=0.001 | 97.07% |" in report and "| T1 30-10 sgd lr=0.1 | 91.00% | lr read from a " \
                                                             "merged cell |" in report
    assert "**epochs** = 2: not stated" in report


def test_a_user_s_model_through_study_export_train_compare_and_report(tmp_path, monkeypatch, capsys):
    _npz(tmp_path / "d.npz")
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n"
        "def small_cnn(input_shape, n_classes, channels, hidden=32):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Unflatten(1, input_shape), nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),\n"
        "                         nn.MaxPool2d(4), nn.Flatten(), nn.Linear(channels * (h // 4) * (w // 4), hidden),\n"
        "                         nn.ReLU(), nn.Linear(hidden, n_classes))\n")
    (tmp_path / "space.yaml").write_text("model: nets.py:small_cnn\nmodel_args:\n  channels: {low: 2, high: 8}\n"
                                         "  hidden: {choices: [16, 32]}\noptimizer: adam\n"
                                         "lr: {low: 1e-3, high: 1e-2, log: true}\nepochs: 1\n")
    (tmp_path / "mine.yaml").write_text("dataset: {path: d.npz}\nspace: space.yaml\nn_trials: 3\npruner: none\n"
                                        "split: {val_size: 100}\nbudget: {max_params: 100000}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "mine.yaml"]) == 0
    assert main(["study", "mine.yaml"]) == 0
    out = capsys.readouterr().out
    assert "small_cnn(channels=" in out and "complete" in out
    assert main(["export", "mine"]) == 0
    exported = (tmp_path / "runs" / "mine" / "best.yaml").read_text()
    assert "small_cnn" in exported and "model_args" in exported
    monkeypatch.chdir(tmp_path / "runs")  # the export names the model's file by its absolute path
    assert main(["train", "mine/best.yaml", "--validation"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "mine", "--seeds", "1"]) == 0
    report = (tmp_path / "runs" / "mine" / "report.md").read_text()
    assert "small_cnn(" in report


MODEL = "from torch import nn\n\ndef build(input_shape, n_classes, hidden):\n    return nn.Linear(1, 1)\n"


@pytest.mark.parametrize("space,key,fragment", [
    ("model: nets.py:build\nmodel_args: {hidden: 8, depth_: 2}\n", "model_args.depth_", "build takes no argument"),
    ("model: nets.py:build\n", "model_args", "missing 'hidden', which build requires"),
    ("model: nets.py:nothere\nmodel_args: {hidden: 8}\n", "model", "has no function 'nothere'"),
    ("model: missing.py:build\nmodel_args: {hidden: 8}\n", "model", "no such file"),
    ("model: nets.py:build\nmodel_args: {hidden: 8}\nwidth: 16\n", "width", "leave width out"),
    ("model: mlp\nmodel_args: {hidden: 8}\n", "model_args", "only for a user's model"),
])
def test_a_bad_user_model_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys, space, key, fragment):
    (tmp_path / "nets.py").write_text(MODEL)
    (tmp_path / "space.yaml").write_text(space)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "space.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"space.yaml: {key}:" in err and fragment in err, err


@pytest.mark.parametrize("edit,key,fragment", [
    (lambda s: s.replace("metric: accuracy", "metric: accuracy\nyear: 2023"), "year", "unknown key"),
    (lambda s: s.replace("reported: 0.91", "reported: 91"), "tables.1.rows[1].reported", "is a percent"),
    (lambda s: s.replace("reason: not stated}\n  batch", "why: x}\n  batch"), "protocol.epochs.why", "unknown key"),
    (lambda s: s.replace("{value: 64, reason: not stated}", "{value: 64}"), "protocol.batch_size.reason", "missing"),
    (lambda s: s.replace("{value: 64, reason: not stated}", "{value: 64, reason: x, tables: [2]}"),
     "protocol.batch_size.tables", "this paper's tables"),
    (lambda s: s.replace("optimizer: sgd,", "optimiser: sgd,"), "tables.1.rows[1].optimiser", "unknown key"),
])
def test_a_bad_paper_file_is_one_line_naming_the_key(smith, capsys, edit, key, fragment):
    (smith / "papers" / "smith_2023.yaml").write_text(edit(SMITH))
    assert main(["check", "papers/smith_2023.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"smith_2023.yaml: {key}:" in err and fragment in err, err


def test_a_paper_row_outside_the_study_s_space_names_the_table_and_row(smith, capsys):
    (smith / "space.yaml").write_text(SPACE.replace("choices: [adam, sgd]", "choices: [adam]"))
    assert main(["check", "smith.yaml"]) == 2
    err = capsys.readouterr().err
    assert "smith.yaml: baselines: papers/smith_2023.yaml: table 1: row T1 30-10 sgd lr=0.1 lies outside" in err


def test_percent_and_fraction_forms_read_the_same(tmp_path):
    (tmp_path / "p.yaml").write_text(SMITH.replace("0.9707", '"97.07%"').replace("0.91,", "91,")
                                     .replace("../data/fm.npz", "fm.npz"))
    (tmp_path / "fm.npz").write_bytes(b"")  # the paper's data file must exist; it is not read
    assert [r.reported for r in load_paper(str(tmp_path / "p.yaml")).rows] == pytest.approx([0.9707, 0.91])


def test_every_shipped_paper_loads_and_youn_hong_gives_the_configs_it_always_gave():
    papers = {n: load_paper(n, io=(784, 10)) for n in ("youn_hong_2024", "xiao_2017", "bansal_2022")}
    yh = papers["youn_hong_2024"]
    proto = yh.protocol_values()
    protocol = {"epochs": 10, "batch_size": 64, "init": "default", "schedule": "constant", "weight_decay": 0.0,
                "dropout": 0.0, "label_smoothing": 0.0, "augment": "none"}
    # the table hpo held in code before papers were YAML files: (table, widths, optimizer, lr, reported)
    before = [(1, (50,), "sgd", 0.001, 0.6975), (1, (40,), "sgd", 0.01, 0.9377), (1, (35,), "sgd", 0.01, 0.8822),
              (1, (30,), "sgd", 0.001, 0.6383), (1, (30,), "sgd", 0.01, 0.8851), (1, (30,), "sgd", 0.1, 0.9328),
              (1, (30,), "sgd", 1.0, 0.9670), (1, (20,), "sgd", 0.1, 0.9321), (2, (40, 30), "sgd", 0.001, 0.3313),
              (2, (50, 20), "sgd", 0.001, 0.3287), (2, (50, 30), "sgd", 0.01, 0.8805),
              (2, (50, 30), "sgd", 0.1, 0.9509), (2, (45, 30), "sgd", 0.01, 0.8789),
              (3, (50, 30), "adam", 0.001, 0.9698), (3, (60, 30), "adam", 0.001, 0.9699),
              (3, (60, 40), "adam", 0.001, 0.9707)]
    assert [(r.table, r.widths, r.optimizer, r.lr, r.reported) for r in yh.rows] == before
    for r in yh.rows:
        assert yh.row_config(r, proto) == {**protocol, "widths": r.widths, "optimizer": r.optimizer, "lr": r.lr}
    assert yh.rows[-1].name == "T3 784-60-40-10 adam lr=0.001"
    assert len(papers["xiao_2017"].table(1)) == 6 and papers["bansal_2022"].mix_weights["fashion_mnist"][1][1] == 0.7001
    with pytest.raises(ConfigError, match="no paper named 'smith'"):
        load_paper("smith")


def test_check_says_in_one_line_when_a_study_runs_other_data_than_the_paper_s_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "on_mnist.yaml").write_text("dataset: mnist\nspace: relu3_adam\n"
                                            "baselines: {paper: youn_hong_2024, tables: [3]}\n")
    (tmp_path / "on_fm.yaml").write_text("dataset: fashion_mnist\nspace: relu3_adam\n"
                                         "baselines: {paper: youn_hong_2024, tables: [3]}\n")
    assert main(["check", "on_mnist.yaml", "on_fm.yaml"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ok: on_mnist.yaml (study; note: ") and "reports its rows on fashion_mnist; " \
                                                                        "this study runs mnist" in lines[0]
    assert lines[1] == "ok: on_fm.yaml (study)"

"""`dataset: {path: …}`: every form on small files written here, the bad-data table, Fashion-MNIST through a file
giving the built-in data set's numbers, and the recorded sha256 refusing changed data."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hpo import data as data_mod
from hpo.cli import main
from hpo.errors import ConfigError
from hpo.provenance import ROOT
from hpo.sources import parse_source, train_size
from hpo.training.loop import train
from hpo.training.spec import TrainConfig
from tests.conftest import FMNIST, write_tiny_idx


def _images(n: int, shape=(8, 8), classes: int = 3, seed: int = 0):
    """A learnable data set: class k lights the k-th band of rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 40, (n, *shape)).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, ..., 2 * k:2 * k + 2, :] = 220
    return x, y


def _load(spec: dict, base):
    return data_mod.load(parse_source(spec, "study.yaml", base=base))


def test_npz_in_keras_layout(tmp_path):
    x, y = _images(120)
    np.savez(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    ds = _load({"path": "d.npz"}, tmp_path)
    assert ds.input_shape == (1, 8, 8) and ds.n_classes == 3 and len(ds.train_x) == 100 and len(ds.test_x) == 20
    assert ds.train_x.dtype == torch.uint8 and ds.class_names == ("0", "1", "2")
    splits = data_mod.make_splits(ds, val_size=20)
    assert splits.train_x.shape == (80, 64) and splits.meta["input_shape"] == [1, 8, 8]
    assert splits.meta["n_classes"] == 3 and len(splits.meta["data_sha256"]) == 64


def test_npz_without_a_test_split_carves_one_with_its_seed(tmp_path):
    x, y = _images(100)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    src = parse_source({"path": "d.npz", "test_size": 0.25, "seed": 3}, "s.yaml", base=tmp_path)
    assert train_size(src) == 75  # read from the headers, as `hpo check` does
    a = data_mod.load(src)
    assert (len(a.train_x), len(a.test_x)) == (75, 25)
    data_mod._LOADED.clear()
    b = data_mod.load(parse_source({"path": "d.npz", "test_size": 0.25, "seed": 3}, "s.yaml", base=tmp_path))
    c = data_mod.load(parse_source({"path": "d.npz", "test_size": 0.25, "seed": 4}, "s.yaml", base=tmp_path))
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.test_x, c.test_x)
    assert src.spec() == {"path": str(tmp_path / "d.npz"), "test_size": 0.25, "seed": 3}  # recorded with the study


def test_csv_tabular_with_string_labels_standardised_per_feature(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"{a:.3f}", f"{100 + 50 * a + rng.normal():.3f}", "yes" if a > 0 else "no")
            for a in rng.normal(size=60)]
    for name, part in (("train.csv", rows[:50]), ("test.csv", rows[50:])):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "answer"])
            w.writerows(part)
    ds = _load({"path": "train.csv", "test": "test.csv", "target": "answer"}, tmp_path)
    assert ds.input_shape == (2,) and ds.class_names == ("no", "yes") and ds.train_x.dtype == torch.float32
    s = data_mod.make_splits(ds, val_size=10)
    assert torch.allclose(s.train_x.mean(0), torch.zeros(2), atol=1e-5)  # per feature, from the training part
    assert torch.allclose(s.train_x.std(0), torch.ones(2), atol=1e-5)


def test_idx_folder_of_any_data_set(tmp_path):
    write_tiny_idx(tmp_path / "mine", n_train=50, n_test=20)
    ds = _load({"path": "mine"}, tmp_path)
    assert ds.input_shape == (1, 28, 28) and len(ds.train_x) == 50 and ds.n_classes == 10


def test_image_folder_with_colour_images_of_one_size(tmp_path):
    x, y = _images(24, shape=(6, 5))
    for split, idx in (("train", range(18)), ("test", range(18, 24))):
        for i in idx:
            d = tmp_path / "imgs" / split / f"class_{y[i]}"
            d.mkdir(parents=True, exist_ok=True)
            rgb = np.stack([x[i], x[i] // 2, 255 - x[i]], axis=-1)
            Image.fromarray(rgb, "RGB").save(d / f"{i}.png")
    ds = _load({"path": "imgs"}, tmp_path)
    assert ds.input_shape == (3, 6, 5) and ds.class_names == ("class_0", "class_1", "class_2")
    s = data_mod.make_splits(ds, val_size=4)
    assert len(s.meta["mean"]) == 3 and s.train_x.shape[1] == 90  # per channel, flat rows
    r = train(TrainConfig(model="cnn", widths=(4, 8), epochs=1, batch_size=8), s)  # the CNN takes any channels
    assert r.status == "complete"


def _bad_npz(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((5, 4)), y_test=np.zeros(5))
    return {"path": "bad.npz"}


def _lengths(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((5, 4)), y_train=np.zeros(4))
    return {"path": "bad.npz"}


def _nan(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 3))
    x[2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=np.array([0, 1, 0, 1, 0, 1]))
    return {"path": "bad.npz"}


def _one_class(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((6, 3)), y_train=np.zeros(6))
    return {"path": "bad.npz"}


def _text_cell(tmp_path):
    (tmp_path / "bad.csv").write_text("label,a,b\n0,1.0,2.0\n1,3.0,oops\n" + "0,1,1\n" * 8)
    return {"path": "bad.csv"}


def _no_column(tmp_path):
    (tmp_path / "bad.csv").write_text("y,a\n0,1\n1,2\n" + "0,1\n" * 8)
    return {"path": "bad.csv", "target": "label"}


def _sizes(tmp_path):
    for i, size in enumerate(((4, 4), (4, 4), (5, 4))):
        d = tmp_path / "bad" / "train" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros(size, np.uint8), "L").save(d / f"{i}.png")
    return {"path": "bad"}


def _not_npz(tmp_path):
    (tmp_path / "bad.npz").write_text("this is not a zip archive")
    return {"path": "bad.npz"}


BAD = [
    ("missing arrays", _bad_npz, "missing array y_train, x_test"),
    ("lengths disagree", _lengths, "5 samples but 4 labels"),
    ("NaN in a feature", _nan, "NaN or infinite"),
    ("one class only", _one_class, "only one class"),
    ("text in a feature", _text_cell, "line 3, column 'b': 'oops' is not a number"),
    ("missing column", _no_column, "no column 'label'"),
    ("images of different sizes", _sizes, "every image must have one size"),
    ("not what its extension says", _not_npz, "not an .npz archive"),
]


@pytest.mark.parametrize("make,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_data_is_one_line_naming_the_file_exit_2_nothing_written(tmp_path, monkeypatch, capsys, make, fragment):
    spec = make(tmp_path)
    (tmp_path / "space.yaml").write_text("depth: 1\nwidth: 8\nepochs: 1\n")
    (tmp_path / "study.yaml").write_text(f"dataset: {spec}\nspace: space.yaml\nn_trials: 1\nsplit: {{val_size: 1}}\n")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["study", "study.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "bad" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no storage


def test_a_path_that_is_no_data_set_is_refused_at_check(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"study.yaml: dataset.path: notes.txt: not a data file hpo reads"):
        parse_source({"path": "notes.txt"}, "study.yaml", base=tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.tagret: unknown key"):
        parse_source({"path": "notes.txt", "tagret": "y"}, "study.yaml", base=tmp_path)


def test_a_validation_split_larger_than_the_data_is_caught_by_check(tmp_path, capsys):
    x, y = _images(50)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    (tmp_path / "space.yaml").write_text("depth: 1\nwidth: 8\n")
    (tmp_path / "study.yaml").write_text("dataset: {path: d.npz}\nspace: space.yaml\nsplit: {val_size: 10000}\n")
    assert main(["check", str(tmp_path / "study.yaml")]) == 2
    assert "split.val_size: `val_size < 50` must hold" in capsys.readouterr().err


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST is not installed (make data)")
def test_fashion_mnist_through_npz_and_csv_gives_the_built_in_numbers(tmp_path):
    """The same split and the same trained accuracy to the 4th decimal (a subset keeps the test quick)."""
    ds = data_mod.load("fashion_mnist")
    n, m = 3000, 1000
    np.savez(tmp_path / "fm.npz", x_train=ds.train_x[:n].numpy(), y_train=ds.train_y[:n].numpy(),
             x_test=ds.test_x[:m].numpy(), y_test=ds.test_y[:m].numpy())
    for name, x, y in (("train.csv", ds.train_x[:n], ds.train_y[:n]), ("test.csv", ds.test_x[:m], ds.test_y[:m])):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label"] + [f"pixel{i}" for i in range(1, 785)])
            w.writerows([int(k), *row] for k, row in zip(y.tolist(), x.reshape(len(x), -1).tolist()))
    subset = data_mod.Dataset("fashion_mnist", ds.train_x[:n], ds.train_y[:n], ds.test_x[:m], ds.test_y[:m],
                              ds.source, ds.verified, ds.class_names, "fashion_mnist")
    cfg = TrainConfig(widths=(32,), epochs=2, batch_size=64)
    want = data_mod.make_splits(subset, val_size=500, seed=0)
    acc = train(cfg, want).eval_acc
    for spec in ({"path": "fm.npz"}, {"path": "train.csv", "test": "test.csv", "target": "label",
                                       "shape": [1, 28, 28]}):
        got = data_mod.make_splits(_load(spec, tmp_path), val_size=500, seed=0)
        assert torch.equal(got.train_x, want.train_x) and torch.equal(got.eval_y, want.eval_y)
        assert train(cfg, got).eval_acc == pytest.approx(acc, abs=5e-5)


def test_a_study_refuses_to_resume_or_export_on_changed_data(tmp_path, monkeypatch, capsys):
    x, y = _images(200)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    (tmp_path / "space.yaml").write_text("depth: 1\nwidth: 8\nepochs: 1\nlr: {low: 1e-3, high: 1e-1, log: true}\n")
    (tmp_path / "study.yaml").write_text("dataset: {path: d.npz}\nspace: space.yaml\nn_trials: 2\n"
                                         "split: {val_size: 40}\npruner: none\n")
    monkeypatch.chdir(tmp_path)
    assert main(["study", "study.yaml"]) == 0
    x[0, 0, 0] ^= 1  # one pixel
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data_mod._LOADED.clear()
    capsys.readouterr()
    assert main(["study", "study.yaml", "--trials", "3"]) == 2
    assert "its data changed since it ran" in capsys.readouterr().err
    assert main(["export", "study"]) == 2
    assert "its data changed since it ran" in capsys.readouterr().err


def test_hpo_check_validates_a_data_file_study_without_loading_it(tmp_path):
    x, y = _images(50)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    (tmp_path / "space.yaml").write_text("depth: 1\nwidth: 8\n")
    (tmp_path / "study.yaml").write_text("dataset: {path: d.npz}\nspace: space.yaml\nsplit: {val_size: 10}\n")
    code = ("import sys; from hpo.sources import parse_source, train_size; from pathlib import Path; "
            f"s = parse_source({{'path': 'd.npz'}}, 'study.yaml', base=Path({str(tmp_path)!r})); "
            "print(train_size(s), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["40", "False"]  # headers only: 50 - the carved 20%, and torch never imported


def test_hpo_check_never_imports_torch(tmp_path):
    """`hpo check` reads study, space, paper and data files through torch-free modules (hpo.sources,
    hpo.training.spec): checking a file costs no torch start-up, and a file is judged by the same rules either way."""
    x, y = _images(50)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    (tmp_path / "space.yaml").write_text("depth: 1\nwidth: 8\nactivation: tanh\noptimizer: adam\n")
    (tmp_path / "study.yaml").write_text("dataset: {path: d.npz}\nspace: space.yaml\nsplit: {val_size: 10}\n")
    code = ("import sys; from hpo.cli import main; "
            f"rc = main(['check', {str(tmp_path / 'study.yaml')!r}, {str(ROOT / 'studies/relu3_adam.yaml')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["0", "False"], out

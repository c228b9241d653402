"""The README stays true where that is cheap to check: every `make` target, every shipped study, every
grammar key is in it; and `make study NAME` without `NAME=` stops before anything runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image

from hpo import data as data_mod
from hpo.cli import main
from hpo.provenance import ROOT
from hpo.search.space import PARAMS
from hpo.sources import parse_source
from tests.conftest import write_tiny_idx

README = (ROOT / "README.md").read_text()
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> subprocess.CompletedProcess:
    # Without the variables of a `make test ARGS=...` around this run: make passes them down to a sub-make.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, env=env)


@needs_make
def test_every_make_target_and_its_help_line_is_in_the_readme():
    listed = _make("help").stdout.splitlines()
    targets = [line.split()[1] for line in listed if line.startswith("  make ")]
    assert {"study", "reproduce", "report", "compare", "test"} <= set(targets)
    for line in listed:  # the README's copy of `make help` is the real one
        assert line in README, f"README lacks this `make help` line: {line!r}"
    for target in targets:
        assert f"make {target}" in README


def test_every_shipped_study_is_in_the_studies_table():
    table = README.split("## Shipped studies")[1].split("\n## ")[0]
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        assert f"| `{path.stem}` |" in table, f"the shipped-studies table lacks {path.stem}"


def test_every_grammar_key_is_in_the_closed_list():
    closed = re.search(r"The set of names is\s+closed: `([^`]+)`", README)
    assert closed, "README: the closed list of space keys is gone"
    assert set(closed.group(1).split()) == set(PARAMS)


@needs_make
def test_a_study_name_without_name_equals_stops_with_one_line():
    r = _make("-n", "study", "relu3adam")  # -n: were the guard broken, make would print the study, not run it
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "write `make study NAME=relu3adam`" in err[0], r.stderr



@needs_make
@pytest.mark.parametrize("goal, var", [("dashboard", "SMOKE=1"), ("export", "SEEDS=2"), ("check", "NAME=wide")])
def test_a_variable_the_target_does_not_use_stops_it_with_one_line(goal, var):
    r = _make("-n", goal, var)
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and f"`make {goal}` does not use {var.split('=')[0]}=" in err[0], r.stderr

def readme_block(first_line: str) -> str:
    """The fenced block of the README whose first line is `first_line`, as written."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S):
        if block.splitlines()[0] == first_line:
            return block
    raise AssertionError(f"README: no block begins with {first_line!r}")


def _write_forms(root):
    """The files the README's `dataset:` forms name, small and learnable."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    img = rng.integers(0, 40, (90, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        img[i, 4 * k:4 * k + 4] = 220
    data = root / "data"
    data.mkdir()
    np.savez(data / "fm.npz", x_train=img[:70], y_train=y[:70], x_test=img[70:], y_test=y[70:])
    np.savez(data / "digits.npz", x_train=img.astype(np.float32) / 16, y_train=y)
    for name, part in (("train.csv", slice(0, 70)), ("test.csv", slice(70, 90))):
        rows = [[k, *(img[i, :2, :2].reshape(-1) / 10)] for i, k in zip(range(90)[part], y[part])]
        np.savetxt(data / name, rows, delimiter=",", header="label,a,b,c,d", comments="", fmt="%g")
        pixels = [[k, *img[i].reshape(-1)] for i, k in zip(range(90)[part], y[part])]
        header = "label," + ",".join(f"pixel{j}" for j in range(1, 785))
        np.savetxt(data / f"fashion-mnist_{name}", pixels, delimiter=",", header=header, comments="", fmt="%d")
    write_tiny_idx(data / "idx", n_train=60, n_test=20)
    for split, idx in (("train", range(70)), ("test", range(70, 90))):
        for i in idx:
            folder = data / "photos" / split / f"c{y[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[i], "L").save(folder / f"{i}.png")


def test_every_dataset_form_the_readme_shows_loads_as_written(tmp_path):
    forms = [line for line in readme_block("# the forms of `dataset:` (one per study)").splitlines()
             if line.startswith("dataset:")]
    assert len(forms) == 6
    _write_forms(tmp_path)
    for line in forms:
        spec = yaml.safe_load(line)["dataset"]
        ds = data_mod.load(parse_source(spec, "study.yaml", base=tmp_path))
        assert len(ds.train_x) > len(ds.test_x) > 0 and ds.n_classes >= 3, line


def test_the_readme_paper_and_model_run_as_written(tmp_path, monkeypatch):
    """The paper file and the model of "Your own paper" / "Your own model", unchanged, through check, study,
    export and train."""
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "smith_2023.yaml").write_text(readme_block("# papers/smith_2023.yaml (a made-up example)"))
    (tmp_path / "nets.py").write_text(readme_block("# nets.py"))
    (tmp_path / "space.yaml").write_text(readme_block("# space.yaml"))
    _write_forms(tmp_path)
    (tmp_path / "mine.yaml").write_text("dataset: {path: data/fm.npz}\nspace: space.yaml\nn_trials: 2\npruner: none\n"
                                        "split: {val_size: 10}\nsampler: random\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "papers/smith_2023.yaml", "mine.yaml"]) == 0
    assert main(["study", "mine.yaml", "--smoke"]) == 0
    assert main(["export", "mine", "--smoke"]) == 0
    assert main(["train", "runs/mine-smoke/best.yaml", "--epochs", "1"]) == 0


def test_every_error_line_the_readme_quotes_is_what_hpo_prints(tmp_path, monkeypatch, capsys):
    """Each `$ cat FILE` / `$ hpo …` / `hpo: error: …` example, run as written."""
    examples = re.findall(r"```\n\$ cat (\S+)\n(.*?)\$ (hpo [^\n]+)\n(hpo: error: [^\n]+)\n```", README, flags=re.S)
    assert examples, "README: no quoted error example found"
    monkeypatch.chdir(tmp_path)
    for name, content, command, expected in examples:
        (tmp_path / name).write_text(content)
        assert main(command.split()[1:]) == 2
        assert capsys.readouterr().err.strip() == expected
    quoted = re.findall(r"^hpo: error: .*$", README, flags=re.M)
    assert len(quoted) == len(examples), "README quotes an error line that no example here produces"

"""Every shipped YAML validates; bad input gives one line naming the file and key, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.cli import main
from hpo.provenance import ROOT
from hpo.results.export import load_config
from hpo.search.papers import load_paper
from hpo.search.studyfile import check_file, load_space, load_study

STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
PAPERS = sorted((ROOT / "papers").glob("*.yaml"))


def test_there_are_shipped_files():
    names = {p.stem for p in STUDIES}
    assert {"relu2_sgd", "relu3_sgd", "relu3_adam", "wide"} <= names
    assert {"relu2_sgd", "relu3_sgd", "relu3_adam", "wide"} <= {p.stem for p in SPACES}
    assert {"youn_hong_2024", "xiao_2017", "bansal_2022"} <= {p.stem for p in PAPERS}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_validates(path):
    cfg = load_study(str(path))
    assert cfg.description, f"{path.name} needs a header comment saying what it tests"
    for b in cfg.baselines:  # the paper's configurations lie inside the space, so they can be trials
        assert cfg.space.problems(b.hp) == []


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_validates_and_says_why(path):
    space = load_space(str(path))
    assert space.description, f"{path.name} needs a header comment"


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_every_shipped_paper_validates_and_says_where_its_numbers_come_from(path):
    assert check_file(str(path)) == "paper"
    assert path.read_text().startswith("#"), f"{path.name} needs a header comment saying how it was read"
    paper = load_paper(path.stem)  # found by name, as a study's `baselines.paper` finds it
    assert paper.source.endswith(f"papers/{path.name}") and paper.title


def test_the_shipped_hand_configuration_lies_inside_relu3_adam_s_space():
    """docs/relu3_adam_hand.yaml, what bench item 7 holds the searches against, is a configuration the study's
    space could draw: each value within its range or among its choices."""
    hand = load_config(ROOT / "docs" / "relu3_adam_hand.yaml").train
    space = load_study("relu3_adam").space
    assert hand.widths == (64, 64) and hand.epochs == 40
    for name in ("lr", "batch_size", "epochs", "schedule", "weight_decay", "dropout", "label_smoothing"):
        param, value = space.params[name], getattr(hand, name)
        assert (value in param.choices) if param.choices else (param.low <= value <= param.high), name
    assert all(space.params["width"].low <= w <= space.params["width"].high for w in hand.widths)


def test_paper_studies_hold_their_tables():
    assert [b.name for b in load_study("relu3_adam").baselines] == [
        "T3 784-50-30-10 adam lr=0.001", "T3 784-60-30-10 adam lr=0.001", "T3 784-60-40-10 adam lr=0.001"]
    assert len(load_study("relu2_sgd").baselines) == 8
    assert len(load_study("relu3_sgd").baselines) == 5
    # widths up to 64: the paper's model size class
    for name in ("relu2_sgd", "relu3_sgd", "relu3_adam"):
        assert load_study(name).space.params["width"].high <= 64


def test_a_smoke_study_is_resolved_once_where_it_is_read():
    full, smoke = load_study("mixed_activation"), load_study("mixed_activation", smoke=True)
    assert (full.study_name, smoke.study_name) == ("mixed_activation", "mixed_activation-smoke")
    assert smoke.smoke and not full.smoke
    assert smoke.n_trials == min(full.n_trials, 4) and len(smoke.baselines) == min(len(full.baselines), 2)
    # the three-cycle schedule at its smallest: one epoch per cycle, in the space and in the baselines
    assert smoke.space.possible("cycle_epochs", 0) == (1,) and smoke.space.possible("epochs", 0) == (1,)
    assert all(b.hp["epochs"] == 1 for b in smoke.baselines)


GOOD_SPACE = """\
# a tiny space
depth: 1
width: {low: 8, high: 32}
optimizer: adam
lr: {low: 1e-4, high: 1e-1, log: true}
epochs: 1
"""

GOOD_STUDY = """\
# a tiny study
dataset: fashion_mnist
space: {space}
sampler: random
pruner: none
n_trials: 2
"""


def _write(tmp_path: Path, study: str = GOOD_STUDY, space: str = GOOD_SPACE) -> Path:
    sp = tmp_path / "space.yaml"
    sp.write_text(space)
    st = tmp_path / "tiny.yaml"
    st.write_text(study.replace("{space}", str(sp)))
    return st


def test_good_files_pass_check(tmp_path, capsys):
    st = _write(tmp_path)
    assert main(["check", str(st), str(tmp_path / "space.yaml")]) == 0
    assert "ok:" in capsys.readouterr().out


BAD = [
    # (study text, space text, key in message, fragment)
    (GOOD_STUDY + "smapler: tpe\n", GOOD_SPACE, "smapler", "unknown key"),
    (GOOD_STUDY.replace("n_trials: 2", "n_trials: two"), GOOD_SPACE, "n_trials", "expected int"),
    (GOOD_STUDY.replace("sampler: random", "sampler: bayes"), GOOD_SPACE, "sampler", "unknown sampler 'bayes'"),
    (GOOD_STUDY.replace("pruner: none", "pruner: early"), GOOD_SPACE, "pruner", "unknown pruner 'early'"),
    (GOOD_STUDY.replace("fashion_mnist", "cifar10"), GOOD_SPACE, "dataset", "unknown data set 'cifar10'"),
    (GOOD_STUDY + "budget: {threads: 0}\n", GOOD_SPACE, "budget.threads", "> 0"),
    (GOOD_STUDY + "budget: {gpus: 1}\n", GOOD_SPACE, "budget.gpus", "unknown key"),
    (GOOD_STUDY + "budget: {workers: 0}\n", GOOD_SPACE, "budget.workers", "> 0"),
    (GOOD_STUDY + "sampler_options: {n_startup: 3}\n", GOOD_SPACE, "sampler_options.n_startup", "unknown option"),
    (GOOD_STUDY + "objectives: [params]\n", GOOD_SPACE, "objectives", "first objective must be accuracy"),
    (GOOD_STUDY + "baselines: {paper: smith_2020}\n", GOOD_SPACE, "baselines.paper", "no paper named 'smith_2020'"),
    (GOOD_STUDY + "baselines: {paper: youn_hong_2024, tables: [3]}\n", GOOD_SPACE, "baselines",
     "lies outside the space"),
    (GOOD_STUDY + "seed: 1\nseed: 2\n", GOOD_SPACE, "line", "duplicate key"),
    (GOOD_STUDY + "n_trials: [\n", GOOD_SPACE, "line", "malformed YAML"),
    (GOOD_STUDY, GOOD_SPACE.replace("optimizer: adam", "optimizer: adagrad"), "optimizer", "unknown value"),
    (GOOD_STUDY, GOOD_SPACE + "activation: swish2\n", "activation", "unknown value"),
    (GOOD_STUDY, GOOD_SPACE.replace("low: 8, high: 32", "low: 32, high: 8"), "width.low", "`low <= high`"),
    (GOOD_STUDY, GOOD_SPACE.replace("low: 1e-4", "low: 0"), "lr.low", "must hold"),
    (GOOD_STUDY, GOOD_SPACE + "momentun: 0.9\n", "momentun", "unknown hyperparameter"),
]


@pytest.mark.parametrize("study,space,key,fragment", BAD, ids=[b[3][:30] for b in BAD])
@pytest.mark.parametrize("command", ["check", "study"])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, study, space, key, fragment,
                                                      command):
    db = tmp_path / "out.db"
    monkeypatch.setenv("HPO_STORAGE", f"sqlite:///{db}")
    st = _write(tmp_path, study, space)
    assert main([command, str(st)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f": {key}" in err and fragment in err, err
    assert "Traceback" not in err
    assert not db.exists()


@pytest.mark.parametrize("args,fragment", [
    (["study", "no_such_study"], "no study named 'no_such_study'"),
    (["study", "../etc/passwd"], "no such study file"),
    (["study", "bad name!"], "not a safe study name"),
    (["check", "/nonexistent.yaml"], "no such file"),
])
def test_missing_files_and_unsafe_names(tmp_path, capsys, monkeypatch, args, fragment):
    db = tmp_path / "out.db"
    monkeypatch.setenv("HPO_STORAGE", f"sqlite:///{db}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not db.exists()


def test_a_relative_space_path_is_read_from_the_study_files_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "proj" / "spaces").mkdir(parents=True)
    (tmp_path / "proj" / "spaces" / "s.yaml").write_text(GOOD_SPACE)
    (tmp_path / "proj" / "st.yaml").write_text("dataset: mnist\nspace: spaces/s.yaml\n")
    (tmp_path / "proj" / "bad.yaml").write_text("dataset: mnist\nspace: spaces/nope.yaml\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not the study's folder: the path must not depend on it
    assert load_study(str(tmp_path / "proj" / "st.yaml")).space.source.endswith("spaces/s.yaml")
    assert main(["check", str(tmp_path / "proj" / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such search space file" in err and str(tmp_path / "proj" / "spaces" / "nope.yaml") in err, err
    monkeypatch.chdir(tmp_path / "proj")  # in the study's folder the two places are one: named once
    assert main(["check", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hpo: error: bad.yaml: space: no such search space file: spaces/nope.yaml (from " \
                  f"{tmp_path / 'proj'})", err


def test_an_unknown_study_name_suggests_the_nearest(capsys):
    assert main(["study", "relu3adam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no study named 'relu3adam'" in err and "did you mean 'relu3_adam'?" in err, err

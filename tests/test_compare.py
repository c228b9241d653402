"""Compare: every paper row, the optimum and the references re-run over the same seeds; the table, the words
about gaps, compare.json and the report; re-runs over seeds."""

from __future__ import annotations

import json
import os
import re

import optuna
import pytest

from hpo import data as data_mod
from hpo.cli import main
from hpo.display import spread
from hpo.results.compare import findings, protocol_lines
from hpo.results.report import table_rows
from hpo.results.retrain import run_seeds, stats
from hpo.search.papers import load_paper
from hpo.stats import prediction_interval
from hpo.trials import study_attrs
from tests.conftest import write_tiny_idx
from tests.test_export import smoke_study


def test_compare_smoke_produces_every_row_and_a_report_with_pictures(tmp_path, monkeypatch, tiny_mnist, capsys):
    smoke_study(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(["compare", "t", "--smoke"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "t-smoke"
    result = json.loads((folder / "compare.json").read_text())

    paper = load_paper("youn_hong_2024", io=(784, 10))
    rows = paper.table(3)
    refs = [r for r in paper.references if r.dataset == "mnist"]  # the study runs on MNIST: Xiao's MNIST table
    kinds = [e["kind"] for e in result["entries"]]
    assert kinds == ["paper"] * len(rows) + ["optimum"] + ["reference"] * len(refs)
    assert [e["reported"] for e in result["entries"] if e["kind"] == "reference"] == [r.reported for r in refs]
    assert [e["name"] for e in result["entries"][:len(rows)]] == [r.name for r in rows]
    assert result["seeds"] == [0, 1] and result["epochs_override"] == 1
    for e in result["entries"]:
        assert [r["seed"] for r in e["runs"]] == [0, 1] and all(r["epochs"] == 1 for r in e["runs"])
        assert e["stats"]["n"] == 2
    assert {p["key"] for p in result["protocol"]} >= {"epochs", "batch_size", "evaluated_on", "seeds", "data"}
    assert result["data"]["eval"] == "test"

    for r in rows:  # every row in the printed table, with its paper number
        assert r.name in out and f"{100 * r.reported:.2f}%" in out
    assert "automated optimum (trial" in out and "protocol assumptions" in out and "Xiao et al. 2017" in out

    report = (folder / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"history.png", "params.png", "curves.png"} <= set(pictures)
    for name in pictures:
        assert (folder / name).stat().st_size > 1000 and (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert "| paper-reported (fashion_mnist) |" in report  # the paper measured Fashion-MNIST; this run is MNIST
    assert all(line in report for line in result["findings"])
    assert "### Protocol assumptions" in report


def test_compare_on_a_missing_data_set_writes_nothing(tmp_path, monkeypatch, tiny_mnist, capsys):
    smoke_study(tmp_path, monkeypatch)
    before = sorted((tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else []
    assert main(["compare", "t", "--smoke", "--dataset", "kmnist"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpo: error: KMNIST not found") and "\n" not in err
    after = sorted((tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else []
    assert after == before


def test_compare_on_another_data_set_writes_its_own_files(tmp_path, monkeypatch, tiny_mnist, capsys):
    smoke_study(tmp_path, monkeypatch)
    write_tiny_idx(tiny_mnist.parent / "kmnist", seed=1, gz=False)  # uncompressed: taken unverified
    assert main(["compare", "t", "--smoke", "--dataset", "kmnist", "--seeds", "1"]) == 0
    folder = tmp_path / "runs" / "t-smoke"
    result = json.loads((folder / "compare-kmnist.json").read_text())
    assert result["dataset"] == "kmnist" and result["seeds"] == [0] and result["data"]["dataset"] == "kmnist"
    refs = [e for e in result["entries"] if e["kind"] == "reference"]
    assert refs and [e["reported"] for e in refs] == [None] * len(refs)  # Xiao et al. report no KMNIST numbers
    report = (folder / "report-kmnist.md").read_text()
    assert "kmnist test accuracy" in report and not (folder / "report.md").exists()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"history-kmnist.png", "params-kmnist.png", "curves-kmnist.png"} <= set(pictures)
    assert all((folder / name).is_file() for name in pictures)


def test_run_seeds_keeps_a_diverged_run_scored_at_what_its_network_does(tiny_mnist):
    splits = data_mod.make_splits(data_mod.load("mnist"), final=True)
    hp = {"widths": (16,), "optimizer": "sgd", "lr": 1e4, "batch_size": 32, "epochs": 1}
    runs = run_seeds(hp, splits, [0, 1])
    assert [r["status"] for r in runs] == ["diverged", "diverged"] and all(r["reason"] for r in runs)
    assert all(0 <= r["accuracy"] <= 0.3 for r in runs)  # a NaN network predicts one class: about chance
    st = stats(runs)
    assert st["diverged"] == 2 and st["n"] == 2


def _entry(kind, name, reported, accs, diverged=0):
    runs = [{"seed": i, "accuracy": a, "status": "diverged" if i < diverged else "complete"}
            for i, a in enumerate(accs)]
    return {"kind": kind, "name": name, "reported": reported, "runs": runs, "stats": stats(runs),
            "note": "784-60-40-10", "val_accuracy": 0.9}


@pytest.fixture
def result():
    return {"study": "s", "dataset": "fashion_mnist", "paper_dataset": "fashion_mnist", "seeds": [0, 1, 2],
            "entries": [
                _entry("paper", "far above", 0.9707, [0.880, 0.884, 0.882]),
                _entry("paper", "within", 0.8830, [0.880, 0.884, 0.882]),
                _entry("paper", "below", 0.3313, [0.800, 0.810, 0.805]),
                _entry("paper", "diverges", 0.9670, [0.1, 0.1, 0.1], diverged=3),
                _entry("optimum", "automated optimum (trial 7)", None, [0.890, 0.892, 0.891]),
                _entry("reference", "ref", 0.871, [0.875, 0.877, 0.876]),
            ]}


def test_findings_say_where_and_by_how_much_a_paper_number_lies_outside_its_re_run(result):
    words = findings(result)
    assert words[0] == ("3 of 4 paper numbers lie outside what their re-run reaches on fashion_mnist "
                        "under this protocol.")
    far = next(w for w in words if w.startswith("far above"))
    assert "8.87 points above the re-run mean" in far and "8.67 points above its best seed" in far
    assert "lies within" in next(w for w in words if w.startswith("within"))
    assert "BELOW" in next(w for w in words if w.startswith("below"))
    assert "diverged in 3 of 3 seeds" in next(w for w in words if w.startswith("diverges"))
    assert any("0.90 points above the best re-run paper configuration, far above" in w for w in words)
    assert any(w.startswith("ref: published 87.10%, re-created here 87.60 ± 0.10%") for w in words)


def test_table_rows_hold_the_issue_columns_and_the_difference(result):
    headers, rows = table_rows(result)
    assert headers == ["configuration", "paper-reported", "paper config re-run", "automated optimum", "difference"]
    assert rows[0] == ["far above", "97.07%", "88.20 ± 0.20%", "89.10 ± 0.10%", "+0.90 pts"]
    assert rows[3][2].endswith("(3/3 diverged)")
    assert rows[4][0].startswith("automated optimum (trial 7), validation 90.00%")


def _result_with(accs: list[float]) -> dict:
    return {"study": "s", "dataset": "fashion_mnist", "paper_dataset": "fashion_mnist", "seeds": list(range(len(accs))),
            "entries": [_entry("paper", "far above", 0.9707, accs),
                        _entry("optimum", "automated optimum (trial 7)", None, [a + 0.01 for a in accs])]}


def test_with_three_seeds_or_more_the_claim_rests_on_a_t_prediction_interval(result):
    far = next(w for w in findings(result) if w.startswith("far above"))
    # mean 0.882, std 0.002, n 3: 0.882 ± t(0.975, 2) · 0.002 · √(4/3) = 0.882 ± 0.00994
    assert "44 std, outside the 95% prediction interval for one run, 87.21% to 89.19% (t, 3 seeds)" in far, far
    assert prediction_interval(0.882, 0.002, 2) is None


def test_two_seeds_give_a_range_and_no_std_claim():
    result = _result_with([0.880, 0.884])
    words = findings(result)
    assert words[0] == ("1 of 1 paper numbers lie outside the range of their re-run's 2 seeds on fashion_mnist "
                        "under this protocol. 2 seeds are too few for a claim: use --seeds 3 or more.")
    assert "std" not in words[1].replace("a std needs", ""), words[1]
    assert "88.20% (seeds 88.00% to 88.40%)" in words[1] and "8.67 points above its best seed" in words[1]
    assert table_rows(result)[1][0][2] == "88.20% (88.00-88.40%)"


def test_one_seed_prints_no_plus_minus():
    result = _result_with([0.880])
    assert table_rows(result)[1][0][2] == "88.00%" and "±" not in " ".join(findings(result))
    assert spread(0.88, 0.0, 1) == "0.8800" and spread(0.88, 0.01, 3) == "0.8800 ± 0.0100"


def test_only_the_assumptions_of_the_compared_tables_are_listed():
    keys = {3: [p["key"] for p in protocol_lines(load_paper("youn_hong_2024"), {}, [], [3])],
            1: [p["key"] for p in protocol_lines(load_paper("youn_hong_2024"), {}, [], [1, 3])]}
    assert "momentum" not in keys[3] and "momentum" in keys[1] and "epochs" in keys[3]
    overridden = protocol_lines(load_paper("youn_hong_2024"), {"momentum": 0.9}, [], [3])
    assert any(p["key"] == "momentum" and "set by the study" in p["reason"] for p in overridden)


def test_compare_reuses_the_runs_of_hpo_train_json_instead_of_training_again(tmp_path, monkeypatch, tiny_mnist,
                                                                             capsys):
    smoke_study(tmp_path, monkeypatch)
    assert main(["export", "t", "--smoke"]) == 0
    best = "runs/t-smoke/best.yaml"
    limits = ["--epochs", "1", "--train-limit", "3000", "--eval-limit", "1000"]  # what compare --smoke uses
    assert main(["train", best, "--seeds", "2", *limits, "--json", "train.json"]) == 0
    trained = json.loads((tmp_path / "train.json").read_text())
    lines = capsys.readouterr().out.splitlines()
    described = next(line for line in lines if line.startswith(best)).split(": ", 1)[1]
    runs = [line for line in lines if re.search(r" seed \d+: ", line)]
    assert len(runs) == 2
    for line in runs:  # a short label cuts between words, never inside a value
        label = line.split(" seed ")[0]
        head = label.removesuffix(" …")
        assert label == described or (label.endswith(" …") and described.startswith(head + " ")), (label, described)
    assert main(["compare", "t", "--smoke", "--reuse", "train.json"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "runs" / "t-smoke" / "compare.json").read_text())
    opt = next(e for e in result["entries"] if e["kind"] == "optimum")
    assert opt["runs"] == trained["runs"] and "not trained again" in out
    assert "automated optimum (trial" not in " ".join(line for line in out.splitlines() if " seed " in line)

    assert main(["train", best, "--seeds", "1", *limits, "--json", "one.json"]) == 0
    capsys.readouterr()
    assert main(["compare", "t", "--smoke", "--reuse", "one.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--reuse: one.json differs from this comparison in its seeds: [0], here [0, 1]" in err, err


def test_independent_searches_get_their_own_study_and_seed_and_compare_gives_the_optimum_over_them(
        tmp_path, monkeypatch, tiny_mnist, capsys):
    """`hpo study NAME --search K` is the study's K-th independent search (NAME-searchK, seed + K - 1), and
    `hpo compare NAME --searches N` re-trains every search's optimum on the same seeds and gives the optimum
    as mean ± std over searches as well as over seeds; a search that has not run is one line naming the command."""
    first = smoke_study(tmp_path, monkeypatch)
    path = str(tmp_path / "t.yaml")
    assert main(["study", path, "--smoke", "--search", "2"]) == 0
    second = optuna.load_study(study_name="t-search2-smoke", storage=os.environ["HPO_STORAGE"])
    assert study_attrs(second)["seed"] == study_attrs(first)["seed"] + 1
    assert {t.user_attrs["config"]["seed"] for t in second.trials} == {study_attrs(first)["seed"] + 1}
    assert len(first.trials) == 4  # search 2 never touched search 1's trials
    assert main(["study", path, "--smoke", "--search", "0"]) == 2
    assert "--search: must be a positive number" in capsys.readouterr().err

    assert main(["compare", "t", "--smoke", "--searches", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "search 3 of 't' has not run" in err and "--search 3 --smoke" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs" / "t-smoke" / "compare.json").exists()

    assert main(["compare", "t", "--smoke", "--searches", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "runs" / "t-smoke" / "compare.json").read_text())
    rows, over = result["searches"]["rows"], result["searches"]["over"]
    opt = next(e for e in result["entries"] if e["kind"] == "optimum")
    best2 = max((t for t in second.trials if t.values), key=lambda t: t.values[0])
    assert [r["study"] for r in rows] == ["t-smoke", "t-search2-smoke"] and rows[1]["trial"] == best2.number
    assert rows[0]["stats"] == opt["stats"] and [r["seed"] for r in rows[1]["runs"]] == result["seeds"]
    means = [r["stats"]["mean"] for r in rows]
    assert over["n"] == 2 and over["mean"] == pytest.approx(sum(means) / 2)
    assert over["min"] == min(means) and over["max"] == max(means)
    assert "over 2 independent searches" in out and any("Over 2 independent searches" in f for f in result["findings"])
    report = (tmp_path / "runs" / "t-smoke" / "report.md").read_text()
    assert "### The independent searches" in report and "t-search2-smoke" in report

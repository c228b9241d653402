"""`hpo bench`: the quick run writes its table; the measuring parts measure what they say. No speed is asserted."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from hpo.bench import memory
from hpo.bench import search as search_bench
from hpo.bench.load import SECTION as LOAD_SECTION
from hpo.bench.parallel import TimedPruner, TimedSampler
from hpo.bench.quality import bench_quality, markdown_quality, picture, picture_variants, study_copy, summary
from hpo.bench.run import kept_separately
from hpo.bench.search import expected_first_hit, median_bound
from hpo.bench.throughput import AUGMENT, HOG, markdown_throughput, matmul_epoch
from hpo.bench.versus import bench_versus, best_at, first_above, markdown_versus
from hpo.cli import main
from hpo.errors import HpoError
from hpo.search.studyfile import load_study
from hpo.stats import pm_of


@pytest.mark.parametrize("costs, hits, expected", [
    ([5, 5, 5], [False, True, False], 5 + 10 / 2),  # each miss precedes the hit half the time
    ([1, 2, 3, 4], [True, True, True, True], 2.5),  # every point hits: the mean cost of one point
    ([10, 1], [False, True], 1 + 10 / 2),
    ([3, 3], [False, False], math.inf),  # never reached
])
def test_expected_first_hit_of_a_randomly_ordered_grid(costs, hits, expected):
    assert expected_first_hit(costs, hits) == pytest.approx(expected)


def test_expected_first_hit_matches_enumerating_every_order():
    import itertools

    costs, hits = [2, 7, 1, 4], [False, True, False, True]
    paid = []
    for order in itertools.permutations(range(4)):
        total = 0
        for i in order:
            total += costs[i]
            if hits[i]:
                break
        paid.append(total)
    assert expected_first_hit(costs, hits) == pytest.approx(sum(paid) / len(paid))


def test_timed_sampler_and_pruner_change_nothing_but_the_clock():
    def run(wrap: bool):
        sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=3)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
        if wrap:
            sampler, pruner = TimedSampler(sampler), TimedPruner(pruner)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        asked = []
        for _ in range(8):
            t = study.ask()
            x, k = t.suggest_float("x", -3, 3), t.suggest_categorical("k", ["a", "b"])
            t.report(-x * x, 1)
            pruned = t.should_prune()
            study.tell(t, -(x - 1) ** 2 + (k == "b"))
            asked.append(pruned)
        return [t.params for t in study.trials], asked, sampler, pruner

    plain, plain_pruned, _, _ = run(False)
    t0 = time.perf_counter()
    timed, timed_pruned, sampler, pruner = run(True)
    wall = time.perf_counter() - t0
    assert (timed, timed_pruned) == (plain, plain_pruned)
    # Each clock counts its own calls, and only those: a timer that counts nothing, or the whole run, fails here.
    assert 0 < sampler.seconds < wall and 0 < pruner.seconds < wall
    assert sampler.seconds + pruner.seconds < wall


def test_matmul_lower_bound_counts_every_sample():
    assert matmul_epoch(100, 64) > 0  # two steps: 128 samples in a positive time


def test_quick_bench_writes_its_table(tmp_path, fmnist_available, capsys):
    """Every item but versus and quality, which have their own tests below (their rows: markdown_versus and
    markdown_quality)."""
    out = tmp_path / "bench.md"
    assert main(["bench", "--quick", "--only", "throughput,search,scaling,overhead,packs", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Written by `hpo bench --quick --only throughput,search,scaling,overhead,packs`" in text
    assert "torch" in text and "cores" in text
    for heading in ("## 1. Objective throughput", "## 2. Search efficiency on relu3_adam", "## 3. Parallel scaling",
                    "## 4. Overhead", "## 5. Trial packs"):
        assert heading in text
    assert "## 6." not in text
    summary = text.split("| item | measure | target | result | met |")[1].split("\n\n")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    # every target of the issue has its row, met or not: 2 batch sizes x 2 for throughput, 2, 1, 1; packs (at the
    # quick scale's batch sizes 64 and 256): pack 8 at 64 (its targets stop at 128), auto at both, the bmm bound
    assert [r.split(" | ")[0][2] for r in rows] == ["1"] * 4 + ["2"] * 2 + ["3", "4"] + ["5"] * 4
    assert all(r.endswith(("| **yes** |", "| no |")) for r in rows)
    assert "nan" not in text
    assert f"wrote {out}" in capsys.readouterr().out


def test_bench_only_keeps_the_sections_measured_separately_that_it_does_not_measure(tmp_path, fmnist_available):
    out = tmp_path / "BENCHMARKS.md"
    separate = "## 7. Search quality (measured separately, day 1)\n\nthree searches, by hand\n"
    out.write_text(f"# Benchmarks\n\n## 2. Search efficiency\n\nold\n\n{separate}\n{LOAD_SECTION}\n"
                   "## Load test: many workers\n\n| t |\n")
    assert kept_separately(out, ["search"]) == "\n" + separate
    assert kept_separately(out, ["quality"]) == ""
    assert main(["bench", "--quick", "--only", "search", "--out", str(out)]) == 0
    text = out.read_text()
    assert "old" not in text and text.count("## 2. Search efficiency") == 1
    assert text.index("## 2. Search") < text.index(separate) < text.index(LOAD_SECTION) < text.index("| t |")
    assert "except in the sections headed \"measured separately\"" in text


def test_unknown_item_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["bench", "--quick", "--only", "throughput,speed", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "speed" in err[0] and "throughput" in err[0]
    assert not out.exists()


def _seed(epochs: float, spent: float) -> dict:
    return {"random": {"epochs": epochs, "total_epochs": spent}}


@pytest.mark.parametrize("runs, expected", [
    ([(10, 10), (20, 20), (30, 30)], (20, True)),
    ([(10, 10), (20, 20), (math.inf, 300)], (20, True)),  # the unreached seed lies above the median anyway
    ([(10, 10), (math.inf, 15), (math.inf, 300)], (15, False)),  # the median is what one seed spent: a bound
    ([(math.inf, 50), (math.inf, 60), (math.inf, 70)], (60, False)),
])
def test_median_over_seeds_is_a_lower_bound_when_a_search_did_not_reach(runs, expected):
    seeds = [_seed(e, s) for e, s in runs]
    assert median_bound(seeds, "random", "epochs") == expected


def test_the_throughput_section_adds_augmentation_s_cost_and_keeps_its_table():
    row = {"batch": 64, "train": [100.0, 110.0], "train_augment": [80.0, 88.0], "autograd": [50.0, 50.0],
           "dataloader": [20.0, 20.0], "matmul": [300.0, 300.0], "fwd_bwd": [90.0, 90.0]}
    lines, targets = markdown_throughput({"n": 1000, "rows": [row]})
    text = "\n".join(lines)
    assert f"`augment: {AUGMENT['augment']}`" in text
    assert [line for line in lines if line.endswith("| 0.80x |")] == [
        f"| 64 | {pm_of(row['train'])} | {pm_of(row['train_augment'])} | 0.80x |"]
    assert len(targets) == 2  # augmentation adds no target, only its measured cost
    old = {k: v for k, v in row.items() if k != "train_augment"}  # results from before it was measured
    assert "augmentation" not in "\n".join(markdown_throughput({"n": 1000, "rows": [old]})[0]).lower()


def test_versus_reads_the_best_so_far_and_the_first_time_above():
    done = [(3.0, 0.80), (7.0, 0.78), (12.0, 0.85), (30.0, 0.84)]
    assert [best_at(done, t) for t in (2, 3, 10, 12, 60)] == [None, 0.80, 0.80, 0.85, 0.85]
    assert (first_above(done, 0.79), first_above(done, 0.80), first_above(done, 0.9)) == (3.0, 12.0, None)


def test_versus_at_a_tiny_scale_runs_the_script_and_both_hpo_runs(tmp_path, fmnist_available):
    """The script a user would write, hpo as shipped and hpo --pack auto, 12 s each on the smoke subset (on a
    busy machine hpo's set-up may take the whole budget: a trial completed after it is counted, not credited)."""
    r = bench_versus(0.2, lambda _: None, tmp_path, smoke=True, threads=1)
    assert [row["runner"] for row in r["rows"]] == ["script (pytorch_simple.py style)", "hpo study relu3_adam",
                                                    "hpo study relu3_adam --pack auto"]
    assert r["checkpoints"] == pytest.approx([1.2, 2.4, 6.0, 12.0])
    assert 0.3 < r["baseline"] < 1  # the paper's configurations, trained one epoch on the subset
    for row in r["rows"]:
        done = row["done"]
        assert row["trials"] == len(done) >= 1 and all(0.1 < v <= 1 for _, v in done)
        assert [t for t, _ in done] == sorted(t for t, _ in done)
        for c, b in zip(r["checkpoints"], row["best"]):  # the best of what had completed by then, or none
            by_then = [v for t, v in done if t <= c]
            assert b == (max(by_then) if by_then else None)
        above = [t for t, v in done if v > r["baseline"]]
        assert row["beats_baseline_s"] == (above[0] if above else None)
    assert r["script_best"] == r["rows"][0]["best"][-1]
    lines, targets = markdown_versus(r)
    assert len(targets) == 2 and lines[0].startswith("## 6.") and len(lines) == 6 + 3


def test_quality_at_smoke_scale_searches_retrains_and_holds_the_optimum_against_the_hand_configuration(tmp_path,
                                                                                                        fmnist_available):
    results = tmp_path / "q.json"
    r = bench_quality(lambda _: None, tmp_path, searches=1, seeds=2, smoke=True, threads=1, results=results,
                      variants=("shipped", "epoch_steps"))
    assert [(x["variant"], x["seed"]) for x in r["searches"]] == [("shipped", 0), ("epoch_steps", 0)]
    assert r["hand"]["n"] == 2 and 0.1 < r["hand"]["mean"] < 1
    for x in r["searches"]:
        assert x["test"]["n"] == 2 and 0.1 < x["test"]["mean"] < 1
        assert x["best_config"]["epochs"] == 1  # smoke scale
        d = x["diagnosis"]
        assert d["trials"] >= 1 and sum(d["schedules"].values()) == d["trials"]  # the paper's baselines not counted
        assert d["pruned"] <= d["trials"] and d["long_pruned"] <= d["long_started"] <= d["trials"]
        # relu3_adam confirms its top trials (2 at smoke scale): its best single run is re-trained beside its optimum
        assert x["single_test"]["n"] == 2 and x["confirm_seconds"] >= 0
        assert (x["single_test"] == x["test"]) == (x["single_number"] == x["best_number"])
    assert sum(row[4] for row in r["searches"][0]["trials"]) == 2 and len(r["searches"][0]["trials"]) == 6
    assert json.loads(results.read_text())["searches"] == r["searches"]  # kept after every search
    again = bench_quality(lambda line: pytest.fail(line), tmp_path, searches=1, seeds=2, smoke=True, threads=1,
                          results=results, variants=("shipped", "epoch_steps"))  # nothing left to run
    assert again["searches"] == r["searches"]
    for x in r["searches"]:  # one row per trial, the paper's rows marked; the picture draws them
        assert [row[0] for row in x["trials"]] == list(range(len(x["trials"])))
        assert sum(row[4] for row in x["trials"]) == 2 and all(row[2] <= row[1] for row in x["trials"])
    assert picture(r, tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert picture_variants(r, tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    lines, targets = markdown_quality(r)
    assert lines[0].startswith("## 7.") and len(targets) == 2
    gap = 100 * (r["searches"][0]["test"]["mean"] - r["hand"]["mean"])
    assert targets[0][3] == f"{gap:+.2f} points" and targets[0][4] == (gap >= 0)


def test_a_quality_variant_s_run_options_stay_out_of_its_study_file(tmp_path):
    path = study_copy("relu3_adam", tmp_path, 4, "trials100_workers2")
    assert path.parent.name == "trials100_workers2-seed4"
    study = load_study(str(path))  # a valid study file: `workers` is an option of the run, not a top-level key
    assert study.n_trials == 100 and study.seed == 4
    assert study.confirm.top == 6  # as shipped
    assert load_study(str(study_copy("relu3_adam", tmp_path, 0, "no_confirm"))).confirm.top == 0  # the key left out


def test_a_quality_variant_may_change_the_space_and_add_to_the_budget(tmp_path):
    """batch_log rewrites one key of the study's space in a copy beside the study; pack_auto adds `pack` to the
    study's budget rather than replacing it (its workers and caps stay)."""
    study = load_study(str(study_copy("relu3_adam", tmp_path, 1, "batch_log")))
    batch = study.space.params["batch_size"]
    assert (batch.kind, batch.low, batch.high, batch.log) == ("int", 32, 512, True)
    assert study.space.params["lr"].high == 1e-1  # the rest of the space as shipped
    packed = load_study(str(study_copy("relu3_adam", tmp_path, 1, "pack_auto")))
    assert packed.budget.pack == "auto" and packed.budget.workers == 2 and packed.budget.max_params == 60000


def test_quality_refuses_an_unknown_variant_in_one_line(tmp_path):
    with pytest.raises(HpoError, match="^--variants: unknown variant 'fast'; choose from shipped, "):
        bench_quality(lambda _: None, tmp_path, variants=("fast",))


def test_the_memory_verdict_starts_after_warm_up_and_the_picture_is_drawn(tmp_path):
    """hpo.bench.memory: growth is measured from the first sample at or past the warm-up, and the picture of
    RSS against trials leaves out start-up's samples (no finished trial yet)."""
    samples = [(0.0, 0, 10.0), (2.0, 50, 400.0), (4.0, 200, 500.0), (6.0, 1000, 520.0), (8.0, 5000, 560.0)]
    start, end, growth = memory.verdict(samples, warmup=200)
    assert (start, end) == (500.0, 560.0) and growth == pytest.approx(12.0)
    assert memory.verdict(samples, warmup=10_000)[0] == 10.0  # no sample past warm-up: from the first
    path = memory.picture(samples, 200, tmp_path / "m.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000


def test_the_busy_core_s_process_ends_when_a_killed_bench_leaves_it():
    # a parent that starts the spinning process as bench_wait_policy does, prints its pid and is then SIGKILLed
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        f"hog = subprocess.Popen([sys.executable, '-c', {HOG!r}], "
        "env={**os.environ, 'HPO_BENCH_PARENT': str(os.getpid())})\n"
        "print(hog.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    hog = int(parent.stdout.readline())
    time.sleep(0.5)
    os.kill(hog, 0)  # it spins while its parent lives
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(hog, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{hog}/stat") as f:  # reparented and exited, not yet reaped: a zombie has ended too
                if f.read().split(") ")[1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    os.kill(hog, signal.SIGKILL)
    raise AssertionError("the busy core's process outlived its killed parent by 10 s")


@pytest.mark.parametrize("method, steps", [("tpe_hyperband", "epoch"), ("tpe", "percent"), ("random", "percent")])
def test_item_2_runs_hyperband_on_epoch_steps_though_relu3_adam_ships_percent_steps(monkeypatch, method, steps):
    seen = []

    class Reaches:  # the objective, stubbed: what step it was given, and one trial that reaches the target
        def __init__(self, cfg, splits, space):
            seen.append(cfg.pruner_step)

        def __call__(self, trial):
            trial.set_user_attr("epochs_trained", 1)
            return 1.0

    monkeypatch.setattr(search_bench, "Objective", Reaches)
    cfg = search_bench.load_study(search_bench.STUDY)
    assert cfg.pruner_step == "percent"  # what relu3_adam ships, and what Hyperband must not see
    got = search_bench.run_search(method, cfg, cfg.space, None, seed=0, target=0.5, max_trials=3)
    assert seen == [steps] and got["trials"] == 1 and got["epochs"] == 1


def test_quality_shows_the_best_single_run_where_confirmation_chose_another(tmp_path):
    def stats(mean):
        return {"n": 3, "mean": mean, "std": 0.002, "min": mean - 0.002, "max": mean + 0.002, "diverged": 0}

    diag = {"epochs_trained": 900, "long_started": 3, "long_pruned": 1, "long_finished": 2}
    r = {"study": "relu3_adam", "smoke": False, "seeds": [0, 1, 2], "hand_config": {"epochs": 40}, "hand": stats(0.892),
         "searches": [{"variant": "shipped", "seed": 0, "seconds": 400.0, "best_val": 0.8901, "best_number": 73,
                       "test": stats(0.889), "single_number": 65, "single_test": stats(0.884), "diagnosis": diag},
                      {"variant": "shipped", "seed": 1, "seconds": 420.0, "best_val": 0.8951, "best_number": 50,
                       "test": stats(0.8952), "single_number": 50, "single_test": stats(0.8952), "diagnosis": diag}]}
    lines = summary(r)
    assert "| trial 65: 88.40 ± 0.20% |" in lines[3] and "| same trial |" in lines[4]
    assert "| 89.21 ± 0.44% | 88.96 ± 0.79% over 2 |" in lines[5]  # the best single runs' mean, beside the optima's
    assert picture_variants(r, tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"

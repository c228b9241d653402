"""`hpo bench`: how fast the toolkit is, measured side by side in one run, written to BENCHMARKS.md.

  1 throughput   samples/s of train() for 784-60-40-10 ReLU + Adam at batch 64 and 256, against the per-sample
                 Dataset + DataLoader pipeline of the PyTorch quickstart and against the bare matrix products
  2 search       epochs (and wall time) until random search, TPE and TPE + Hyperband first match the best of
                 the paper's Table 3 configurations on relu3_adam, against a hand-made grid; median over seeds
  3 scaling      trials per hour of `hpo study --workers N`: 1 worker x 2 threads against 2 workers x 1 thread
  4 overhead     the share of a 300-trial TPE study's wall time spent outside train() on SQLite storage
  5 packs        trials per hour of `hpo study --pack K` for K = 1, 4, 8, and model-samples/s of a stacked run
                 against the bare batched matrix products of the same shapes
  6 versus       hpo against the script a user would write instead (hpo/bench/user_script.py), same wall budget
  7 quality      the best test accuracy relu3_adam's search reaches as shipped, over 3 searches, each optimum
                 re-trained over seeds, against a strong hand configuration of the same space re-trained beside it

Every timing excludes warm-up and reports mean ± std over repeats; nothing here is asserted by tests.
Items 2-4 run at a reduced scale (training subsets, short epoch ranges) stated in the output. This module
runs the items and writes the file; item 1 is throughput.py, item 2 search.py, items 3-4 parallel.py,
item 5 pack_speed.py, item 6 versus.py, item 7 quality.py.
"""


from __future__ import annotations

import datetime
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch

from hpo import data as data_mod
from hpo.bench import load, pack_speed, parallel, quality, search, throughput, versus
from hpo.errors import HpoError
from hpo.provenance import ROOT, versions
from hpo.training.runtime import resolve_device

ITEMS = ("throughput", "search", "scaling", "overhead", "packs", "versus", "quality")



@dataclass(frozen=True)
class Scale:
    """How big each item runs. FULL takes about an hour and a half on 2 cores (item 7's three searches and their
    re-training about half of it); QUICK is for tests and a first look."""

    name: str
    device: str = "cpu"  # where the trials train (hpo bench --device)
    threads: int = 2  # torch threads for items 1, 2 and 4
    cores: int = 2  # item 3 splits these between workers: 1 x cores, then 2 x cores // 2
    # 1 throughput: samples per timed run, timed repeats (after one warm-up run each)
    tp_samples: int = 20000
    tp_repeats: int = 5
    tp_wait_policy: bool = True  # also time train() in fresh processes under each of WAIT_POLICIES
    # 2 search: training subset, validation subset, epoch range of the searched space, seeds, trial cap
    search_train: int = 10000
    search_eval: int = 5000
    search_epochs: tuple[int, int] = (2, 10)
    search_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    search_max_trials: int = 60
    grid: tuple[tuple[str, tuple], ...] = (
        ("width_1", (16, 32, 64)), ("width_2", (16, 32, 64)), ("lr", (1e-4, 1e-3, 1e-2)),
        ("batch_size", (32, 128, 512)), ("epochs", (2, 5, 10)),
    )
    # 3 scaling: fixed trials (the same configurations in every run) on the study's full split, epochs, repeats
    sc_trials: int = 16
    sc_epochs: int = 3
    sc_repeats: int = 2
    # 4 overhead: trials in the study, the cheap trial's data and epochs
    oh_trials: int = 300
    oh_train: int = 2000
    oh_eval: int = 1000
    oh_epochs: int = 1
    # 5 packs: trials per batch size and pack size, their epochs, repeats, the batch sizes
    pk_trials: int = 16
    pk_epochs: int = 1
    pk_repeats: int = 2
    pk_batches: tuple[int, ...] = (32, 64, 128, 256)
    # 6 versus: each runner's wall budget (minutes); smoke: hpo's tiny data subset and one epoch for all three
    vs_minutes: float = 10.0
    vs_smoke: bool = False
    # 7 quality: searches of relu3_adam as shipped, seeds each optimum and the hand configuration are re-trained on
    q_searches: int = 3
    q_seeds: int = 3
    q_smoke: bool = False


FULL = Scale("full")
QUICK = Scale(  # one thread: quick numbers are for a first look, and one thread stays quick on a busy machine
    "quick", threads=1, tp_samples=2000, tp_repeats=2, tp_wait_policy=False,
    search_train=1000, search_eval=500, search_epochs=(1, 2), search_seeds=(0,), search_max_trials=6,
    grid=(("width_1", (16, 64)), ("width_2", (32,)), ("lr", (1e-3, 1e-2)), ("batch_size", (64, 256)),
          ("epochs", (1, 2))),
    sc_trials=4, sc_epochs=1, sc_repeats=1,  # the --smoke data subset
    oh_trials=12, oh_train=500, oh_eval=200, oh_epochs=1,
    pk_trials=4, pk_epochs=1, pk_repeats=1, pk_batches=(64, 256),
    vs_minutes=0.25, vs_smoke=True,
    q_searches=2, q_seeds=2, q_smoke=True,
)



# --- the machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine(threads: int) -> dict:
    v = versions()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__, "optuna": v.get("optuna"),
        "python": platform.python_version(), "threads": threads, "load_start": load_average(),
    }



# --- the report ---------------------------------------------------------------------------------


def markdown(results: dict, info: dict, scale: Scale, command: str, kept: bool = False) -> str:
    """The file's text for this run's items; `kept`: sections from earlier runs follow (kept_separately)."""
    writers = {"throughput": throughput.markdown_throughput, "search": search.markdown,
               "scaling": parallel.markdown_scaling, "overhead": parallel.markdown_overhead,
               "packs": pack_speed.markdown_packs, "versus": versus.markdown_versus,
               "quality": quality.markdown_quality}
    sections, targets = [], []
    for key in ITEMS:
        if key in results:
            lines, t = writers[key](results[key])
            sections.append("\n".join(lines))
            targets += t
    head = [
        "# Benchmarks",
        "",
        (f"Written by `{command}` on {info['date']} ({scale.name} scale, {info['minutes']:.1f} minutes in all); "
        + ("every number below comes from this one run, except in the sections headed \"measured separately\" "
           "and the load test's, which say when and how they were measured." if kept else
           "every number below comes from this one run.")),
        "",
        (f"Machine: {info['nproc']} cores ({info['cpu']}), torch {info['torch']}, optuna {info['optuna']}, "
        f"Python {info['python']}; training on {info['threads']} threads unless a row says otherwise. "
        f"Load average (1, 5, 15 min) {info['load_start']} at the start and {info['load_end']} at the end "
        "(a 1-minute figure well above 0 before the run means other programs were using the CPU)."),
        "",
        "| item | measure | target | result | met |",
        "|---|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} | {'**yes**' if e else 'no'} |" for a, b, c, d, e in targets],
    ]
    return "\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n"


SEPARATE = re.compile(r"^## (\d+)\. [^\n]*\(measured separately[^\n]*$", re.M)


def kept_separately(path: Path, items: list[str]) -> str:
    """The sections of `path` headed "## N. ... (measured separately ...)" whose item this run does not measure
    (a long item run on its own, e.g. `python -m hpo.bench.quality`), for `hpo bench --only` to keep."""
    text = path.read_text() if path.is_file() else ""
    kept = []
    for m in SEPARATE.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= len(ITEMS) and ITEMS[n - 1] in items:
            continue
        rest = text[m.start():]
        ends = [i for i in (rest.find("\n## ", 1), rest.find("\n" + load.SECTION)) if i > 0]
        kept.append(rest[:min(ends)] if ends else rest)
    return "".join("\n" + section.rstrip() + "\n" for section in kept)


def run_bench(quick: bool = False, out: str | None = None, only: list[str] | None = None,
              log: Callable[[str], None] = print, device: str | None = None, minutes: float | None = None) -> Path:
    """Run the items (all by default), write the markdown table, return its path. `device`: where the
    trials train (default cpu). `minutes`: item versus's wall budget per runner."""
    scale = replace(QUICK if quick else FULL, device=resolve_device(device))
    if minutes is not None:
        if minutes <= 0:
            raise HpoError(f"--minutes: must be a positive number, but got {minutes:g}")
        scale = replace(scale, vs_minutes=minutes)
    items = list(only or ITEMS)
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        raise HpoError(f"--only: unknown item {unknown[0]!r}; choose from {', '.join(ITEMS)}")
    path = Path(out) if out else (ROOT / "runs" / "bench-quick.md" if quick else ROOT / "BENCHMARKS.md")
    if path.is_dir():
        raise HpoError(f"--out: {path} is a folder; give a file name")
    data_mod.load("fashion_mnist")  # a missing data set fails here, before anything runs
    command = "hpo bench" + (" --quick" if quick else "") + (f" --only {','.join(items)}" if only else "")
    info = machine(scale.threads)
    log(f"{command}: {scale.name} scale, {info['nproc']} cores ({info['cpu']}), torch {info['torch']}, "
        f"load average {info['load_start']}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:  # the studies' SQLite files; runs/ is untouched
        runners = {
            "throughput": lambda: throughput.bench_throughput(scale, log),
            "search": lambda: search.bench_search(scale, log),
            "scaling": lambda: parallel.bench_scaling(scale, log, Path(tmp)),
            "overhead": lambda: parallel.bench_overhead(scale, log, Path(tmp)),
            "packs": lambda: pack_speed.bench_packs(scale, log, Path(tmp)),
            "versus": lambda: versus.bench_versus(scale.vs_minutes, log, Path(tmp), smoke=scale.vs_smoke,
                                                  threads=scale.threads),
            "quality": lambda: quality.bench_quality(log, Path(tmp), searches=scale.q_searches, seeds=scale.q_seeds,
                                                     smoke=scale.q_smoke, threads=scale.threads),
        }
        for item in ITEMS:
            if item in items:
                t_item = time.perf_counter()
                results[item] = runners[item]()
                results[item]["minutes"] = (time.perf_counter() - t_item) / 60
                log(f"  ({item}: {results[item]['minutes'] * 60:.0f} s)")
    info.update(load_end=load_average(), minutes=(time.perf_counter() - t0) / 60)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = kept_separately(path, items) + load.kept_section(path)  # `make load`'s table
        path.write_text(markdown(results, info, scale, command, kept=bool(kept)) + kept)
    except OSError as e:
        raise HpoError(f"--out: cannot write {path} ({e.strerror})") from None
    log(f"wrote {path}")
    return path


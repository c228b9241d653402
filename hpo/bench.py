"""`hpo bench`: how fast the toolkit is, measured side by side in one run, written to BENCHMARKS.md.

  1 throughput   samples/s of train() for 784-60-40-10 ReLU + Adam at batch 64 and 256, against the per-sample
                 Dataset + DataLoader pipeline of the PyTorch quickstart and against the bare matrix products
  2 search       epochs (and wall time) until random search, TPE and TPE + Hyperband first match the best of
                 the paper's Table 3 configurations on relu3_adam, against a hand-made grid; median over seeds
  3 scaling      trials per hour of `hpo study --workers N`: 1 worker x 2 threads against 2 workers x 1 thread
  4 overhead     the share of a 300-trial TPE study's wall time spent outside train() on SQLite storage

Every timing excludes warm-up and reports mean ± std over repeats; nothing here is asserted by tests.
Items 2-4 run at a reduced scale (training subsets, short epoch ranges) stated in the output. Item 1 lives
here; items 2 (bench_search.py) and 3-4 (bench_parallel.py) have their own modules.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from torch import nn

from hpo import data as data_mod
from hpo import fastmlp
from hpo.config import ROOT
from hpo.errors import HpoError
from hpo.study import versions
from hpo.train import TrainConfig, build_model, train

ITEMS = ("throughput", "search", "scaling", "overhead")
WIDTHS = (60, 40)  # the paper's best Table 3 model


@dataclass(frozen=True)
class Scale:
    """How big each item runs. FULL fits in well under an hour on 2 cores; QUICK is for tests and a first look."""

    name: str
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


FULL = Scale("full")
QUICK = Scale(  # one thread: quick numbers are for a first look, and one thread stays quick on a busy machine
    "quick", threads=1, tp_samples=2000, tp_repeats=2, tp_wait_policy=False,
    search_train=1000, search_eval=500, search_epochs=(1, 2), search_seeds=(0,), search_max_trials=6,
    grid=(("width_1", (16, 64)), ("width_2", (32,)), ("lr", (1e-3, 1e-2)), ("batch_size", (64, 256)),
          ("epochs", (1, 2))),
    sc_trials=4, sc_epochs=1, sc_repeats=1,  # the --smoke data subset
    oh_trials=12, oh_train=500, oh_eval=200, oh_epochs=1,
)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_ms(xs: list[float], digits: int = 0, scale: float = 1.0) -> str:
    m, s = mean_sd([x * scale for x in xs])
    return f"{m:,.{digits}f} ± {s:,.{digits}f}"


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


# --- 1 throughput -------------------------------------------------------------------------------


class PerSampleDataset(torch.utils.data.Dataset):
    """What the PyTorch Fashion-MNIST quickstart gives a user: one image per __getitem__, made a float tensor,
    scaled to [0, 1] and normalised there, every time it is fetched."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels = images_u8.numpy(), labels.numpy()
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).float().div(255.0).unsqueeze(0)  # ToTensor: (1, 28, 28)
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def dataloader_epoch(ds: PerSampleDataset, batch_size: int, seed: int = 0) -> float:
    """One epoch as the quickstart writes it; returns samples/s."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), build_model(TrainConfig(widths=WIDTHS, seed=seed)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    for batch, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if batch % 100 == 0:
            loss.item()  # the quickstart prints the loss every 100 batches
    return len(ds) / (time.perf_counter() - t0)


def matmul_epoch(n: int, batch_size: int, widths=WIDTHS, n_in: int = 784, n_out: int = 10) -> float:
    """The lower bound: the forward and backward matrix products of the MLP (and its ReLU masks) on
    preallocated tensors, no biases, loss, optimizer, autograd or data movement; returns samples/s."""
    g = torch.Generator().manual_seed(0)
    dims = [n_in, *widths, n_out]
    ws = [torch.randn(a, b, generator=g) * 0.05 for a, b in itertools.pairwise(dims)]
    gws = [torch.empty_like(w) for w in ws]
    x = torch.randn(batch_size, n_in, generator=g)
    hs = [torch.empty(batch_size, d) for d in dims[1:]]
    ghs = [torch.empty(batch_size, d) for d in dims[1:]]
    ghs[-1].normal_(generator=g)
    steps = math.ceil(n / batch_size)
    t0 = time.perf_counter()
    for _ in range(steps):
        inp = x
        for i, w in enumerate(ws):  # forward
            torch.mm(inp, w, out=hs[i])
            if i < len(ws) - 1:
                hs[i].relu_()
            inp = hs[i]
        for i in range(len(ws) - 1, -1, -1):  # backward: weight gradient, then the input gradient
            torch.mm(x.t() if i == 0 else hs[i - 1].t(), ghs[i], out=gws[i])
            if i > 0:
                torch.mm(ghs[i], ws[i].t(), out=ghs[i - 1])
                ghs[i - 1].mul_(hs[i - 1] > 0)
    return steps * batch_size / (time.perf_counter() - t0)


def fwd_bwd_epoch(x: torch.Tensor, y: torch.Tensor, n: int, batch_size: int) -> float:
    """The model's forward and backward through autograd on one fixed batch: no optimizer, no data movement."""
    model = build_model(TrainConfig(widths=WIDTHS))
    xb, yb = x[:batch_size].clone(), y[:batch_size].clone()
    loss_fn = nn.CrossEntropyLoss()
    steps = math.ceil(n / batch_size)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
    return steps * batch_size / (time.perf_counter() - t0)


def bench_throughput(scale: Scale, log: Callable[[str], None]) -> dict:
    torch.set_num_threads(scale.threads)
    ds = data_mod.load("fashion_mnist")
    splits = data_mod.make_splits(ds, val_size=10000, seed=0, train_limit=scale.tp_samples, eval_limit=1000)
    # The same training images, still uint8, for the per-sample pipeline (same split, same normalisation).
    perm = torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(0))[10000:10000 + scale.tp_samples]
    raw = PerSampleDataset(ds.train_x[perm], ds.train_y[perm], splits.meta["mean"], splits.meta["std"])
    n = len(splits.train_x)
    out = {"n": n, "rows": [], "omp_env": " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                                                  if k in os.environ)}
    for bs in (64, 256):
        cfg = TrainConfig(widths=WIDTHS, optimizer="adam", lr=1e-3, batch_size=bs, epochs=1)
        runs: dict[str, Callable[[], float]] = {
            "train": lambda cfg=cfg: train(cfg, splits, threads=scale.threads).samples_per_sec,
            "autograd": lambda cfg=cfg: train_autograd(cfg, splits, scale.threads),
            "dataloader": lambda bs=bs: dataloader_epoch(raw, bs),
            "matmul": lambda bs=bs: matmul_epoch(n, bs),
            "fwd_bwd": lambda bs=bs: fwd_bwd_epoch(splits.train_x, splits.train_y, n, bs),
        }
        for fn in runs.values():  # warm-up, not timed
            fn()
        got: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(scale.tp_repeats):  # interleaved, so that a noisy moment hits every contender
            for k, fn in runs.items():
                got[k].append(fn())
        row = {"batch": bs, **got}
        out["rows"].append(row)
        m = {k: statistics.fmean(v) for k, v in got.items()}
        log(f"throughput batch {bs}: train {m['train']:,.0f}/s (autograd path {m['autograd']:,.0f}/s), "
            f"dataloader {m['dataloader']:,.0f}/s, matmuls {m['matmul']:,.0f}/s, fwd+bwd {m['fwd_bwd']:,.0f}/s")
    if scale.tp_wait_policy:
        out["wait_policy"] = bench_wait_policy(scale, log)
    return out


def train_autograd(cfg: TrainConfig, splits, threads: int) -> float:
    """train() with the hand-written ReLU MLP step switched off: what autograd alone gives."""
    fastmlp.ENABLED = False
    try:
        return train(cfg, splits, threads=threads).samples_per_sec
    finally:
        fastmlp.ENABLED = True


def child_throughput(n: int, repeats: int, threads: int) -> dict:
    """In a fresh process (see bench_wait_policy): train() samples/s at batch 64 and 256, after a warm-up."""
    torch.set_num_threads(threads)
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0, train_limit=n,
                                  eval_limit=1000)
    out = {}
    for bs in (64, 256):
        cfg = TrainConfig(widths=WIDTHS, optimizer="adam", lr=1e-3, batch_size=bs, epochs=1)
        train(cfg, splits, threads=threads)
        out[str(bs)] = [train(cfg, splits, threads=threads).samples_per_sec for _ in range(repeats)]  # JSON keys
    return out


WAIT_POLICIES = {  # environment for the child process; libgomp reads it once, when torch loads it
    "unset": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
}


def bench_wait_policy(scale: Scale, log: Callable[[str], None]) -> dict:
    """train() in fresh processes under each of WAIT_POLICIES: libgomp's threads spin while they wait for
    work (by default up to 300,000 spins), sleep at once (PASSIVE) or spin briefly; on the CPU as found and
    with one core kept busy by another process, as on a shared machine."""
    code = ("import json, sys; from hpo.bench import child_throughput; "
            f"print(json.dumps(child_throughput({scale.tp_samples}, {scale.tp_repeats}, {scale.threads})))")
    got = {}
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for policy, extra in WAIT_POLICIES.items():
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                run = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,
                                     text=True, timeout=1800, check=True)
                got[f"{'one core busy' if busy else 'as found'}|{policy}"] = json.loads(run.stdout.strip().splitlines()[-1])
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    for k, v in got.items():
        log(f"  {k.replace('|', ', ')}: " + ", ".join(f"batch {bs} {statistics.fmean(x):,.0f}/s" for bs, x in v.items()))
    return got


def markdown_throughput(r: dict) -> tuple[list[str], list[tuple]]:
    lines = [
        "## 1. Objective throughput",
        "",
        (f"Training samples per second, 784-60-40-10 ReLU MLP with Adam (lr 1e-3), one epoch of {r['n']:,} "
        "Fashion-MNIST training images per timed run; mean ± std over the repeats after a warm-up run, contenders "
        "interleaved. `hpo train()` is the project's loop (data as one normalised tensor, batches are slices of "
        "a permutation). (a) is the PyTorch quickstart's pipeline: a map-style Dataset whose `__getitem__` turns "
        "one uint8 image into a normalised float tensor, a `DataLoader(shuffle=True)`, the same model and "
        "`torch.optim.Adam` with its defaults. (b) is the lower bound: the MLP's forward and backward matrix "
        "products alone (three forward, five backward `torch.mm` into preallocated tensors, plus the ReLU masks; "
        "no biases, loss, optimizer, autograd or batch gathering). For reference, the model's forward+backward "
        "through autograd on one fixed batch, without optimizer or data movement, and train() with its "
        "hand-written ReLU MLP step (hpo/fastmlp.py) switched off, i.e. through autograd."),
        "",
        ("| batch | hpo train() | (a) per-sample Dataset + DataLoader | (b) matmuls alone | train / (a) "
         "| (b) / train | train(), autograd path | model fwd+bwd, no optimizer |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for row in r["rows"]:
        m = {k: statistics.fmean(row[k]) for k in ("train", "dataloader", "matmul", "fwd_bwd")}
        vs_a, vs_b = m["train"] / m["dataloader"], m["matmul"] / m["train"]
        lines.append(f"| {row['batch']} | {fmt_ms(row['train'])} | {fmt_ms(row['dataloader'])} | "
                     f"{fmt_ms(row['matmul'])} | {vs_a:.1f}x | {vs_b:.2f}x | {fmt_ms(row['autograd'])} | "
                     f"{fmt_ms(row['fwd_bwd'])} |")
        bound = 2 if row["batch"] >= 256 else 3
        targets.append((f"1 throughput, batch {row['batch']}", "train() vs (a) per-sample DataLoader", "≥ 5x",
                        f"{vs_a:.1f}x", vs_a >= 5))
        targets.append((f"1 throughput, batch {row['batch']}", "train() within a factor of (b) matmuls alone",
                        f"≤ {bound}x", f"{vs_b:.2f}x", vs_b <= bound))
    if "wait_policy" in r:
        wp = r["wait_policy"]
        lines += [
            "",
            ("OpenMP's wait policy: train() samples per second in fresh processes on the same threads. torch's "
             "libgomp lets idle threads spin for a while before they sleep (environment unset), sleep at once "
             "(OMP_WAIT_POLICY=PASSIVE) or spin briefly (GOMP_SPINCOUNT=10000); on the CPU as found, and with "
             "another process keeping one core busy (a shared machine, or more threads than free cores). "
             "`hpo` leaves the policy to the environment; the main table above ran under this process's: "
             f"{r.get('omp_env') or 'unset'}."),
            "",
            "| CPU | environment | batch 64 | batch 256 |",
            "|---|---|---:|---:|",
        ]
        for key, v in wp.items():
            cpu, policy = key.split("|")
            lines.append(f"| {cpu} | {policy} | {fmt_ms(v['64'])} | {fmt_ms(v['256'])} |")
    return lines, targets


# --- the report ---------------------------------------------------------------------------------


def markdown(results: dict, info: dict, scale: Scale, command: str) -> str:
    from hpo import bench_parallel, bench_search

    writers = {"throughput": markdown_throughput, "search": bench_search.markdown,
               "scaling": bench_parallel.markdown_scaling, "overhead": bench_parallel.markdown_overhead}
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
        "every number below comes from this one run."),
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


def run_bench(quick: bool = False, out: str | None = None, only: list[str] | None = None,
              log: Callable[[str], None] = print) -> Path:
    """Run the items (all by default), write the markdown table, return its path."""
    from hpo import bench_parallel, bench_search

    scale = QUICK if quick else FULL
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
            "throughput": lambda: bench_throughput(scale, log),
            "search": lambda: bench_search.bench_search(scale, log),
            "scaling": lambda: bench_parallel.bench_scaling(scale, log, Path(tmp)),
            "overhead": lambda: bench_parallel.bench_overhead(scale, log, Path(tmp)),
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
        path.write_text(markdown(results, info, scale, command))
    except OSError as e:
        raise HpoError(f"--out: cannot write {path} ({e.strerror})") from None
    log(f"wrote {path}")
    return path

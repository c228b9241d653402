"""Benchmark item 1: samples per second of train() against the per-sample DataLoader pipeline of the PyTorch
quickstart and against the bare matrix products, with the hand-written ReLU MLP step on and off, and with batch
augmentation (shift_flip) on."""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from hpo import data as data_mod
from hpo.stats import pm_of
from hpo.training.loop import train
from hpo.training.models import build_model
from hpo.training.spec import TrainConfig

WIDTHS = (60, 40)  # the paper's best Table 3 model
AUGMENT = {"augment": "shift_flip", "augment_shift": 2}  # what the augmentation column measures


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


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each contender once as a warm-up (not kept), then `repeats` rounds of all of them in turn, so that a
    noisy moment on the machine hits every contender alike."""
    for fn in runs.values():
        fn()
    got: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            got[k].append(fn())
    return got


def _sync(device: torch.device | str) -> None:
    """Wait for the device's queued kernels before reading the clock (CUDA runs them asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def dataloader_epoch(ds: PerSampleDataset, batch_size: int, seed: int = 0, device: str = "cpu") -> float:
    """One epoch as the quickstart writes it (each batch moved to `device`); returns samples/s."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), build_model(TrainConfig(widths=WIDTHS, seed=seed), (1, 28, 28), 10)).to(device)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    for batch, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if batch % 100 == 0:
            loss.item()  # the quickstart prints the loss every 100 batches
    _sync(device)
    return len(ds) / (time.perf_counter() - t0)


def matmul_epoch(n: int, batch_size: int, widths=WIDTHS, n_in: int = 784, n_out: int = 10,
                 device: str = "cpu") -> float:
    """The lower bound: the forward and backward matrix products of the MLP (and its ReLU masks) on
    preallocated tensors, no biases, loss, optimizer, autograd or data movement; returns samples/s."""
    g = torch.Generator().manual_seed(0)
    dims = [n_in, *widths, n_out]
    ws = [(torch.randn(a, b, generator=g, device="cpu") * 0.05).to(device) for a, b in itertools.pairwise(dims)]
    gws = [torch.empty_like(w) for w in ws]
    x = torch.randn(batch_size, n_in, generator=g, device="cpu").to(device)
    hs = [torch.empty(batch_size, d, device=device) for d in dims[1:]]
    ghs = [torch.empty(batch_size, d, device=device) for d in dims[1:]]
    ghs[-1].copy_(torch.randn(batch_size, n_out, generator=g, device="cpu"))
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
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def fwd_bwd_epoch(x: torch.Tensor, y: torch.Tensor, n: int, batch_size: int) -> float:
    """The model's forward and backward through autograd on one fixed batch: no optimizer, no data movement."""
    model = build_model(TrainConfig(widths=WIDTHS), (1, 28, 28), 10).to(x.device)
    xb, yb = x[:batch_size].clone(), y[:batch_size].clone()
    loss_fn = nn.CrossEntropyLoss()
    steps = math.ceil(n / batch_size)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
    _sync(x.device)
    return steps * batch_size / (time.perf_counter() - t0)


def bench_throughput(scale, log: Callable[[str], None]) -> dict:
    torch.set_num_threads(scale.threads)
    ds = data_mod.load("fashion_mnist")
    splits = data_mod.make_splits(ds, val_size=10000, seed=0, train_limit=scale.tp_samples,
                                  eval_limit=1000).to(scale.device)
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
            "train_augment": (lambda cfg=cfg:
                              train(cfg.replace(**AUGMENT), splits, threads=scale.threads).samples_per_sec),
            "autograd": lambda cfg=cfg: train_autograd(cfg, splits, scale.threads),
            "dataloader": lambda bs=bs: dataloader_epoch(raw, bs, device=scale.device),
            "matmul": lambda bs=bs: matmul_epoch(n, bs, device=scale.device),
            "fwd_bwd": lambda bs=bs: fwd_bwd_epoch(splits.train_x, splits.train_y, n, bs),
        }
        got = interleaved(runs, scale.tp_repeats)
        row = {"batch": bs, **got}
        out["rows"].append(row)
        m = {k: statistics.fmean(v) for k, v in got.items()}
        log(f"throughput batch {bs}: train {m['train']:,.0f}/s (autograd path {m['autograd']:,.0f}/s), "
            f"dataloader {m['dataloader']:,.0f}/s, matmuls {m['matmul']:,.0f}/s, fwd+bwd {m['fwd_bwd']:,.0f}/s, "
            f"train with {AUGMENT['augment']} {m['train_augment']:,.0f}/s")
    if scale.tp_wait_policy:
        out["wait_policy"] = bench_wait_policy(scale, log)
    return out


def train_autograd(cfg: TrainConfig, splits, threads: int) -> float:
    """train() with the hand-written ReLU MLP step switched off: what autograd alone gives."""
    return train(cfg, splits, threads=threads, fast=False).samples_per_sec


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


HOG = "import os\nparent = int(os.environ['HPO_BENCH_PARENT'])\nwhile os.getppid() == parent: pass"


def bench_wait_policy(scale, log: Callable[[str], None]) -> dict:
    """train() in fresh processes under each of WAIT_POLICIES: libgomp's threads spin while they wait for
    work (by default up to 300,000 spins), sleep at once (PASSIVE) or spin briefly; on the CPU as found and
    with one core kept busy by another process, as on a shared machine."""
    code = ("import json, sys; from hpo.bench.throughput import child_throughput; "
            f"print(json.dumps(child_throughput({scale.tp_samples}, {scale.tp_repeats}, {scale.threads})))")
    got = {}
    for busy in (False, True):
        # The busy core's process spins while its parent lives: a bench killed here (SIGTERM, SIGKILL, which skip the
        # `finally` below) leaves no spinning orphan to slow whatever runs next.
        hog = subprocess.Popen([sys.executable, "-c", HOG], env={**os.environ, "HPO_BENCH_PARENT": str(os.getpid())}) \
            if busy else None
        try:
            for policy, extra in WAIT_POLICIES.items():
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                run = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,
                                     text=True, timeout=1800, check=True)
                label = f"{'one core busy' if busy else 'as found'}|{policy}"
                got[label] = json.loads(run.stdout.strip().splitlines()[-1])
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    for k, v in got.items():
        log(f"  {k.replace('|', ', ')}: "
            + ", ".join(f"batch {bs} {statistics.fmean(x):,.0f}/s" for bs, x in v.items()))
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
        "hand-written ReLU MLP step (hpo/training/fastmlp.py) switched off, i.e. through autograd."),
        "",
        ("| batch | hpo train() | (a) per-sample Dataset + DataLoader | (b) matmuls alone | train / (a) "
         "| (b) / train | train(), autograd path | model fwd+bwd, no optimizer |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for row in r["rows"]:
        m = {k: statistics.fmean(row[k]) for k in ("train", "dataloader", "matmul", "fwd_bwd")}
        vs_a, vs_b = m["train"] / m["dataloader"], m["matmul"] / m["train"]
        lines.append(f"| {row['batch']} | {pm_of(row['train'])} | {pm_of(row['dataloader'])} | "
                     f"{pm_of(row['matmul'])} | {vs_a:.1f}x | {vs_b:.2f}x | {pm_of(row['autograd'])} | "
                     f"{pm_of(row['fwd_bwd'])} |")
        bound = 2 if row["batch"] >= 256 else 3
        targets.append((f"1 throughput, batch {row['batch']}", "train() vs (a) per-sample DataLoader", "≥ 5x",
                        f"{vs_a:.1f}x", vs_a >= 5))
        targets.append((f"1 throughput, batch {row['batch']}", "train() within a factor of (b) matmuls alone",
                        f"≤ {bound}x", f"{vs_b:.2f}x", vs_b <= bound))
    if all("train_augment" in row for row in r["rows"]):
        lines += [
            "",
            (f"Batch augmentation's cost: train() as above with `augment: {AUGMENT['augment']}` (random shifts of up "
             f"to {AUGMENT['augment_shift']} pixels each way and horizontal flips, one gather per batch from a "
             "precomputed index table, hpo/training/augment.py), in the same interleaved runs."),
            "",
            f"| batch | train(), augment none | train(), {AUGMENT['augment']} ±{AUGMENT['augment_shift']} "
            "| with / without |",
            "|---:|---:|---:|---:|",
        ]
        for row in r["rows"]:
            ratio = statistics.fmean(row["train_augment"]) / statistics.fmean(row["train"])
            lines.append(f"| {row['batch']} | {pm_of(row['train'])} | {pm_of(row['train_augment'])} | {ratio:.2f}x |")
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
            lines.append(f"| {cpu} | {policy} | {pm_of(v['64'])} | {pm_of(v['256'])} |")
    return lines, targets


"""Benchmark items 3 and 4: what the study machinery costs around training.

  3 scaling   trials per hour with 1 worker x 2 threads and 2 workers x 1 thread on one SQLite storage
  4 overhead  the share of a TPE study's wall time spent outside train() (sampler, pruner, storage), 300 trials
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import torch
import yaml
from rich.console import Console

from hpo import data as data_mod
from hpo.api import run_study
from hpo.provenance import ROOT
from hpo.search.files import read_yaml
from hpo.search.objective import Objective
from hpo.search.samplers import make_pruner, make_sampler
from hpo.search.storage import open_storage
from hpo.search.study import create_or_load, enqueue_baselines, prepare
from hpo.search.studyfile import load_study
from hpo.stats import pm_of
from hpo.training.loop import train
from hpo.training.spec import TrainConfig
from hpo.trials import COUNTED

STUDY = "relu3_adam"


def setup(scale, epochs: int, n_train: int, n_eval: int):
    """relu3_adam with its epochs fixed (so that trials are short and alike), no baselines, and a data subset."""
    cfg = load_study(STUDY)
    space = cfg.space.with_fixed(epochs=epochs)
    cfg = replace(cfg, space=space, baselines=(), budget=replace(cfg.budget, threads=scale.threads))
    splits = data_mod.make_splits(data_mod.load(cfg.dataset), val_size=cfg.val_size, seed=cfg.split_seed,
                                  train_limit=n_train, eval_limit=n_eval).to(scale.device)
    return cfg, space, splits


# --- 3 parallel scaling -------------------------------------------------------------------------


def fixed_configs(space, n: int, seed: int = 0) -> list[dict]:
    """n configurations drawn once at random, so that every scaling run trains exactly the same trials."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        space.suggest(t)
        out.append(dict(t.params))
        study.tell(t, 0.0)
    return out


def steady_rate(trials: list) -> float:
    """Trials per hour in the steady state: each worker's trials over the span from its first trial's start to
    its last one's end (process start-up and data loading excluded, and so is a worker's idle wait at the end
    of a finite run while another finishes its last trial), summed over the workers."""
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs.get("worker", "?"), []).append(t)
    rate = 0.0
    for ts in by_worker.values():
        span = (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds()
        rate += len(ts) / span * 3600
    return rate


def scaling_study_file(scale, workdir: Path) -> Path:
    """relu3_adam as a study file of its own: epochs fixed, random sampler, no pruner, no baselines, so that
    every run trains the same enqueued trials to the end and only the number of workers differs."""
    src = load_study(STUDY)
    space_doc, _ = read_yaml(ROOT / "search_spaces" / f"{STUDY}.yaml")
    space_doc["epochs"] = scale.sc_epochs
    space_path = workdir / "scaling_space.yaml"
    space_path.write_text(yaml.safe_dump(space_doc, sort_keys=False))
    study = {"dataset": src.dataset.spec(), "space": str(space_path), "sampler": "random", "pruner": "none", "seed": 0,
             "n_trials": scale.sc_trials, "split": {"val_size": src.val_size, "seed": src.split_seed},
             "budget": {"device": scale.device, "threads": scale.cores, "max_params": src.budget.max_params}}
    path = workdir / "scaling.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def bench_scaling(scale, log: Callable[[str], None], workdir: Path) -> dict:
    """`hpo study FILE --workers N` itself (hpo/search/runner.py; N=1 runs in-process) on the same enqueued
    trials."""
    path = scaling_study_file(scale, workdir)
    smoke = scale.name != "full"  # quick: the --smoke data subset (and at most 4 trials)
    cfg, space = prepare(str(path), smoke=smoke)
    configs = fixed_configs(space, cfg.n_trials)
    quiet = Console(file=io.StringIO(), width=160)
    setups = [(1, scale.cores), (2, max(scale.cores // 2, 1))]
    got: dict[int, list[float]] = {w: [] for w, _ in setups}
    overall: dict[int, list[float]] = {w: [] for w, _ in setups}
    for rep in range(scale.sc_repeats):
        for workers, _ in setups:
            url = f"sqlite:///{workdir / f'scaling-{rep}-{workers}.db'}"
            study, _ = create_or_load(cfg, open_storage(url), cfg.name + ("-smoke" if smoke else ""), None, space)
            enqueue_baselines(study, cfg, space)  # none here; marks the study ready for the run that joins it
            for p in configs:
                study.enqueue_trial(p)
            t0 = time.perf_counter()
            study = run_study(str(path), storage=url, smoke=smoke, workers=workers, console=quiet)
            wall = time.perf_counter() - t0
            done = study.get_trials(deepcopy=False, states=COUNTED)
            if len(done) != len(configs) or sorted(map(str, (t.params for t in done))) != sorted(map(str, configs)):
                raise RuntimeError(f"a scaling run finished {len(done)} trials, not the {len(configs)} enqueued")
            got[workers].append(steady_rate(done))
            overall[workers].append(len(done) / wall * 3600)
    m1, m2 = statistics.fmean(got[1]), statistics.fmean(got[2])
    log(f"scaling: 1 worker x {setups[0][1]} threads {m1:,.0f} trials/h, 2 workers x {setups[1][1]} thread "
        f"{m2:,.0f} trials/h ({m2 / m1:.2f}x)")
    return {"setups": setups, "per_hour": got, "overall": overall, "n_trials": len(configs),
            "n_train": 3000 if smoke else 60000 - cfg.val_size, "epochs": scale.sc_epochs if not smoke else 1,
            "speedup": m2 / m1}


# --- 4 overhead ---------------------------------------------------------------------------------


class TimedSampler(optuna.samplers.BaseSampler):
    """Delegates every call to a sampler and adds up the time spent in it."""

    def __init__(self, inner: optuna.samplers.BaseSampler):
        self.inner, self.seconds = inner, 0.0

    def _timed(self, name: str, *args):
        t0 = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def infer_relative_search_space(self, study, trial):
        return self._timed("infer_relative_search_space", study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._timed("sample_relative", study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._timed("sample_independent", study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        return self._timed("before_trial", study, trial)

    def after_trial(self, study, trial, state, values):
        return self._timed("after_trial", study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()


class TimedPruner(optuna.pruners.BasePruner):
    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner, self.seconds = inner, 0.0

    def prune(self, study, trial) -> bool:
        t0 = time.perf_counter()
        try:
            return self.inner.prune(study, trial)
        finally:
            self.seconds += time.perf_counter() - t0


class TimedTrain:
    """train(), adding up the time spent in it: handed to the overhead study's Objective as its train_fn."""

    def __init__(self):
        self.per_trial: list[float] = []

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return train(*args, **kwargs)
        finally:
            self.per_trial.append(time.perf_counter() - t0)


def bench_overhead(scale, log: Callable[[str], None], workdir: Path) -> dict:
    torch.set_num_threads(scale.threads)
    cfg, space, splits = setup(scale, scale.oh_epochs, scale.oh_train, scale.oh_eval)
    sampler, pruner = TimedSampler(make_sampler(cfg, space)), TimedPruner(make_pruner(cfg, space))
    study = optuna.create_study(study_name="overhead", storage=open_storage(f"sqlite:///{workdir / 'overhead.db'}"),
                                direction="maximize", sampler=sampler, pruner=pruner)
    timed, ends = TimedTrain(), []
    t0 = time.perf_counter()
    study.optimize(Objective(cfg, splits, space=space, train_fn=timed), n_trials=scale.oh_trials,
                   gc_after_trial=False, callbacks=[lambda s, t: ends.append(time.perf_counter())])
    wall = time.perf_counter() - t0
    n, inside = len(timed.per_trial), sum(timed.per_trial)
    tail = max(n // 6, 1)  # the last sixth: TPE's cost grows with the number of trials it models
    tail_outside = (ends[-1] - ends[-tail - 1] if n > tail else ends[-1] - t0) - sum(timed.per_trial[-tail:])
    out = {
        "n_trials": n, "wall": wall, "train": inside, "sampler": sampler.seconds, "pruner": pruner.seconds,
        "trial_mean": inside / n, "overhead_per_trial": (wall - inside) / n, "share": (wall - inside) / wall,
        "tail": tail, "tail_overhead_per_trial": tail_outside / tail,
        "n_train": splits.meta["n_train"], "epochs": scale.oh_epochs,
    }
    out["realistic_seconds"], out["realistic_what"] = realistic_trial_seconds(scale)
    log(f"overhead: {n} trials in {wall:.1f}s, {inside:.1f}s inside train(); {out['overhead_per_trial'] * 1000:.0f} "
        f"ms/trial outside (last {tail}: {out['tail_overhead_per_trial'] * 1000:.0f} ms); a realistic trial takes "
        f"{out['realistic_seconds']:.1f}s")
    return out


def realistic_trial_seconds(scale) -> tuple[float, str]:
    """Wall time of one trial of the paper's protocol (784-60-40-10, Adam, batch 64, 10 epochs) on the study's
    training split (a subset at quick scale): one epoch timed after a warm-up epoch, times ten."""
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0,
                                  train_limit=None if scale.name == "full" else scale.tp_samples).to(scale.device)
    tc = TrainConfig(widths=(60, 40), optimizer="adam", lr=1e-3, batch_size=64, epochs=1)
    train(tc, splits, threads=scale.threads)
    t0 = time.perf_counter()
    train(tc, splits, threads=scale.threads)
    return (10 * (time.perf_counter() - t0),
            f"784-60-40-10 Adam, batch 64, 10 epochs of {splits.meta['n_train']:,} images")


# --- the report ---------------------------------------------------------------------------------


def markdown_scaling(r: dict) -> tuple[list[str], list[tuple]]:
    (w1, t1), (w2, t2) = r["setups"]
    m1 = statistics.fmean(r["per_hour"][w1])
    lines = [
        "## 3. Parallel scaling",
        "",
        (f"`hpo study FILE --workers N` (hpo/search/runner.py; N = 1 runs in-process) on a fresh SQLite file, with the "
         f"same {r['n_trials']} trials enqueued before each run: drawn once at random from relu3_adam's space with "
         f"epochs fixed at {r['epochs']}, {r['n_train']:,} training images, random sampler, no pruner, budget.threads "
         f"{t1} split between the workers. Trials per hour in the steady state (per worker, its trials over the "
         "span from its first trial's start to its last one's end, from the storage's timestamps; summed over "
         "the workers), and over the whole command including process start-up, data loading and the last "
         "trial's tail; mean ± std over repeats."),
        "",
        "| workers × threads | trials per hour | speed-up | trials per hour, whole command |",
        "|---|---:|---:|---:|",
    ]
    for w, t in r["setups"]:
        m = statistics.fmean(r["per_hour"][w])
        lines.append(f"| {w} × {t} | {pm_of(r['per_hour'][w])} | {m / m1:.2f}x | {pm_of(r['overall'][w])} |")
    return lines, [("3 scaling", f"trials per hour, {w2} workers × {t2} thread vs {w1} worker × {t1} threads",
                    "≥ 1.7x", f"{r['speedup']:.2f}x", r["speedup"] >= 1.7)]


def markdown_overhead(r: dict) -> tuple[list[str], list[tuple]]:
    per, real = r["tail_overhead_per_trial"], r["realistic_seconds"]
    real_share = per / (per + real)
    rest = r["wall"] - r["train"] - r["sampler"] - r["pruner"]
    lines = [
        "## 4. Overhead",
        "",
        (f"A study of {r['n_trials']} trials of relu3_adam's space (epochs fixed at {r['epochs']}, "
        f"{r['n_train']:,} training images: cheap trials, so that the overhead shows) with the project's TPE sampler "
        "and median pruner, on a fresh SQLite file opened as `hpo study` opens it (heartbeat on). Time inside "
        "`train()` (evaluation included) is added up by a wrapper, sampler and pruner time by delegating wrappers; "
        "the rest of the wall time is storage reads and writes, model building and the objective's bookkeeping."),
        "",
        "| trials | wall time | inside train() | sampler | pruner | storage and the rest | share outside train() |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        (f"| {r['n_trials']} | {r['wall']:.1f} s | {r['train']:.1f} s ({r['trial_mean'] * 1000:.0f} ms per trial) | "
        f"{r['sampler']:.1f} s | {r['pruner']:.2f} s | {rest:.1f} s | {r['share']:.1%} |"),
        "",
        (f"Outside train(): {r['overhead_per_trial'] * 1000:.0f} ms per trial on average and {per * 1000:.0f} ms per "
        f"trial over the last {r['tail']} (TPE's cost grows with the trials it models). Against a realistic trial, "
        f"{r['realistic_what']} ({real:.1f} s, timed in this run), the last {r['tail']} trials' overhead is "
        f"**{real_share:.1%}** of the wall time at {r['n_trials']} trials."),
    ]
    return lines, [("4 overhead", f"share outside train() at {r['n_trials']} trials, against {real:.1f} s trials",
                    "< 5%", f"{real_share:.1%}", real_share < 0.05)]

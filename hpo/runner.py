"""`hpo study`: validate, load data once, create or resume the study, run it with a live display,
and end with a summary of the top trials and the baselines."""

from __future__ import annotations

import time
from dataclasses import replace

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hpo import data as data_mod
from hpo.config import StudyConfig, load_study
from hpo.dashboard import hint as dashboard_hint
from hpo.errors import HpoError
from hpo.models import describe
from hpo.objective import Objective
from hpo.study import (
    COUNTED,
    BudgetStudy,
    config_hash,
    counted,
    create_or_load,
    enqueue_baselines,
    heartbeat_settings,
    joining_seed,
    make_sampler,
    open_storage,
    redact,
    smoke_variant,
    storage_url,
)

SMOKE_TRAIN, SMOKE_EVAL = 3000, 1000


def outcome(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    return t.user_attrs.get("outcome") or ("pruned" if t.state == TrialState.PRUNED else "failed")


def describe_config(c: dict) -> str:
    """One line for a trial's configuration: 784-60-40-10 relu adam lr=1.0e-03 bs=64 ep=10 constant."""
    if not c:
        return "?"
    act = c.get("activation", "relu")
    act = act if isinstance(act, str) else "/".join(act)
    extras = []
    for k, label in (("weight_decay", "wd"), ("dropout", "drop"), ("label_smoothing", "ls")):
        if c.get(k):
            extras.append(f"{label}={c[k]:.2g}")
    arch = describe(c.get("widths", []), model=c.get("model", "mlp"))
    return (f"{arch} {act} {c.get('optimizer')} lr={c.get('lr', 0):.2e} "
            f"bs={c.get('batch_size')} ep={c.get('epochs')} {c.get('schedule')}" + (" " + " ".join(extras) if extras else ""))


def trial_line(t: FrozenTrial) -> str:
    o = outcome(t)
    color = {"complete": "green", "pruned": "yellow", "diverged": "red", "crashed": "red", "failed": "red"}.get(o, "magenta")
    value = f"{t.values[0]:.4f}" if t.values else "   -  "
    tag = f" [cyan]\\[{t.user_attrs['baseline']}][/]" if t.user_attrs.get("baseline") else ""
    secs = t.user_attrs.get("train_seconds")
    tail = f" {t.user_attrs.get('epochs_trained', 0)} ep {secs:.1f}s" if secs is not None else ""
    reason = f" [dim]({t.user_attrs['reason']})[/]" if o not in ("complete", "pruned") and t.user_attrs.get("reason") else ""
    return f"trial {t.number:>3} [{color}]{o:<9}[/] {value}  {describe_config(t.user_attrs.get('config', {}))}{tail}{tag}{reason}"


class LiveDisplay:
    """Optuna callback: a progress bar with best-so-far, pruned and failed counts, and one line per trial."""

    def __init__(self, console: Console, total: int, already: int, multi: bool):
        self.console, self.multi = console, multi
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best [bold green]{task.fields[best]}[/]"),
            TextColumn("pruned {task.fields[pruned]} failed {task.fields[failed]}"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, completed=already, best="-", pruned=0, failed=0)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in COUNTED for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        best = "-"
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = f"{max(t.values[0] for t in complete):.4f}"
        self.progress.update(self.task, completed=done, best=best, pruned=pruned, failed=failed)
        self.progress.console.print(trial_line(trial), highlight=False)


def summary_table(study: optuna.Study, top: int = 5) -> Table:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    if multi:
        chosen = sorted(study.best_trials, key=lambda t: -t.values[0])[:top]
        title = f"{study.study_name}: Pareto front (top {len(chosen)} by accuracy) and the paper's configurations"
    else:
        chosen = sorted(complete, key=lambda t: -t.values[0])[:top]
        title = f"{study.study_name}: top {len(chosen)} trials and the paper's configurations"
    baselines = [t for t in trials if t.user_attrs.get("baseline") and t not in chosen]
    table = Table(title=title, title_justify="left")
    for col, kw in (("trial", {"justify": "right"}), ("kind", {}), ("configuration", {}), ("val acc", {"justify": "right"}),
                    ("paper", {"justify": "right"}), ("params", {"justify": "right"}), ("epochs", {"justify": "right"}),
                    ("time", {"justify": "right"}), ("outcome", {})):
        table.add_column(col, **kw)
    for t in chosen + baselines:
        reported = t.user_attrs.get("paper_reported")
        secs = t.user_attrs.get("train_seconds")
        table.add_row(
            str(t.number), "baseline" if t.user_attrs.get("baseline") else "search",
            describe_config(t.user_attrs.get("config", {})),
            f"{t.values[0]:.4f}" if t.values else "-",
            f"{reported:.4f}" if reported else "",
            f"{t.user_attrs.get('n_params', 0):,}", str(t.user_attrs.get("epochs_trained", "")),
            f"{secs:.1f}s" if secs is not None else "", outcome(t),
        )
    return table


def counts_line(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    by: dict[str, int] = {}
    for t in trials:
        by[outcome(t)] = by.get(outcome(t), 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))


def prepare(name_or_path: str, *, smoke: bool = False, trials: int | None = None, timeout: float | None = None):
    """Everything that can fail on bad input, before anything is written."""
    cfg = load_study(name_or_path)
    space = cfg.space
    if smoke:
        cfg, space = smoke_variant(cfg, space)
    if trials is not None:
        if trials <= 0:
            raise HpoError("--trials: must be a positive number")
        cfg = replace(cfg, n_trials=trials)
    if timeout is not None:
        cfg = replace(cfg, timeout=timeout)
    if cfg.budget.device == "cuda" and not torch.cuda.is_available():
        raise HpoError(f"{cfg.source}: budget.device: cuda was asked for, but torch sees no CUDA device")
    return cfg, space


def load_data(cfg: StudyConfig, smoke: bool = False):
    ds = data_mod.load(cfg.dataset)
    splits = data_mod.make_splits(ds, val_size=cfg.val_size, seed=cfg.split_seed,
                                  train_limit=SMOKE_TRAIN if smoke else None, eval_limit=SMOKE_EVAL if smoke else None)
    if cfg.budget.device == "cuda":
        splits = data_mod.Splits(*(t.cuda() for t in (splits.train_x, splits.train_y, splits.eval_x, splits.eval_y)),
                                 meta=splits.meta)
    return splits


def make_console() -> Console:
    """A terminal gets its own width; a log file or pipe gets room for the summary table."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def run_study(name_or_path: str, *, trials: int | None = None, timeout: float | None = None,
              storage: str | None = None, smoke: bool = False, console: Console | None = None,
              workers: int = 1) -> optuna.Study:
    console = console or make_console()
    if workers < 1:
        raise HpoError(f"--workers: must be a positive number, but got {workers}")
    cfg, space = prepare(name_or_path, smoke=smoke, trials=trials, timeout=timeout)
    if workers > 1:  # the parent of N worker processes trains nothing and loads no splits
        from hpo.workers import run_parallel

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return run_parallel(name_or_path, cfg, space, workers=workers, url=storage_url(storage), smoke=smoke,
                            console=console)
    splits = load_data(cfg, smoke)
    url = storage_url(storage)
    study_name = cfg.name + ("-smoke" if smoke else "")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(url)
    study, created = create_or_load(cfg, rdb, study_name, splits.meta, space)
    # Resuming, or joining other workers: the study's seed would redraw the start-up trials already drawn.
    sampler = study.sampler if created else make_sampler(cfg, space, seed=joining_seed())
    # Exactly n_trials, also when workers on other machines share the study.
    wait_note = (f"all {cfg.n_trials} trials are taken; waiting for the running ones (other workers', or a killed "
                 f"worker's: that one is failed {heartbeat_settings()[1]}s after its last heartbeat, then retried here)")
    study = BudgetStudy(study_name, rdb, cfg.n_trials, sampler=sampler, pruner=study.pruner,
                        on_wait=lambda _: console.print(wait_note))
    if not created and study.user_attrs.get("config_hash") not in (None, config_hash(cfg)):
        console.print(f"[yellow]warning:[/] {cfg.source} changed since study {study_name!r} was created; "
                      f"resuming it with the new file")
    new_baselines = enqueue_baselines(study, cfg, space)
    done = counted(study)
    remaining = cfg.n_trials - done
    console.print(f"[bold]{study_name}[/] ({cfg.source}): {cfg.dataset} {splits.meta['n_train']} train / "
                  f"{splits.meta['n_eval']} validation, space {space.source}, sampler {cfg.sampler}, pruner {cfg.pruner}")
    console.print(f"storage {redact(url)}; {'created' if created else f'resuming with {done} finished trials'}; "
                  f"{new_baselines} paper baselines enqueued; {dashboard_hint(url)}")
    if remaining <= 0:
        console.print(f"study already has {done} of {cfg.n_trials} trials; raise --trials to run more")
    else:
        objective = Objective(cfg, splits, space=space)
        t0 = time.time()
        with LiveDisplay(console, cfg.n_trials, done, len(cfg.objectives) > 1) as live:
            try:
                study.run(objective, max_trials=remaining, timeout=cfg.timeout, callbacks=[live])
            except KeyboardInterrupt:
                live.progress.stop()
                console.print(f"[yellow]interrupted[/]: {counted(study)} finished trials are kept in {redact(url)}; "
                              f"run the same command to continue")
                raise
        console.print(f"ran {counted(study) - done} trials in {time.time() - t0:.0f}s")
    console.print(summary_table(study))
    console.print(f"outcomes: {counts_line(study)}")
    return study

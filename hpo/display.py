"""What a person sees in the terminal: the console, progress, trial lines and tables, and the number
formatters that every command, report and benchmark shares (one way to write "mean ± std")."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from hpo.trials import CONFIRM_OF, COUNTED, best_trials, confirmed, is_confirmation, outcome

# --- numbers ------------------------------------------------------------------------------------


def pm(mean: float, std: float | None, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
    """`mean ± std` with `digits` decimals (thousands grouped), both times `scale`; the mean alone when the
    std is None or NaN (a single run has no spread)."""
    if std is None or math.isnan(std):
        return f"{mean * scale:,.{digits}f}{unit}"
    return f"{mean * scale:,.{digits}f} ± {std * scale:,.{digits}f}{unit}"


# Fewer runs than this give a range, never a std: a std from two values is no basis for a claim.
MIN_SPREAD_N = 3


def spread(mean: float, std: float | None, n: int, lo: float | None = None, hi: float | None = None,
           digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
    """A value over n runs in the words n allows: `mean ± std` from MIN_SPREAD_N runs on; with two, the mean
    and the range, `0.8755 (0.8720-0.8790)`; with one, the value alone."""
    if n >= MIN_SPREAD_N:
        return pm(mean, std, digits, scale, unit)
    if n == 2 and lo is not None and hi is not None:
        return f"{mean * scale:,.{digits}f}{unit} ({lo * scale:,.{digits}f}-{hi * scale:,.{digits}f}{unit})"
    return pm(mean, None, digits, scale, unit)


def spread_label(n: int) -> str:
    """What spread() shows for n runs, for a column or a title."""
    return "mean ± std" if n >= MIN_SPREAD_N else "mean (range of 2)" if n == 2 else "one run"


def pct(x: float | None) -> str:
    """An accuracy as a percentage with two decimals; empty for None."""
    return "" if x is None else f"{100 * x:.2f}%"


def pm_stats(st: dict | None) -> str:
    """Accuracies over seeds (a dict with mean, std, n, min, max, diverged) as `87.55 ± 0.33%`; two seeds as
    `87.55% (87.20-87.90%)`, one as `87.55%` (spread())."""
    if not st:
        return ""
    tail = f" ({st['diverged']}/{st['n']} diverged)" if st["diverged"] else ""
    return spread(st["mean"], st["std"], st["n"], st.get("min"), st.get("max"), digits=2, scale=100, unit="%") + tail


def number(v: float) -> str:
    """An objective value for people: counts as integers, accuracies and times with four digits."""
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4f}"


# --- configurations and trials ------------------------------------------------------------------


def describe_arch(widths: Sequence[int], io: Sequence[int] | None = None, model: str = "mlp") -> str:
    """The paper's way of writing an architecture, input side first: 784-60-40-10 with `io` = (inputs, classes),
    60-40 without; a cnn's conv layers are marked by their channels: cnn 784-c16-c32-64-10."""
    inner = [f"c{w}" for w in widths[:-1]] + [str(w) for w in widths[-1:]] if model == "cnn" else list(map(str, widths))
    dims = [str(io[0]), *inner, str(io[1])] if io else inner
    return ("cnn " if model == "cnn" else "") + "-".join(dims)


def describe_config(c: dict, io: Sequence[int] | None = None) -> str:
    """One line for a trial's configuration: 784-60-40-10 relu adam lr=1.0e-03 bs=64 ep=10 constant; `io`
    (inputs, classes) where known. A user's model shows as FUNCTION(args)."""
    if not c:
        return "?"
    if ":" in c.get("model", "mlp"):
        args = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in
                         (c.get("model_args") or {}).items())
        head = f"{c['model'].rpartition(':')[2]}({args})"
        return (f"{head} {c.get('optimizer')} lr={c.get('lr', 0):.2e} bs={c.get('batch_size')} ep={c.get('epochs')} "
                f"{c.get('schedule')}")
    act = c.get("activation", "relu")
    act = act if isinstance(act, str) else "/".join(act)
    extras = []
    for k, label in (("weight_decay", "wd"), ("dropout", "drop"), ("label_smoothing", "ls")):
        if c.get(k):
            extras.append(f"{label}={c[k]:.2g}")
    if c.get("augment", "none") != "none":  # e.g. aug=shift_flip±2 (pixels); flips alone: aug=flip
        shift = c.get("augment_shift")
        extras.append("aug=flip" if c["augment"] == "shift_flip" and shift == 0 else
                      f"aug={c['augment']}" + (f"±{shift}" if shift is not None else ""))
    if "seed" in c and c.get("seed"):  # a replicate: trials that differ only in seed must not read the same
        extras.append(f"seed={c['seed']}")
    arch = describe_arch(c.get("widths", []), io, model=c.get("model", "mlp"))
    schedule = f"3 cycles of {c['cycle_epochs']}" if c.get("cycle_epochs") else c.get("schedule")
    return (f"{arch} {act} {c.get('optimizer')} lr={c.get('lr', 0):.2e} "
            f"bs={c.get('batch_size')} ep={c.get('epochs')} {schedule}" + (" " + " ".join(extras) if extras else ""))


def trial_line(t: FrozenTrial) -> str:
    o = outcome(t)
    color = {"complete": "green", "pruned": "yellow", "diverged": "red", "crashed": "red",
             "failed": "red"}.get(o, "magenta")
    value = f"{t.values[0]:.4f}" if t.values else "   -  "
    tag = f" [cyan]\\[{t.user_attrs['baseline']}][/]" if t.user_attrs.get("baseline") else ""
    if t.user_attrs.get(CONFIRM_OF) is not None:
        tag = f" [cyan]\\[confirms trial {t.user_attrs[CONFIRM_OF]}][/]"
    secs = t.user_attrs.get("train_seconds")
    tail = f" {t.user_attrs.get('epochs_trained', 0)} ep {secs:.1f}s" if secs is not None else ""
    explained = o not in ("complete", "pruned") and t.user_attrs.get("reason")
    reason = f" [dim]({t.user_attrs['reason']})[/]" if explained else ""
    config = describe_config(t.user_attrs.get("config", {}), t.user_attrs.get("io"))
    return f"trial {t.number:>3} [{color}]{o:<9}[/] {value}  {config}{tail}{tag}{reason}"


# --- the console and progress -------------------------------------------------------------------


def make_console() -> Console:
    """A terminal gets its own width; a log file or pipe gets room for the summary table."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def progress_bar(console: Console) -> Progress:
    """A transient bar for a known number of training runs (compare, train over seeds)."""
    return Progress(TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


class BudgetLeft(ProgressColumn):
    """Time left, where the run has a time budget (study file `timeout`): the estimate from the trials' pace, or the
    budget's deadline (hpo.search.budget.Deadline) where that comes first, marked `(budget)`."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def render(self, task) -> Text:
        budget = max(0.0, self.deadline - time.time())
        estimate = task.time_remaining
        left = budget if estimate is None else min(estimate, budget)
        s = int(left)
        return Text(f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" + (" (budget)" if left == budget else ""),
                    style="progress.remaining")


class LiveDisplay:
    """Optuna callback: a progress bar with best-so-far, pruned and failed counts, and one line per trial.
    `deadline`: the run's time budget as a time.time() instant, which bounds the time shown as left."""

    def __init__(self, console: Console, total: int, already: int, multi: bool, deadline: float | None = None):
        self.console, self.multi = console, multi
        left = BudgetLeft(deadline) if deadline is not None else TimeRemainingColumn()
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best [bold green]{task.fields[best]}[/]"),
            TextColumn("pruned {task.fields[pruned]} failed {task.fields[failed]}"),
            TimeElapsedColumn(), TextColumn("left"), left, console=console, transient=False,
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
        complete = [t for t in trials if t.state == TrialState.COMPLETE and not is_confirmation(t)]
        if complete:  # the best trial's own run: a confirmation run is a second draw of a trial already counted
            best = f"{max(t.values[0] for t in complete):.4f}"
        self.progress.update(self.task, completed=done, best=best, pruned=pruned, failed=failed)
        self.progress.console.print(trial_line(trial), highlight=False)


# --- tables -------------------------------------------------------------------------------------


SUMMARY_COLUMNS = ("trial", "kind", "configuration", "val acc", "reported", "params", "epochs", "time", "outcome")
SUMMARY_RIGHT = {"trial", "val acc", "reported", "params", "epochs", "time"}


def summary_table(study: optuna.Study, top: int = 5) -> Table:
    """The top trials (or the Pareto front) and the paper's baselines, as `hpo study` ends."""
    title, columns, rows = summary_rows(study, top)
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in SUMMARY_RIGHT else "left")
    for row in rows:
        table.add_row(*row)
    return table


def summary_rows(study: optuna.Study, top: int = 5) -> tuple[str, list[str], list[list[str]]]:
    """summary_table's title, columns and rows as strings; the report writes them as markdown. The columns are
    SUMMARY_COLUMNS; `reported` (what a baseline's source reports for it, its `paper_reported` attribute) only
    when some trial has such a number."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    papers = " and the paper's configurations" if any(t.user_attrs.get("baseline") for t in trials) else ""
    if multi:
        chosen = sorted(study.best_trials, key=lambda t: -t.values[0])[:top]
        title = f"{study.study_name}: Pareto front (top {len(chosen)} by accuracy){papers}"
    else:  # confirmed trials first, by their mean over runs (hpo.trials.best_trials)
        chosen = best_trials(study, top) if complete else []
        title = f"{study.study_name}: top {len(chosen)} trials{papers}"
    confirms = {} if multi else confirmed(study)
    baselines = [t for t in trials if t.user_attrs.get("baseline") and t not in chosen]
    rows = []
    for t in chosen + baselines:
        reported = t.user_attrs.get("paper_reported")
        secs = t.user_attrs.get("train_seconds")
        runs = confirms.get(t.number)
        value = f"{t.values[0]:.4f}" if t.values else "-"
        rows.append([
            str(t.number), "baseline" if t.user_attrs.get("baseline") else "search",
            describe_config(t.user_attrs.get("config", {}), t.user_attrs.get("io")),
            f"{sum(runs) / len(runs):.4f} ({len(runs)} runs)" if runs else value,
            f"{reported:.4f}" if reported else "",
            f"{t.user_attrs.get('n_params', 0):,}", str(t.user_attrs.get("epochs_trained", "")),
            f"{secs:.1f}s" if secs is not None else "", outcome(t),
        ])
    columns = list(SUMMARY_COLUMNS)
    if not any(t.user_attrs.get("paper_reported") for t in baselines + chosen):
        at = columns.index("reported")
        columns.pop(at)
        rows = [r[:at] + r[at + 1:] for r in rows]
    return title, columns, rows


def counts_line(study: optuna.Study) -> str:
    """How the study's trials ended: `30 pruned, 20 complete`."""
    trials = study.get_trials(deepcopy=False)
    by: dict[str, int] = {}
    for t in trials:
        by[outcome(t)] = by.get(outcome(t), 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))

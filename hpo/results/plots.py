"""The report's pictures (matplotlib, PNG): optimisation history, parameter importances, accuracy against
parameter count with the paper's configurations marked (the Pareto front for a multi-objective study), and
validation curves of the best trials and of the baselines."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.trial import TrialState

from hpo.display import MIN_SPREAD_N
from hpo.plotting import plt, save
from hpo.search.papers import study_paper
from hpo.sources import recorded_shape
from hpo.training.models import mlp_param_count, param_count
from hpo.trials import completed, is_confirmation, outcome, searched, study_attrs

TOP_CURVES = 5
MIN_IMPORTANCE_TRIALS = 3
SPARSE_REGIMES = "Some regimes for parameter"  # PED-ANOVA's warning for a rarely drawn parameter


def plot_history(study, path: Path) -> None:
    """Validation accuracy per trial and the best so far. Drawn here rather than with optuna's
    plot_optimization_history: that one cannot tell the paper's baseline trials from searched ones, nor show
    where pruned and capped trials stopped."""
    fig, ax = plt.subplots(figsize=(7, 4))
    finished = completed(study)
    runs = [t for t in finished if is_confirmation(t)]  # a top trial again with another seed
    complete = sorted(searched(finished), key=lambda t: t.number)
    search = [t for t in complete if not t.user_attrs.get("baseline")]
    base = [t for t in complete if t.user_attrs.get("baseline")]
    stopped = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
               if t.user_attrs.get("val_curve")]
    # A kind with no trials gets no legend entry (a study without a pruner has nothing stopped early).
    if search:
        ax.scatter([t.number for t in search], [t.values[0] for t in search], s=18, label="searched trial")
    if base:
        ax.scatter([t.number for t in base], [t.values[0] for t in base], marker="D", s=24, color="tab:orange",
                   label="paper configuration (baseline trial)")
    if stopped:
        ax.scatter([t.number for t in stopped], [t.user_attrs["val_curve"][-1] for t in stopped], marker="x", s=16,
                   color="grey", label="stopped early: pruned or capped (last reported)")
    if runs:
        ax.scatter([t.number for t in runs], [t.values[0] for t in runs], marker="s", s=18, color="tab:purple",
                   label="confirmation run (a top trial, another seed)")
    best, xs, ys = float("-inf"), [], []
    for t in complete:
        best = max(best, t.values[0])
        xs.append(t.number)
        ys.append(best)
    last = max((t.number for t in study.get_trials(deepcopy=False)), default=0)
    if xs and last > xs[-1]:
        xs, ys = xs + [last], ys + [ys[-1]]
    ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel="validation accuracy", title=f"{study.study_name}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)


def plot_importances(study, path: Path) -> tuple[bool, str | None]:
    """Draws optuna's default (PED-ANOVA) importances when they can be had; returns (drawn, a note for the reader)."""
    n = len(completed(study))
    path.unlink(missing_ok=True)  # never leave an earlier run's picture behind a note saying there is none
    if n < MIN_IMPORTANCE_TRIALS:
        return False, (f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials; "
                       f"this study has {n}.")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # PED-ANOVA (optuna's default) takes lower as better once a target is given; ours is negated.
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
            target = (lambda t: -t.values[0]) if len(study.directions) > 1 else None  # None: the study's direction
            imp = optuna.importance.get_param_importances(study, target=target)
    except (RuntimeError, ValueError) as e:  # optuna's own word on why, shown in the report
        return False, f"Parameter importances unavailable: {e}"
    if not imp:
        return False, "Parameter importances unavailable: no searched parameter is shared by every completed trial."
    if set(imp) == {"seed"}:  # replicates of one configuration (mixed_activation): nothing to rank but noise
        return False, ("No parameter importances: only the seed varies between these trials, so there is no "
                       "hyperparameter to rank; the spread over seeds is in the tables.")
    # optuna switches matplotlib to its ggplot style for good (plt.style.use); rc_context keeps that to this
    # picture, so that the report's other pictures keep theirs.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # not news to a reader
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
        warnings.filterwarnings("ignore", message=SPARSE_REGIMES, category=UserWarning)  # said below
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, params=list(imp), target=target, target_name="validation accuracy")
        ax.set_title(f"{study.study_name}: parameter importances", loc="left")  # replaces optuna's left title
        ax.set_xlabel("importance (PED-ANOVA)\nfor reaching the top 10% of validation accuracy")
        if ax.get_legend() is not None:  # one target, named in the axis label: its legend only covered bars
            ax.get_legend().remove()
        ax.figure.set_size_inches(6, max(0.35 * len(imp) + 1.6, 2.8))  # two bars still get room for the labels
        save(ax.figure, path)
    # A conditional parameter (drawn in a few trials only) makes PED-ANOVA warn on stderr; the reader gets it here.
    sparse = sorted({m.group(1) for w in caught
                     if (m := re.search(SPARSE_REGIMES + r" `([^`]+)` have less than", str(w.message)))})
    notes = [f"From {n} completed trials: a rough guide with this few."] if n < 20 else []
    if sparse:
        notes.append(f"The importance of {', '.join(f'`{p}`' for p in sparse)} may be inaccurate: some of "
                     f"{'its' if len(sparse) == 1 else 'their'} ranges hold fewer than 2 completed trials "
                     f"(optuna's PED-ANOVA).")
    for w in caught:  # anything else optuna said goes on as it would have
        if SPARSE_REGIMES not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return True, " ".join(notes) or None


# Paper rows get these colours, one each, so that a row's reported number, its validation trial and its test
# re-run read as one configuration; green is the optimum's, grey the searched trials'.
ROW_COLORS = ("tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:orange",
              "navy", "darkred", "indigo", "sienna", "teal", "gold", "black", "magenta")
OPTIMUM_COLOR = "tab:green"


def _bar(st: dict) -> tuple[float, list[list[float]]]:
    """A test re-run's mean and error bar: ± std from MIN_SPREAD_N seeds on, the seeds' range below that."""
    if st["n"] >= MIN_SPREAD_N:
        return st["mean"], [[st["std"]], [st["std"]]]
    return st["mean"], [[st["mean"] - st["min"]], [st["max"] - st["mean"]]]


def _focus_limits(values: list[float], pad: float, floor: float | None = None,
                  min_span: float = 0.0) -> tuple[float, float]:
    """Limits around `values` with `pad` of their span each side; `min_span` keeps near-equal values (trials that
    all reach one accuracy) from an axis so narrow that most of them fall off it."""
    lo, hi = min(values), max(values)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    span = (hi - lo) or abs(hi) * 0.1 or 1.0
    return (lo - pad * span if floor is None else max(floor, lo - pad * span)), hi + pad * span


def plot_params(study, result: dict | None, path: Path) -> bool:
    """Accuracy against parameter count. Left, every trial (log scale; the Pareto front of a multi-objective
    study); right, a close-up of the paper's configurations and the optimum on a linear scale, where each paper
    row has one colour for what the paper reports (star), what it reached here (diamond, validation) and its
    test re-run (square with bar and seed dots). The y axis leaves out outliers far below what matters (a
    diverged trial would squash everything into a line); they are drawn on the lower edge and counted. Returns
    whether the close-up was drawn (only when the study has paper configurations)."""
    multi = len(study.directions) > 1
    complete = completed(study)
    s = study_attrs(study)
    paper = study_paper(study_attrs(study))
    rows = [r for t in s.get("tables", []) for r in paper.table(t)] if paper else []
    color = {r.name: ROW_COLORS[i % len(ROW_COLORS)] for i, r in enumerate(rows)}
    shape, n_classes = recorded_shape(s.get("split") or {})
    n_params = {r.name: mlp_param_count(shape, r.widths, n_classes) for r in rows}
    base = {t.user_attrs["baseline"]: t for t in complete if t.user_attrs.get("baseline")}
    search = [t for t in complete if not t.user_attrs.get("baseline")]
    entries = [e for e in (result or {}).get("entries", []) if e["kind"] in ("paper", "optimum")]
    opt_trial = next((t for t in complete if any(e["kind"] == "optimum" and e.get("trial") == t.number
                                                  for e in entries)), None)
    if opt_trial is None and not multi and search:  # before `hpo compare`: the optimum is the best searched trial
        opt_trial = max(search, key=lambda t: t.values[0])

    # What the picture is about: the paper's numbers, the baselines, the re-runs and the best searched trials.
    focus_y = [r.reported for r in rows] + [t.values[0] for t in base.values()]
    for e in entries:
        mean, (lo, hi) = _bar(e["stats"])
        focus_y += [mean - lo[0], mean + hi[0], e["stats"]["min"], e["stats"]["max"]]
    accs = sorted(t.values[0] for t in search)
    if accs:  # the better half of the search, its best, and every trial within 10 points of the best
        focus_y += [accs[len(accs) // 2], accs[-1]] + [a for a in accs if a >= accs[-1] - 0.1]
    if multi:  # every member of the front is on the picture
        focus_y += [t.values[0] for t in study.best_trials]
    ylim = _focus_limits(focus_y or [t.values[0] for t in complete] or [0.0, 1.0], 0.08, floor=0.0, min_span=0.02)

    close_up = bool(rows)  # without paper rows the optimum alone would fill a second panel
    fig, axes = plt.subplots(1, 2 if close_up else 1, figsize=(11, 5.2) if close_up else (7, 5.2), squeeze=False)
    ax = axes[0][0]
    shown = [t for t in search if t.values[0] >= ylim[0]]
    below = [t for t in search if t.values[0] < ylim[0]]
    ax.scatter([t.user_attrs.get("n_params", 0) for t in shown], [t.values[0] for t in shown], s=14, color="grey",
               alpha=0.5, zorder=2)
    if below:
        ax.scatter([t.user_attrs.get("n_params", 0) for t in below], [ylim[0]] * len(below), marker="v", s=22,
                   color="grey", alpha=0.7, clip_on=False, zorder=3)
        ax.annotate(f"{len(below)} trial{'s' * (len(below) > 1)} below {ylim[0]:.2f} (on the edge)", (0.01, 0.02),
                    xycoords="axes fraction", fontsize=7, color="dimgrey")
    if multi:
        front = sorted(study.best_trials, key=lambda t: t.user_attrs.get("n_params", 0))
        ax.step([t.user_attrs.get("n_params", 0) for t in front], [t.values[0] for t in front], where="post",
                color=OPTIMUM_COLOR, marker="o", ms=4, zorder=4)
    panels = [ax] + ([axes[0][1]] if close_up else [])
    for a in panels:
        for r in rows:
            a.scatter(n_params[r.name], r.reported, marker="*", s=130, color=color[r.name], edgecolors="black",
                      linewidths=0.4, zorder=5)
            if r.name in base:
                a.scatter(base[r.name].user_attrs.get("n_params", 0), base[r.name].values[0], marker="D", s=40,
                          color=color[r.name], edgecolors="black", linewidths=0.4, zorder=5)
        if opt_trial is not None:
            a.scatter(opt_trial.user_attrs.get("n_params", 0), opt_trial.values[0], marker="o", s=60,
                      facecolors="none", edgecolors=OPTIMUM_COLOR, linewidths=1.5, zorder=5)
        for e in entries:
            c = OPTIMUM_COLOR if e["kind"] == "optimum" else color.get(e["name"], "black")
            x = param_count(e["hp"], shape, n_classes)
            mean, yerr = _bar(e["stats"])
            a.errorbar(x, mean, yerr=yerr, fmt="s", ms=6, capsize=5, elinewidth=1.6, capthick=1.6, color=c,
                       markeredgecolor="black", zorder=6)
            seeds = [r["accuracy"] for r in e.get("runs", [])]
            a.scatter([x] * len(seeds), seeds, s=6, color="black", zorder=7)
        a.set_ylim(*ylim)
        a.grid(alpha=0.3, which="both")
        a.set_ylabel("accuracy")
    ax.set_xscale("log")
    counts = [t.user_attrs.get("n_params", 0) for t in complete if t.user_attrs.get("n_params")]
    drawn = [x for x in counts + list(n_params.values()) if x > 0]  # the trials and the paper's configurations
    if drawn:  # every marker inside the axis (a star on its edge was cut in half); one size (or nearly) gets room
        pad = 1.3 if max(drawn) < 1.5 * min(drawn) else 1.12
        ax.set_xlim(min(drawn) / pad, max(drawn) * pad)
    # Labels on round values only, written out: a log axis inside one decade otherwise labels its minor ticks
    # in scientific notation, and neighbours run into each other ("3x10^3 4x10^3").
    wide = bool(drawn) and max(drawn) > 3 * min(drawn)  # several decades' worth of round values to label
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)) if wide else MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="parameters (log scale)", title="every completed trial" + (", Pareto front" if multi else ""))
    if close_up:
        a = axes[0][1]
        xs = [n_params[r.name] for r in rows] + [param_count(e["hp"], shape, n_classes) for e in entries]
        xs += [t.user_attrs.get("n_params", 0) for t in base.values()]
        xs += [opt_trial.user_attrs.get("n_params", 0)] if opt_trial is not None else []
        xlim = _focus_limits(xs, 0.12)
        a.set_xlim(*xlim)
        near = [t for t in shown if xlim[0] <= t.user_attrs.get("n_params", 0) <= xlim[1]]
        a.scatter([t.user_attrs.get("n_params", 0) for t in near], [t.values[0] for t in near],
                  s=14, color="grey", alpha=0.35, zorder=2)
        a.xaxis.set_major_locator(MaxNLocator(nbins=5))  # written-out labels ("1,200,000") need the room
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        shows_optimum = opt_trial is not None or any(e["kind"] == "optimum" for e in entries)
        a.set(xlabel="parameters", title="close-up: paper configurations" + (" and optimum" * shows_optimum))

    n = min((e["stats"]["n"] for e in entries), default=0)
    bar = "mean ± std" if n >= MIN_SPREAD_N else "mean, bar: range of the seeds"
    where = f"{result['dataset']} test re-run" if result else "test re-run"
    handles = [Line2D([], [], ls="", marker="o", color="grey", alpha=0.6, label="searched trial (validation)")]
    if rows:
        handles.append(Line2D([], [], ls="", marker="*", ms=11, color="white", markeredgecolor="black",
                              label="paper-reported"))
    if base:
        handles.append(Line2D([], [], ls="", marker="D", color="white", markeredgecolor="black",
                              label="paper configuration trained here (validation)"))
    if entries:
        handles.append(Line2D([], [], ls="", marker="s", color="white", markeredgecolor="black",
                              label=f"{where} ({bar}; dots: seeds)"))
    if opt_trial is not None or entries:
        handles.append(Line2D([], [], ls="", marker="s", color=OPTIMUM_COLOR, markeredgecolor="black",
                              label="automated optimum (ring: its trial, validation)"))
    if multi:
        handles.append(Line2D([], [], color=OPTIMUM_COLOR, marker="o", ms=4, label="Pareto front"))
    handles += [Line2D([], [], ls="", marker="s", color=color[r.name], label=r.name) for r in rows]
    fig.suptitle(f"{study.study_name}: {'Pareto front, ' if multi else ''}accuracy against parameter count")
    legend = fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.canvas.draw()  # the legend's height is known only once drawn; the panels take what is left above it
    frac = legend.get_window_extent().height / fig.bbox.height
    fig.tight_layout(rect=(0, frac + 0.01, 1, 0.97))
    save(fig, path, tight=False)
    return close_up


def telling_choices(trials: list, most: int = 2) -> dict[int, str]:
    """Per trial number, " (activation=tanh, seed=2)": its choices (strings and whole numbers, not float draws)
    among the first `most` keys that differ between `trials`, so that a legend says what its lines are."""
    keys = sorted({k for t in trials for k, v in t.params.items() if isinstance(v, (str, int, bool))})
    telling = [k for k in keys if len({repr(t.params.get(k)) for t in trials}) > 1][:most]
    return {t.number: " (" + ", ".join(f"{k}={t.params[k]}" for k in telling if k in t.params) + ")"
            if any(k in t.params for k in telling) else "" for t in trials}


def plot_curves(study, path: Path) -> None:
    """Validation accuracy per epoch of the best searched trials and of every baseline. Drawn here rather than
    with optuna's plot_intermediate_values: that one draws every trial alike and cannot mark the baselines.
    Searched trials are solid lines in shades of green; the paper's configurations are thick dashed lines with
    diamonds, each in its colour from the accuracy-against-parameters picture, so the two never read alike."""
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    s = study_attrs(study)
    paper = study_paper(study_attrs(study))
    rows = [r for t in s.get("tables", []) for r in paper.table(t)] if paper else []
    color = {r.name: ROW_COLORS[i % len(ROW_COLORS)] for i, r in enumerate(rows)}
    search = [t for t in searched(completed(study))
              if not t.user_attrs.get("baseline") and t.user_attrs.get("val_curve")]
    best = sorted(search, key=lambda t: -t.values[0])[:TOP_CURVES]
    base = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("baseline") and t.user_attrs.get("val_curve")]
    greens = plt.get_cmap("Greens")
    drawn = telling_choices(best)
    for i, t in enumerate(best):  # the best darkest
        c = t.user_attrs["val_curve"]
        ax.plot(range(1, len(c) + 1), c, ls="-", lw=1.8, marker="o", ms=3,
                color=greens(0.95 - 0.5 * i / max(len(best) - 1, 1)),
                label=f"trial {t.number}{drawn[t.number]}: {t.values[0]:.4f}" if t.values else f"trial {t.number}")
    for t in base:
        c = t.user_attrs["val_curve"]
        name = t.user_attrs["baseline"]
        end = f"{t.values[0]:.4f}" if t.values else outcome(t)
        ax.plot(range(1, len(c) + 1), c, ls=(0, (5, 2)), lw=2.2, marker="D", ms=4,
                color=color.get(name, "black"), label=f"{name} (trial {t.number}): {end}")
    longest = max([len(t.user_attrs.get("val_curve") or []) for t in best + base] + [1])
    ax.set_xlim(0.5, longest + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs: 1, 2, …, never 0.5 or 1.5
    papers = " and the paper's configurations (dashed)" if base else ""
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"{study.study_name}: best {len(best)} searched trials "
                                                               f"(solid){papers}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="final validation accuracy",
              title_fontsize=8)
    save(fig, path)

"""The report's pictures (matplotlib, PNG): optimisation history, parameter importances, accuracy against
parameter count with the paper's configurations marked (the Pareto front for a multi-objective study), and
validation curves of the best trials and of the baselines."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from hpo.paper import PAPERS
from hpo.plotting import plt, save
from hpo.training.models import mlp_param_count
from hpo.trials import completed

TOP_CURVES = 5
MIN_IMPORTANCE_TRIALS = 3


def plot_history(study, path: Path) -> None:
    """Validation accuracy per trial and the best so far. Drawn here rather than with optuna's
    plot_optimization_history: that one cannot tell the paper's baseline trials from searched ones, nor show
    where pruned and capped trials stopped."""
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = sorted(completed(study), key=lambda t: t.number)
    search = [t for t in complete if not t.user_attrs.get("baseline")]
    base = [t for t in complete if t.user_attrs.get("baseline")]
    stopped = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.user_attrs.get("val_curve")]
    ax.scatter([t.number for t in search], [t.values[0] for t in search], s=18, label="searched trial")
    ax.scatter([t.number for t in base], [t.values[0] for t in base], marker="D", s=24, color="tab:orange",
               label="paper configuration (baseline trial)")
    ax.scatter([t.number for t in stopped], [t.user_attrs["val_curve"][-1] for t in stopped], marker="x", s=16,
               color="grey", label="stopped early: pruned or capped (last reported)")
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
        return False, f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials; this study has {n}."
    try:
        with warnings.catch_warnings():
            # PED-ANOVA (optuna's default) takes lower as better once a target is given; ours is negated.
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
            target = (lambda t: -t.values[0]) if len(study.directions) > 1 else None  # None: the study's direction
            imp = optuna.importance.get_param_importances(study, target=target)
    except (RuntimeError, ValueError) as e:  # optuna's own word on why, shown in the report
        return False, f"Parameter importances unavailable: {e}"
    if not imp:
        return False, "Parameter importances unavailable: no searched parameter is shared by every completed trial."
    with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental; not news to a reader
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, params=list(imp), target=target, target_name="validation accuracy")
    ax.set_title(f"{study.study_name}: parameter importances")
    ax.set_xlabel("importance (PED-ANOVA)\nfor reaching the top 10% of validation accuracy")
    ax.figure.set_size_inches(6, 0.35 * len(imp) + 1.2)
    save(ax.figure, path)
    return True, (f"From {n} completed trials: a rough guide with this few." if n < 20 else None)


def plot_params(study, result: dict | None, path: Path) -> None:
    """Accuracy against parameter count; the paper's configurations and (multi-objective) the Pareto front."""
    multi = len(study.directions) > 1
    complete = completed(study)
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    search = [t for t in complete if not t.user_attrs.get("baseline")]
    base = [t for t in complete if t.user_attrs.get("baseline")]
    ax.scatter([t.user_attrs.get("n_params", 0) for t in search], [t.values[0] for t in search], s=16, alpha=0.6,
               label="searched trial (validation)")
    ax.scatter([t.user_attrs.get("n_params", 0) for t in base], [t.values[0] for t in base], marker="D", s=26,
               color="tab:orange", label="paper configuration, trained here (validation)")
    if multi:
        front = sorted(study.best_trials, key=lambda t: t.user_attrs.get("n_params", 0))
        ax.step([t.user_attrs.get("n_params", 0) for t in front], [t.values[0] for t in front], where="post",
                color="tab:green", marker="o", label="Pareto front")
    s = study.user_attrs
    if s.get("paper"):
        rows = [r for t in s.get("tables", []) for r in PAPERS[s["paper"]].table(t)]
        ax.scatter([mlp_param_count(784, r.widths) for r in rows], [r.reported for r in rows], marker="*", s=70,
                   facecolors="none", edgecolors="tab:red", label="paper-reported")
        for r in rows if len(rows) <= 5 else []:  # more labels than that only hide each other
            ax.annotate(f"T{r.table} {'-'.join(map(str, r.widths))} lr {r.lr:g}", (mlp_param_count(784, r.widths),
                        r.reported), fontsize=6, color="tab:red", xytext=(4, 2), textcoords="offset points")
    if result:
        for e in result["entries"]:
            if e["kind"] in ("paper", "optimum"):
                st = e["stats"]
                ax.errorbar(mlp_param_count(784, e["hp"]["widths"]), st["mean"], yerr=st["std"], fmt="s", ms=4,
                            capsize=3, color="tab:green" if e["kind"] == "optimum" else "black")
        ax.plot([], [], "s", color="black", ms=4, label=f"paper configuration, {result['dataset']} test re-run")
        ax.plot([], [], "s", color="tab:green", ms=4, label=f"automated optimum, {result['dataset']} test re-run")
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="accuracy",
           title=f"{study.study_name}: {'Pareto front, ' if multi else ''}accuracy against parameter count")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: the points stay visible
    save(fig, path)


def plot_curves(study, path: Path) -> None:
    """Validation accuracy per epoch of the best trials and of every baseline. Drawn here rather than with
    optuna's plot_intermediate_values: that one draws every trial alike and cannot mark the baselines."""
    fig, ax = plt.subplots(figsize=(9.5, 4))
    best = sorted(completed(study), key=lambda t: -t.values[0])[:TOP_CURVES]
    base = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline") and t.user_attrs.get("val_curve")]
    for t in best:
        c = t.user_attrs.get("val_curve") or []
        tag = f", {t.user_attrs['baseline']}" if t.user_attrs.get("baseline") else ""
        ax.plot(range(1, len(c) + 1), c, marker=".", ls="--" if tag else "-",
                label=f"trial {t.number} ({t.values[0]:.4f}{tag})")
    for t in base:
        if t in best:
            continue
        c = t.user_attrs["val_curve"]
        ax.plot(range(1, len(c) + 1), c, ls="--", marker=".", alpha=0.7, label=t.user_attrs["baseline"])
    longest = max([len(t.user_attrs.get("val_curve") or []) for t in best + base] + [1])
    ax.set_xlim(0.5, longest + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy",
           title=f"{study.study_name}: best {len(best)} trials (solid), paper configurations (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


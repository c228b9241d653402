"""runs/NAME/report.md: the comparison in words and numbers, and pictures a person would rather look at
than read (matplotlib, Agg backend, PNG): optimisation history, parameter importances, accuracy against
parameter count with the paper's configurations marked (the Pareto front for a multi-objective study),
and validation curves of the best trials and of the baselines."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: works on servers and in tests

import matplotlib.pyplot as plt
import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState
from rich.console import Console

from hpo.errors import HpoError
from hpo.models import mlp_param_count
from hpo.paper import PAPERS
from hpo.runner import counts_line, summary_table

TOP_CURVES = 5
MIN_IMPORTANCE_TRIALS = 3


def _complete(study):
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = sorted(_complete(study), key=lambda t: t.number)
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
    _save(fig, path)


def plot_importances(study, path: Path) -> tuple[bool, str | None]:
    """Draws optuna's default (PED-ANOVA) importances when they can be had; returns (drawn, a note for the reader)."""
    n = len(_complete(study))
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
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    ax.barh(names, [imp[k] for k in names], color="tab:blue")
    ax.set(xlabel="importance (PED-ANOVA)\nfor reaching the top 10% of validation accuracy",
           title=f"{study.study_name}: parameter importances")
    _save(fig, path)
    return True, (f"From {n} completed trials: a rough guide with this few." if n < 20 else None)


def plot_params(study, result: dict | None, path: Path) -> None:
    """Accuracy against parameter count; the paper's configurations and (multi-objective) the Pareto front."""
    multi = len(study.directions) > 1
    complete = _complete(study)
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
    _save(fig, path)


def plot_curves(study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9.5, 4))
    best = sorted(_complete(study), key=lambda t: -t.values[0])[:TOP_CURVES]
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
    _save(fig, path)


def _space(study):
    """The study's search space, from its study file (or its name) or else its space file."""
    from hpo.config import load_space, load_study

    s = study.user_attrs
    for loader, arg in ((load_study, s.get("study_file")), (load_study, s.get("hpo_study")),
                        (load_space, s.get("space_file"))):
        if arg:
            try:
                got = loader(arg)
                return getattr(got, "space", got)
            except HpoError:
                continue
    return None


def boundary_warnings(study) -> list[str]:
    """Where the best trial sits at an edge of its search space: the optimum may lie beyond it."""
    from hpo.export import best_trials
    from hpo.space import describe_dist, on_boundary

    space = _space(study)
    if space is None:
        return ["The study's search-space file could not be found, so boundaries were not checked."]
    best = best_trials(study, 1)[0]
    out = []
    for name, value in best.params.items():
        d = space.dist_for(name)
        if d is None:
            continue
        side = on_boundary(d, value)
        if side == "low" and d.kind in ("int", "float") and not d.log and d.low == 0:
            side = None  # 0 is where a non-negative setting (dropout, weight decay) is off: nothing lies beyond
        if side is None and d.kind == "categorical" and len(d.choices) > 2 and \
                all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices):
            side = "low" if value == min(d.choices) else "high" if value == max(d.choices) else None
        if side:
            out.append(f"Best trial {best.number}: `{name}` = {value:.4g} sits at the {side} end of "
                       f"{describe_dist(d)} in {space.source}; the optimum may lie beyond it: widen the range "
                       f"and run more trials.")
    return out


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(renderable) -> str:
    console = Console(file=io.StringIO(), width=150, color_system=None)
    console.print(renderable)
    return console.file.getvalue().rstrip()


def write_report(study, result: dict | None, folder: Path, suffix: str = "") -> Path:
    """Write report{suffix}.md and its PNGs into `folder`; returns the report's path."""
    from hpo.compare import table_rows

    folder.mkdir(parents=True, exist_ok=True)
    s = study.user_attrs
    multi = len(study.directions) > 1
    pngs = {k: folder / f"{k}{suffix}.png" for k in ("history", "importances", "params", "curves")}
    plot_history(study, pngs["history"])
    drawn, importance_note = plot_importances(study, pngs["importances"])
    plot_params(study, result, pngs["params"])
    plot_curves(study, pngs["curves"])

    md = [f"# {study.study_name}: automated search against the hand-tuned configurations", ""]
    md.append(f"Study `{study.study_name}` ({s.get('study_file')}, space {s.get('space_file')}): sampler "
              f"{s.get('sampler')}, pruner {s.get('pruner')}, objectives {', '.join(s.get('objectives', []))}; "
              f"trials: {counts_line(study)}. Tuned on a validation split of {s.get('split', {}).get('n_train')} / "
              f"{s.get('split', {}).get('n_eval')} {s.get('split', {}).get('dataset')} images.")
    md.append("")
    md.append("## Test-set comparison")
    if result:
        headers, rows = table_rows(result)
        md += ["", (f"{result['dataset']} test accuracy over seeds {result['seeds']} (mean ± std); difference = "
                   f"automated optimum − re-run. Generated {result['created_at']}, hpo commit {result['git_commit']}."),
               "", _markdown_table(headers, rows), "", "### What the numbers say", ""]
        md += [f"- {line}" for line in result["findings"]]
        md += ["", "### Protocol assumptions", "", ("The paper leaves these out; each is an explicit, configurable "
               "assumption (hpo/paper.py, `baselines.protocol` in the study file)."), ""]
        md += [f"- **{p['key']}** = {p['value']}: {p['reason']}" for p in result["protocol"]]
    else:
        md += ["", (f"Not run yet: `hpo compare {s.get('hpo_study', study.study_name)}` re-runs the paper's "
                   f"configurations and the best trial on the test set.")]
    md += ["", "## Search-space boundaries", ""]
    warnings = boundary_warnings(study)
    md += [f"> **Warning:** {w}" + "\n" for w in warnings] or \
          ["The best trial lies inside its search space on every searched numeric hyperparameter."]
    md += ["", "## Pictures", "", "### Optimisation history", "", f"![optimisation history]({pngs['history'].name})",
           "", "### Parameter importances", ""]
    if drawn:
        md.append(f"![parameter importances]({pngs['importances'].name})")
    if importance_note:
        md += ["", importance_note] if drawn else [importance_note]
    title = "Pareto front: accuracy against parameter count" if multi else "Accuracy against parameter count"
    md += ["", f"### {title}", "", ("Red stars: what the paper reports for its configurations; orange diamonds: the "
           "same configurations trained here (validation); black and green squares: test re-runs (mean ± std)."), "",
           f"![accuracy against parameter count]({pngs['params'].name})", "", "### Validation curves", "",
           f"![validation curves]({pngs['curves'].name})", "", "## Trials (validation)", "", "```text",
           _text(summary_table(study)), "```", ""]
    from hpo.diagnostics import report_sections  # accuracy by activation, learned mixing weights, dead units

    for section in report_sections(study, folder):
        md += [section, ""]
    path = folder / f"report{suffix}.md"
    path.write_text("\n".join(md))
    return path


def report_study(name: str, *, storage: str | None = None, smoke: bool = False, out: str | Path | None = None) -> Path:
    """Re-write the report from the storage and the last compare.json, without re-running anything."""
    from hpo.export import complete_trials, open_study

    study = open_study(name, storage, smoke)
    complete_trials(study)
    folder = Path(out) if out else Path("runs") / study.study_name
    raw = folder / "compare.json"
    result = json.loads(raw.read_text()) if raw.is_file() else None
    return write_report(study, result, folder)

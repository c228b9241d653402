"""The report: every table and picture of a study's results, in the terminal (rich) and in
runs/NAME/report.md (markdown with PNGs from hpo.results.plots): the test-set comparison, what the numbers
say, the protocol assumptions, search-space boundaries, the trials, and the activation sections."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hpo.display import counts_line, pct, pm_stats, spread_label, summary_rows
from hpo.errors import HpoError
from hpo.results.activation_report import report_sections
from hpo.results.charts import save_params_chart
from hpo.results.notes import artifact_dir, is_persistent, open_store, publish_report, study_url, warn
from hpo.results.plots import plot_curves, plot_history, plot_importances, plot_params
from hpo.search.papers import study_paper
from hpo.search.space import describe_dist, on_boundary
from hpo.search.storage import open_study
from hpo.search.studyfile import load_space, load_study
from hpo.sources import name_of
from hpo.trials import best_trials, complete_trials, study_attrs

# --- the comparison table -----------------------------------------------------------------------


def table_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison as header and rows of strings: the rich table and the report's markdown share them."""
    entries = result["entries"]
    opt = next(e for e in entries if e["kind"] == "optimum")
    same = result["dataset"] == result.get("paper_dataset", result["dataset"])
    reported = "paper-reported" if same else f"paper-reported ({result.get('paper_dataset')})"
    headers = ["configuration", reported, "paper config re-run", "automated optimum", "difference"]
    rows = []
    for e in entries:
        if e["kind"] == "optimum":
            over = f" over {e['val_seeds']} runs" if e.get("val_seeds", 1) > 1 else ""
            rows.append([f"{e['name']}, validation {pct(e['val_accuracy'])}{over}: {e['note']}", "", "",
                         pm_stats(e["stats"]), ""])
            continue
        diff = 100 * (opt["stats"]["mean"] - e["stats"]["mean"])
        rows.append([e["name"], pct(e["reported"]), pm_stats(e["stats"]), pm_stats(opt["stats"]), f"{diff:+.2f} pts"])
    over = (result.get("searches") or {}).get("over")
    if over:
        rows.append([f"automated optimum over {over['n']} independent searches ({spread_label(over['n'])} over "
                     f"searches of each search's best on the same seeds)", "", "", pm_stats(over), ""])
    return headers, rows


def row_kinds(result: dict) -> list[str]:
    """The kind of each of table_rows' rows, for their style."""
    return [e["kind"] for e in result["entries"]] + (["searches"] if result.get("searches") else [])


def rich_table(result: dict) -> Table:
    headers, rows = table_rows(result)
    table = Table(title=f"{result['study']}: {result['dataset']} test accuracy, {len(result['seeds'])} seeds each "
                        f"({spread_label(len(result['seeds']))}); difference = automated optimum − re-run",
                  title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for kind, row in zip(row_kinds(result), rows):
        table.add_row(*row, style={"optimum": "bold green", "searches": "green", "reference": "dim"}.get(kind))
    return table



def print_result(result: dict, console: Console) -> None:
    console.print(rich_table(result))
    for line in result["findings"]:
        console.print(f"• {line}", highlight=False)
    console.print("[bold]protocol assumptions[/] "
                  "(the paper file's protocol; override under baselines.protocol in the study):")
    for p in result["protocol"]:
        console.print(f"  {p['key']} = {p['value']}: [dim]{p['reason']}[/]", highlight=False)



# --- the report file ----------------------------------------------------------------------------


def _space(study):
    """The study's search space, from its study file (or its name) or else its space file."""

    s = study_attrs(study)
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
    space = _space(study)
    if space is None:
        return ["The study's search-space file could not be found, so boundaries were not checked."]
    best = best_trials(study, 1)[0]
    out, warned = [], set()  # warned: the names the best trial already has a warning for
    for name, value in best.params.items():
        d = space.dist_for(name)
        if d is None or name == "seed":  # a replicate factor, not a setting whose range could be widened
            continue
        side = on_boundary(d, value)
        if side == "low" and d.kind in ("int", "float") and not d.log and d.low == 0:
            side = None  # 0 is where a non-negative setting (dropout, weight decay) is off: nothing lies beyond
        if side is None and d.kind == "categorical" and len(d.choices) > 2 and \
                all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices):
            side = "low" if value == min(d.choices) else "high" if value == max(d.choices) else None
        if side:
            warned.add(name)
            out.append(f"Best trial {best.number}: `{name}` = {value:.4g} sits at the {side} end of "
                       f"{describe_dist(d)} in {space.source}; the optimum may lie beyond it: widen the range "
                       f"and run more trials.")
    return out + crowded_edges(study, space, skip=warned)


# The best trials crowd an edge when at least CROWD of the top CROWD_TOP searched trials lie in the outer EDGE of a
# range (its sampling scale), or at the largest or smallest of a few numeric choices. A search of relu3_adam with
# 100 trials put its 12 best trials in the top fifth of label_smoothing [0, 0.2] (0.158-0.196), where no best trial
# sat within 2% of the edge that the best-trial check looks at; the hand configuration with that label smoothing
# gained 0.2 points on its own (README: where the search lost).
CROWD_TOP, CROWD, EDGE = 10, 0.8, 0.2


def crowded_edges(study, space, skip: frozenset | set = frozenset()) -> list[str]:
    """Settings (other than `skip`) whose best searched trials crowd one edge of their range: the search presses
    against it."""
    top = [t for t in best_trials(study, 3 * CROWD_TOP) if not t.user_attrs.get("baseline")][:CROWD_TOP]
    if len(study.directions) > 1 or len(top) < CROWD_TOP:
        return []
    out = []
    for name in sorted({k for t in top for k in t.params}):
        d = space.dist_for(name)
        values = [t.params[name] for t in top if name in t.params]
        if d is None or name == "seed" or name in skip or len(values) < CROWD_TOP:
            continue
        if d.kind == "categorical":
            numbers = [c for c in d.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if len(numbers) < 3 or len(numbers) < len(d.choices):
                continue
            sides = {"low": [v == min(numbers) for v in values], "high": [v == max(numbers) for v in values]}
        elif d.kind in ("int", "float"):
            lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
            if hi <= lo:
                continue
            at = [((math.log(v) if d.log else v) - lo) / (hi - lo) for v in values]
            sides = {"low": [a <= EDGE for a in at], "high": [a >= 1 - EDGE for a in at]}
            if not d.log and d.low == 0:  # 0 is "off" for a non-negative setting: nothing lies below it
                sides.pop("low")
        else:
            continue
        for side, hits in sides.items():
            if sum(hits) >= CROWD * len(hits):
                where = "at the" if d.kind == "categorical" else "in the"
                part = f"{side} end" if d.kind == "categorical" else f"{'lowest' if side == 'low' else 'highest'} fifth"
                out.append(f"The best {len(hits)} searched trials: `{name}` {where} {part} of {describe_dist(d)} in "
                           f"{sum(hits)} of them ({space.source}); the search presses against that edge: widen "
                           "the range and run more trials.")
    return out


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(study, result: dict | None, folder: Path, suffix: str = "", artifacts: str | None = None) -> Path:
    """Write report{suffix}.md and its PNGs into `folder`, and put the report into the study's note in
    optuna-dashboard with the pictures (`artifacts`: their folder; see hpo.results.notes); returns the report's path."""
    folder.mkdir(parents=True, exist_ok=True)
    s = study_attrs(study)
    multi = len(study.directions) > 1
    pngs = {k: folder / f"{k}{suffix}.png" for k in ("history", "importances", "params", "curves")}
    plot_history(study, pngs["history"])
    drawn, importance_note = plot_importances(study, pngs["importances"])
    close_up = plot_params(study, result, pngs["params"])
    plot_curves(study, pngs["curves"])

    md = [f"# {study.study_name}: automated search against the hand-tuned configurations", ""]
    md.append(f"Study `{study.study_name}` ({s.get('study_file')}, space {s.get('space_file')}): sampler "
              f"{s.get('sampler')}, pruner {s.get('pruner')}, objectives {', '.join(s.get('objectives', []))}; "
              f"trials: {counts_line(study)}. Tuned on a validation split of {s.get('split', {}).get('n_train')} / "
              f"{s.get('split', {}).get('n_eval')} {name_of(s.get('split', {}).get('dataset'))} samples.")
    md.append("")
    md += paper_section(study_paper(study_attrs(study)), s.get("tables") or [])
    md.append("## Test-set comparison")
    if result:
        headers, rows = table_rows(result)
        md += ["", (f"{result['dataset']} test accuracy over seeds {result['seeds']} "
                    f"({spread_label(len(result['seeds']))}); difference = "
                   f"automated optimum − re-run. Generated {result['created_at']}, hpo commit {result['git_commit']}."),
               "", _markdown_table(headers, rows), "", "### What the numbers say", ""]
        md += [f"- {line}" for line in result["findings"]]
        if result.get("searches"):
            md += ["", "### The independent searches", "",
                   ("Each search is the same study with its own name and seed (`hpo study NAME --search K`: "
                    "seed + K - 1, for its sampler and its trials); its best trial re-trained on the seeds above."),
                   "",
                   _markdown_table(["search", "study", "best trial", "validation", "test (re-trained)",
                                    "configuration"],
                                   [[str(r["search"]), r["study"], str(r["trial"]), pct(r["val_accuracy"]),
                                     pm_stats(r["stats"]), r["note"]] for r in result["searches"]["rows"]])]
        md += ["", "### Protocol assumptions", "",
               ("The paper leaves these out; each is an explicit, configurable assumption "
                "(the paper file's `protocol`, overridden under `baselines.protocol` in the study file)."), ""]
        md += [f"- **{p['key']}** = {p['value']}: {p['reason']}" for p in result["protocol"]]
    else:
        md += ["", (f"Not run yet: `hpo compare {_compare_args(study)}` re-runs the paper's "
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
    legend = ("Left, every completed trial; right, a close-up of the paper's configurations and the optimum. One "
              "colour per paper configuration: star, what the paper reports; diamond, what it reached here "
              "(validation); square, its test re-run (bar: ± std from 3 seeds, else the seeds' range; dots: the "
              "seeds). Green: the automated optimum." if close_up else
              "Every completed trial (validation); green: the automated optimum, with its test re-run once `hpo "
              "compare` has run (bar: ± std from 3 seeds, else the seeds' range; dots: the seeds).")
    md += ["", f"### {title}", "", legend + " Trials far below are drawn on the lower edge.", "",
           f"![accuracy against parameter count]({pngs['params'].name})", "", "### Validation curves", "",
           f"![validation curves]({pngs['curves'].name})", "", "## Trials (validation)", ""]
    trials_title, trials_columns, trials_rows = summary_rows(study)
    md += [f"{trials_title}.", "", _markdown_table(trials_columns, trials_rows), ""]  # the name as written
    for section in report_sections(study, folder):
        md += [section, ""]
    path = folder / f"report{suffix}.md"
    path.write_text("\n".join(md))
    if is_persistent(study):  # an in-memory study has no dashboard to show it
        # Every picture the report links to (its own and the activation sections'), once each, in order.
        linked = dict.fromkeys(re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", "\n".join(md)))
        pictures = [folder / name for name in linked if (folder / name).is_file()]
        dashboard_note(study, result, warnings, pictures, path, artifacts)
    return path


def _compare_args(study) -> str:
    """What `hpo compare` needs for this study: its name, and --smoke for a smoke study."""
    name = study.user_attrs.get("hpo_study", study.study_name)
    return f"{name} --smoke" if study.study_name.endswith("-smoke") else name


def paper_section(paper, tables: list) -> list[str]:
    """The paper as its file states it: title, citation, and each compared table's rows with their reported
    numbers."""
    if paper is None:
        return []
    md = ["## The paper", "", f"**{paper.title}**" + (f". {paper.citation}" if paper.citation else ""),
          "", f"Data set: {paper.dataset_name}; metric: {paper.metric}; file: `{paper.source}`.", ""]
    for t in tables:
        rows = paper.table(t)
        if not rows:
            continue
        md += [f"Table {t}: {paper.captions.get(t, '')}", "",
               _markdown_table(["configuration", "reported", "note"],
                               [[r.name, pct(r.reported), r.note] for r in rows]), ""]
    return md


def dashboard_note(study, result: dict | None, warnings: list[str], pictures: list[Path], report: Path,
                   artifacts: str | None = None) -> None:
    """The study's note in optuna-dashboard: the comparison table, the findings, the protocol assumptions and the
    boundary warnings, with the report's pictures uploaded as study artifacts and embedded; and the plotly chart
    of accuracy against parameter count. A failure here warns in one line and leaves report.md as it is."""
    try:
        store = open_store(artifact_dir(study_url(study), artifacts))
    except HpoError as e:  # e.g. a folder that cannot be made: the note goes without pictures
        warn("the report's pictures were not uploaded", e, f"study {study.study_name}: ")
        store = None
    s = study_attrs(study)

    def compose(urls: dict[str, str]) -> str:
        md = [f"## {study.study_name}: automated search against the hand-tuned configurations", "",
              f"Trials: {counts_line(study)}. Tuned on {s.get('split', {}).get('n_train')} / "
              f"{s.get('split', {}).get('n_eval')} {name_of(s.get('split', {}).get('dataset'))} samples (validation). "
              f"The full report: `{report}`.", ""]
        if result:
            headers, rows = table_rows(result)
            md += [f"### Test-set comparison: {result['dataset']}, seeds {result['seeds']}", "",
                   _markdown_table(headers, rows), "", "### What the numbers say", ""]
            md += [f"- {line}" for line in result["findings"]]
            md += ["", "### Protocol assumptions", ""]
            md += [f"- **{p['key']}** = {p['value']}: {p['reason']}" for p in result["protocol"]]
        else:
            md += [f"Not compared on the test set yet: `hpo compare {_compare_args(study)}`.", ""]
        md += ["", "### Search-space boundaries", ""]
        md += [f"> **Warning:** {w}\n" for w in warnings] or ["The best trial lies inside its search space."]
        md += ["", "### Pictures", ""]
        if urls:
            md += [f"![{name}]({url})\n" for name, url in urls.items()]
        else:
            md.append(f"In `{report.parent}` (no artifact folder for this storage: pass --artifacts PATH to "
                      f"`hpo report` and `hpo dashboard`).")
        return "\n".join(md)

    publish_report(study, pictures, compose, store)
    try:
        save_params_chart(study, result)
    except Exception as e:  # the chart is a view; report.md is the record
        warn("the dashboard chart was not saved", e, f"study {study.study_name}: ")


def report_study(name: str, *, storage: str | None = None, smoke: bool = False, out: str | Path | None = None,
                 artifacts: str | None = None) -> Path:
    """Re-write the report (and the study's dashboard note) from the storage and the last compare.json,
    without re-running anything."""
    study = open_study(name, storage, smoke)
    artifact_dir(study_url(study), artifacts)  # a bad --artifacts is one line, before anything is written
    complete_trials(study)
    folder = Path(out) if out else Path("runs") / study.study_name
    raw = folder / "compare.json"
    result = json.loads(raw.read_text()) if raw.is_file() else None
    return write_report(study, result, folder, artifacts=artifacts)


"""The report's activation sections: accuracy by activation (when a study varies it), learned mixing weights
against Bansal 2022's (when a trial has a mix layer), and dead units per layer; markdown with PNGs."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.ticker import PercentFormatter
from rich.table import Table

from hpo.display import describe_config, spread
from hpo.plotting import plt, save
from hpo.search.papers import Paper, load_paper, study_paper
from hpo.sources import name_of
from hpo.stats import mean_sd
from hpo.training.activations import Mix
from hpo.trials import completed, study_attrs

BASIS = Mix.BASIS


# The shipped paper whose learned mixing weights a mix run is shown beside when its study names no paper of its own.
MIX_PAPER = "bansal_2022"


def paper_mix(paper: Paper | None, dataset) -> tuple | None:
    """A paper's learned mixing weights for this data set (one P per layer), if it reports them."""
    return paper.mix_weights.get(name_of(dataset)) if paper else None


def p_summary(runs: Sequence[dict], paper_p: Sequence | None = None) -> list[dict]:
    """Per mix layer: mean and std (over runs) of each P component, beside the paper's row (`paper_p`)."""
    n_layers = max((len(r["mix_p"]) for r in runs if r.get("mix_p")), default=0)
    rows = []
    for layer in range(n_layers):
        ps = [r["mix_p"][layer] for r in runs if r.get("mix_p") and layer < len(r["mix_p"])
              and r["mix_p"][layer] is not None]
        if not ps:
            continue
        cols = list(zip(*ps))
        rows.append({
            "layer": layer + 1, "n": len(ps),
            "mean": [mean_sd(c)[0] for c in cols],
            "std": [mean_sd(c, one=float("nan"))[1] for c in cols],
            "values": ps,
            "paper": list(paper_p[layer]) if paper_p and layer < len(paper_p) else None,
        })
    return rows



def _p_cell(row: dict, i: int) -> str:
    """One P component over the runs, in the words their number allows (display.spread)."""
    values = [p[i] for p in row["values"]]
    return spread(row["mean"][i], row["std"][i], row["n"], min(values), max(values))


def p_table(summary: list[dict], title: str):
    """The P comparison as a rich table (for the terminal)."""
    table = Table(title=title, title_justify="left")
    table.add_column("layer", justify="right")
    table.add_column("runs", justify="right")
    for b in BASIS:
        table.add_column(f"P_{b} ours", justify="right")
        table.add_column("paper", justify="right")
    for row in summary:
        cells = []
        for i in range(3):
            cells += [_p_cell(row, i), f"{row['paper'][i]:.4f}" if row["paper"] else "-"]
        table.add_row(str(row["layer"]), str(row["n"]), *cells)
    return table



# --- report sections ----------------------------------------------------------------------------


def _label(config: dict) -> str:
    act = config.get("activation", "relu")
    if isinstance(act, str):
        return act
    return act[0] if len(set(act)) == 1 else "/".join(act)


def _key(config: dict, drop: Sequence[str]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True)


def report_sections(study, outdir: str | Path, link_prefix: str = "") -> list[str]:
    """Markdown sections for runs/NAME/report.md: accuracy by activation (when the study varies it), learned
    mixing weights vs the paper (when any trial has a mix layer), dead units per layer. PNGs go to outdir;
    image links are `link_prefix + file name` (relative to where the report is written)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    trials = completed(study)
    sections = [_accuracy_section(study, trials, outdir, link_prefix), _mix_section(study, trials, outdir, link_prefix),
                _dead_section(study, trials, outdir, link_prefix)]
    return [s for s in sections if s]


def _accuracy_section(study, trials, outdir: Path, link: str) -> str | None:
    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(_label(t.user_attrs.get("config", {})), []).append(t)
    if len(groups) < 2:
        return None
    rows = []
    for label, ts in groups.items():
        accs = [t.values[0] for t in ts]
        same = len({_key(t.user_attrs.get("config", {}), ("seed",)) for t in ts}) == 1
        dead = [t.user_attrs.get("dead_units") for t in ts if t.user_attrs.get("dead_units")]
        dead_mean = [statistics.fmean(c) for c in zip(*dead)] if dead else []
        rows.append((label, accs, same, dead_mean))
    rows.sort(key=lambda r: -statistics.fmean(r[1]))
    lines = ["## Accuracy by activation", "",
             (f"Validation accuracy of every complete trial of `{study.study_name}`, grouped by activation. "
              "`spread over` says whether a group's trials differ only in their seed (a spread over seeds) or "
              "also in other hyperparameters. Validation data is the tuning split; `hpo compare` re-runs on the "
              "test set."), "",
             "| activation | runs | val acc mean ± std (3+ runs) | min | max | spread over "
             "| dead units per layer (mean) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for label, accs, same, dead_mean in rows:
        lines.append(f"| {label} | {len(accs)} | {spread(*mean_sd(accs), len(accs))} | {min(accs):.4f} | "
                     f"{max(accs):.4f} | {'-' if len(accs) == 1 else 'seeds' if same else 'trials'} | "
                     f"{' / '.join(f'{d:.1%}' for d in dead_mean) or '-'} |")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 3.8))
    for i, (_, accs, _, _) in enumerate(rows):
        jitter = [i + 0.08 * ((j % 5) - 2) for j in range(len(accs))]
        ax.scatter(jitter, accs, s=14, color="tab:blue", alpha=0.7, zorder=3)
        mean, std = mean_sd(accs)
        ax.errorbar([i + 0.3], [mean], yerr=[std], fmt="o", color="black", capsize=4, ms=4)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy by activation (dots: runs; bar: mean ± std)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    save(fig, outdir / "accuracy_by_activation.png")
    lines += ["", f"![accuracy by activation]({link}accuracy_by_activation.png)"]
    return "\n".join(lines)


def _epochs(n) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _mix_section(study, trials, outdir: Path, link: str) -> str | None:
    stored = study.user_attrs.get("mix_seed_runs")
    with_mix = [t for t in trials if any(p is not None for p in t.user_attrs.get("mix_p") or [])]
    if stored and stored.get("runs"):
        runs, config = stored["runs"], stored.get("config", {})
        source = (f"trial {stored.get('trial')}'s configuration retrained with seeds "
                  f"{', '.join(str(r['seed']) for r in runs)} (`hpo activations --study {study.study_name} "
                  f"--mix-seeds {len(runs)}`)")
    elif with_mix:
        best = max(with_mix, key=lambda t: t.values[0])
        config = best.user_attrs.get("config", {})
        key = _key(config, ("seed",))
        same = [t for t in with_mix if _key(t.user_attrs.get("config", {}), ("seed",)) == key]
        runs = sorted(({"seed": t.user_attrs["config"].get("seed"), "accuracy": t.values[0],
                        "mix_p": t.user_attrs["mix_p"]} for t in same),
                      key=lambda r: (r["seed"] is None, r["seed"] or 0))
        source = (f"the best mix configuration's {len(runs)} trial(s) in the study, differing only in seed "
                  f"({', '.join(str(r['seed']) for r in runs)})")
        if len(runs) < 2:
            source += (f"; one seed gives no spread: run `hpo activations --study {study.study_name} --mix-seeds 5`"
                       " to retrain it with five")
    else:
        return None
    attrs = study_attrs(study)
    paper = study_paper(attrs) or load_paper(MIX_PAPER)
    summary = p_summary(runs, paper_mix(paper, (attrs.get("split") or {}).get("dataset")))
    if not summary:
        return None
    model = config.get("model", "mlp")
    widths = config.get("widths", [])
    title = paper.title.split(",")[0] if paper else "the paper"
    lines = [f"## Learned mixing weights vs {title}", "",
             f"A(x) = P_relu relu(x) + P_tanh tanh(x) + P_sin sin(x) per activation layer; P = w / sum(w), "
             f"w >= 0. Source: {source}. Configuration: {model} {widths}, "
             + (f"three cycles of {_epochs(config.get('cycle_epochs'))} (lr {config.get('lr')}, mixing lr "
                f"{config.get('mix_lr')})" if config.get("cycle_epochs") else f"{_epochs(config.get('epochs'))}, "
                "mixing weights trained jointly with the network") + ".", ""]
    dataset = name_of((attrs.get("split") or {}).get("dataset"))
    if paper_mix(paper, dataset) is None:
        lines += [f"Note: {title} reports no mixing weights for {dataset}: no paper column below.", ""]
    if not (model == "cnn" and len(widths) == 3):
        lines += [("Note: the paper's rows are for its CNN (two conv + two fully connected layers, three "
                   "activation layers); this network differs, so layers are matched by position only."), ""]
    lines += [("| layer | runs | P_relu (ours) | P_relu (paper) | P_tanh (ours) | P_tanh (paper) | P_sin (ours) | "
               "P_sin (paper) | largest: ours / paper |"),
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in summary:
        cells = []
        for i in range(3):
            cells += [_p_cell(row, i), f"{row['paper'][i]:.4f}" if row["paper"] else "-"]
        ours = BASIS[max(range(3), key=lambda i: row["mean"][i])]
        paper = BASIS[max(range(3), key=lambda i: row["paper"][i])] if row["paper"] else "-"
        lines.append(f"| {row['layer']} | {row['n']} | " + " | ".join(cells) + f" | {ours} / {paper} |")
    accs = [r["accuracy"] for r in runs if r.get("accuracy") is not None]
    if accs:
        lines += ["", f"Validation accuracy of these runs: {spread(*mean_sd(accs), len(accs), min(accs), max(accs))}."]

    fig, axes = plt.subplots(1, len(summary), figsize=(3.4 * len(summary), 3.2), squeeze=False, sharey=True)
    for ax, row in zip(axes.flat, summary):
        xs = range(3)
        ax.bar([x - 0.2 for x in xs], row["mean"], width=0.4, color="tab:blue", label="ours (mean)",
               yerr=[0 if math.isnan(s) else s for s in row["std"]], capsize=3)
        for vals in row["values"]:
            ax.scatter([x - 0.2 for x in xs], vals, s=8, color="black", zorder=3)
        if row["paper"]:
            ax.bar([x + 0.2 for x in xs], row["paper"], width=0.4, color="tab:orange", label="paper (FMNIST)")
        ax.set_xticks(list(xs), list(BASIS))
        ax.set_title(f"layer {row['layer']}", fontsize=9)
        ax.set_ylim(0, 1)
    axes.flat[0].set_ylabel("P")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{study.study_name}: learned mixing weights P per layer (dots: runs)", fontsize=9)
    save(fig, outdir / "mix_weights.png")
    lines += ["", f"![learned mixing weights]({link}mix_weights.png)"]
    return "\n".join(lines)


# Below this mean dead fraction in every layer, the dead-units picture is left out and the report says so.
DEAD_WORTH_DRAWING = 0.01


def _dead_section(study, trials, outdir: Path, link: str) -> str | None:
    with_dead = [t for t in trials if t.user_attrs.get("dead_units")]
    if not with_dead:
        return None
    groups: dict[str, list] = {}
    for t in with_dead:
        groups.setdefault(_label(t.user_attrs.get("config", {})), []).append(t)
    depth = max(len(t.user_attrs["dead_units"]) for t in with_dead)
    lines = ["## Dead units", "",
             ("Fraction of units per hidden activation layer that output exactly 0 for every validation sample "
              "(a conv layer's unit is a channel). Mean over the complete trials of each activation."), "",
             "| activation | trials | " + " | ".join(f"layer {i + 1}" for i in range(depth))
             + " | trials with a dead unit |",
             "|---|---:|" + "---:|" * depth + "---:|"]
    means = {}
    for label, ts in sorted(groups.items()):
        per_layer = []
        for i in range(depth):
            vals = [t.user_attrs["dead_units"][i] for t in ts if i < len(t.user_attrs["dead_units"])]
            per_layer.append(statistics.fmean(vals) if vals else None)
        means[label] = per_layer
        any_dead = sum(any(v > 0 for v in t.user_attrs["dead_units"]) for t in ts)
        lines.append(f"| {label} | {len(ts)} | " + " | ".join("-" if v is None else f"{v:.1%}" for v in per_layer)
                     + f" | {any_dead} |")
    worst = sorted(with_dead, key=lambda t: -max(t.user_attrs["dead_units"]))[:5]
    if worst and max(worst[0].user_attrs["dead_units"]) > 0:
        lines += ["", "Trials with the most dead units:", "", "| trial | configuration | val acc | dead per layer |",
                  "|---:|---|---:|---|"]
        for t in worst:
            if max(t.user_attrs["dead_units"]) <= 0:
                break
            config = describe_config(t.user_attrs.get("config", {}), t.user_attrs.get("io"))
            lines.append(f"| {t.number} | {config} | {t.values[0]:.4f} | "
                         + " / ".join(f"{v:.1%}" for v in t.user_attrs["dead_units"]) + " |")
    largest = max((v or 0.0) for m in means.values() for v in m)
    picture = outdir / "dead_units.png"
    picture.unlink(missing_ok=True)  # never leave an earlier run's picture behind the words that there is none
    if len(means) < 2 or largest < DEAD_WORTH_DRAWING:
        # Bars of a few tenths of a percent, or one activation's bars beside its own table row, tell nothing.
        why = (f"every mean stays below {DEAD_WORTH_DRAWING:.0%}" if largest < DEAD_WORTH_DRAWING
               else "one activation only, and the table holds its numbers")
        lines += ["", f"No picture: {why}."]
        return "\n".join(lines)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(means) * depth / 2 + 3), 3.4))
    width = 0.8 / depth
    labels = list(means)
    for i in range(depth):
        ax.bar([j + (i - (depth - 1) / 2) * width for j in range(len(labels))],
               [(means[lab][i] or 0.0) for lab in labels], width=width, label=f"layer {i + 1}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("dead units (mean over trials)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, largest * 1.15)
    ax.legend(fontsize=7)
    ax.set_title(f"{study.study_name}: dead units per layer", fontsize=9)
    save(fig, picture)
    lines += ["", f"![dead units]({link}dead_units.png)"]
    return "\n".join(lines)


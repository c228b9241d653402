"""What a trained network's activations did: dead units, learned mixing weights, and the report sections.

Dead units (the dying-ReLU problem): per activation layer, the fraction of units whose output is exactly zero
for every validation sample. A unit is a feature of a fully connected layer and a channel (over all positions)
of a conv layer. Only rectifiers produce exact zeros; smooth activations are essentially never dead.

Learned mixing weights: per `mix` layer, P = (P_relu, P_tanh, P_sin), compared with Bansal 2022's
Fashion-MNIST rows over several seeds.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from hpo.activations import PAPER_MIX_FMNIST, Mix, activation_layers, mix_p
from hpo.data import Splits
from hpo.errors import StudyError
from hpo.train import TrainConfig, train

BASIS = Mix.BASIS


@torch.inference_mode()
def dead_units(model: nn.Module, x: torch.Tensor, chunk: int = 1024) -> list[float]:
    """Per activation layer, in forward order: the fraction of units that output 0 for every row of x."""
    layers = activation_layers(model)
    alive: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i: int):
        def record(module, inputs, out):
            # units: features of (N, F); channels of (N, C, H, W), over every position
            nonzero = out.transpose(0, 1).reshape(out.shape[1], -1).ne(0).any(1)
            alive[i] = nonzero if alive[i] is None else alive[i] | nonzero
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [round(1.0 - a.float().mean().item(), 5) if a is not None else 0.0 for a in alive]


def trial_attrs(model: nn.Module, x: torch.Tensor) -> dict:
    """What the objective records on every trial: dead_units, and mix_p when any layer is a mix."""
    attrs: dict = {"dead_units": dead_units(model, x)}
    p = mix_p(model)
    if any(v is not None for v in p):
        attrs["mix_p"] = p
    return attrs


# --- learned P over several seeds ---------------------------------------------------------------


def mix_over_seeds(config: dict, splits: Splits, seeds: Iterable[int], *, threads: int | None = None,
                   on_run: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one configuration once per seed; per run: seed, status, accuracy, mix_p, dead_units."""
    runs = []
    for seed in seeds:
        tc = TrainConfig.from_dict({**config, "seed": seed})
        r = train(tc, splits, threads=threads)
        run = {"seed": seed, "status": r.status, "accuracy": round(r.eval_acc, 5), "mix_p": mix_p(r.model),
               "dead_units": dead_units(r.model, splits.eval_x)}
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return runs


def p_summary(runs: Sequence[dict]) -> list[dict]:
    """Per mix layer: mean and std (over runs) of each P component, beside the paper's FMNIST row."""
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
            "mean": [statistics.fmean(c) for c in cols],
            "std": [statistics.stdev(c) if len(c) > 1 else float("nan") for c in cols],
            "values": ps,
            "paper": list(PAPER_MIX_FMNIST[layer]) if layer < len(PAPER_MIX_FMNIST) else None,
        })
    return rows


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def p_table(summary: list[dict], title: str):
    """The P comparison as a rich table (for the terminal)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("layer", justify="right")
    table.add_column("runs", justify="right")
    for b in BASIS:
        table.add_column(f"P_{b} ours", justify="right")
        table.add_column("paper", justify="right")
    for row in summary:
        cells = []
        for i in range(3):
            cells += [_pm(row["mean"][i], row["std"][i]), f"{row['paper'][i]:.4f}" if row["paper"] else "-"]
        table.add_row(str(row["layer"]), str(row["n"]), *cells)
    return table


def best_mix_trial(study):
    """The best complete trial that has a mix layer; StudyError when there is none."""
    from optuna.trial import TrialState

    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if any(p is not None for p in t.user_attrs.get("mix_p") or [])]
    if not candidates:
        raise StudyError(f"study {study.study_name!r} has no complete trial with a `mix` activation layer")
    return max(candidates, key=lambda t: t.values[0])


def run_mix_seeds(study_name: str, n_seeds: int, *, storage: str | None = None, smoke: bool = False,
                  console=None) -> list[dict]:
    """`hpo activations --study NAME --mix-seeds N`: retrain the study's best mix configuration with seeds
    0..N-1 on the study's own split and store the runs on the study (user attr `mix_seed_runs`) for the report.
    --smoke: a few thousand samples and one epoch per cycle, printed but not stored."""
    import optuna

    from hpo import data as data_mod
    from hpo.runner import SMOKE_EVAL, SMOKE_TRAIN
    from hpo.study import open_storage, redact, storage_url

    if n_seeds < 1:
        raise StudyError("--mix-seeds: must be a positive number")
    url = storage_url(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat=False))
    except KeyError:
        raise StudyError(f"no study named {study_name!r} in {redact(url)}; run `hpo study NAME` first") from None
    best = best_mix_trial(study)
    config = dict(best.user_attrs["config"])
    split = study.user_attrs.get("split") or {}
    if not split.get("dataset"):
        raise StudyError(f"study {study_name!r} does not record its data split (user attr `split`)")
    if smoke:
        config.update(epochs=1, cycle_epochs=min(config.get("cycle_epochs", 0), 1))
    threads = ((study.user_attrs.get("study_yaml") or {}).get("budget") or {}).get("threads")
    splits = data_mod.make_splits(data_mod.load(split["dataset"]), val_size=split.get("val_size") or 10000,
                                  seed=split.get("split_seed") or 0, train_limit=SMOKE_TRAIN if smoke else None,
                                  eval_limit=SMOKE_EVAL if smoke else None)

    def show(run: dict) -> None:
        if console is not None:
            p = "  ".join("-" if v is None else "/".join(f"{x:.3f}" for x in v) for v in run["mix_p"])
            console.print(f"seed {run['seed']}: {run['status']} val acc {run['accuracy']:.4f}  P per layer {p}")

    if console is not None:
        console.print(f"retraining trial {best.number} of {study_name} (val acc {best.values[0]:.4f}) with "
                      f"seeds 0..{n_seeds - 1}{' at smoke scale' if smoke else ''}")
    runs = mix_over_seeds(config, splits, range(n_seeds), threads=threads, on_run=show)
    if console is not None:
        console.print(p_table(p_summary(runs), f"{study_name}: learned P per layer over {n_seeds} seeds "
                                               f"vs Bansal 2022 (Fashion-MNIST)"))
    if not smoke:
        study.set_user_attr("mix_seed_runs", {"trial": best.number, "config": config, "runs": runs})
    return runs


# --- report sections ----------------------------------------------------------------------------


def _label(config: dict) -> str:
    act = config.get("activation", "relu")
    if isinstance(act, str):
        return act
    return act[0] if len(set(act)) == 1 else "/".join(act)


def _key(config: dict, drop: Sequence[str]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True)


def _complete(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_sections(study, outdir: str | Path, link_prefix: str = "") -> list[str]:
    """Markdown sections for runs/NAME/report.md: accuracy by activation (when the study varies it), learned
    mixing weights vs the paper (when any trial has a mix layer), dead units per layer. PNGs go to outdir;
    image links are `link_prefix + file name` (relative to where the report is written)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    trials = _complete(study)
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
             "| activation | runs | val acc mean ± std | min | max | spread over | dead units per layer (mean) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for label, accs, same, dead_mean in rows:
        std = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        lines.append(f"| {label} | {len(accs)} | {_pm(statistics.fmean(accs), std)} | {min(accs):.4f} | "
                     f"{max(accs):.4f} | {'-' if len(accs) == 1 else 'seeds' if same else 'trials'} | "
                     f"{' / '.join(f'{d:.1%}' for d in dead_mean) or '-'} |")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 3.8))
    for i, (_, accs, _, _) in enumerate(rows):
        jitter = [i + 0.08 * ((j % 5) - 2) for j in range(len(accs))]
        ax.scatter(jitter, accs, s=14, color="tab:blue", alpha=0.7, zorder=3)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ax.errorbar([i + 0.3], [statistics.fmean(accs)], yerr=[std], fmt="o", color="black", capsize=4, ms=4)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy by activation (dots: runs; bar: mean ± std)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(outdir / "accuracy_by_activation.png", dpi=110)
    plt.close(fig)
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
    summary = p_summary(runs)
    if not summary:
        return None
    model = config.get("model", "mlp")
    widths = config.get("widths", [])
    lines = ["## Learned mixing weights vs Bansal 2022", "",
             f"A(x) = P_relu relu(x) + P_tanh tanh(x) + P_sin sin(x) per activation layer; P = w / sum(w), "
             f"w >= 0. Source: {source}. Configuration: {model} {widths}, "
             + (f"three cycles of {_epochs(config.get('cycle_epochs'))} (lr {config.get('lr')}, mixing lr "
                f"{config.get('mix_lr')})" if config.get("cycle_epochs") else f"{_epochs(config.get('epochs'))}, "
                "mixing weights trained jointly with the network") + ".", ""]
    dataset = (study.user_attrs.get("split") or {}).get("dataset")
    if dataset and dataset != "fashion_mnist":
        lines += [f"Note: this study trains on {dataset}; the paper's rows below are its Fashion-MNIST ones.", ""]
    if not (model == "cnn" and len(widths) == 3):
        lines += [("Note: the paper's rows are for its CNN (two conv + two fully connected layers, three "
                   "activation layers); this network differs, so layers are matched by position only."), ""]
    lines += [("| layer | runs | P_relu (ours) | P_relu (paper) | P_tanh (ours) | P_tanh (paper) | P_sin (ours) | "
               "P_sin (paper) | largest: ours / paper |"),
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in summary:
        cells = []
        for i in range(3):
            cells += [_pm(row["mean"][i], row["std"][i]), f"{row['paper'][i]:.4f}" if row["paper"] else "-"]
        ours = BASIS[max(range(3), key=lambda i: row["mean"][i])]
        paper = BASIS[max(range(3), key=lambda i: row["paper"][i])] if row["paper"] else "-"
        lines.append(f"| {row['layer']} | {row['n']} | " + " | ".join(cells) + f" | {ours} / {paper} |")
    accs = [r["accuracy"] for r in runs if r.get("accuracy") is not None]
    if accs:
        spread = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        lines += ["", f"Validation accuracy of these runs: {_pm(statistics.fmean(accs), spread)}."]

    plt = _plt()
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
    fig.tight_layout()
    fig.savefig(outdir / "mix_weights.png", dpi=110)
    plt.close(fig)
    lines += ["", f"![learned mixing weights]({link}mix_weights.png)"]
    return "\n".join(lines)


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
        from hpo.runner import describe_config

        lines += ["", "Trials with the most dead units:", "", "| trial | configuration | val acc | dead per layer |",
                  "|---:|---|---:|---|"]
        for t in worst:
            if max(t.user_attrs["dead_units"]) <= 0:
                break
            lines.append(f"| {t.number} | {describe_config(t.user_attrs.get('config', {}))} | {t.values[0]:.4f} | "
                         + " / ".join(f"{v:.1%}" for v in t.user_attrs["dead_units"]) + " |")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(means) * depth / 2 + 3), 3.4))
    width = 0.8 / depth
    labels = list(means)
    for i in range(depth):
        ax.bar([j + (i - (depth - 1) / 2) * width for j in range(len(labels))],
               [(means[lab][i] or 0.0) for lab in labels], width=width, label=f"layer {i + 1}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("dead fraction")
    ax.set_ylim(0, max(0.05, max((v or 0) for m in means.values() for v in m) * 1.15))
    ax.legend(fontsize=7)
    ax.set_title(f"{study.study_name}: dead units per layer", fontsize=9)
    fig.tight_layout()
    fig.savefig(outdir / "dead_units.png", dpi=110)
    plt.close(fig)
    lines += ["", f"![dead units]({link}dead_units.png)"]
    return "\n".join(lines)

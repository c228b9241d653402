"""`hpo bench` item 7 (and `python -m hpo.bench.quality`): search quality, not only search speed.

A study as shipped, searched several times (sampler seeds 0, 1, 2, ...), each search's best re-trained over
seeds on the full training set and scored on the test set, against a strong hand configuration of the same
space re-trained the same way in the same run. Variants change the study file before it runs (for instance
`pruner_step: epoch` against the shipped `percent`), so that a change to the search is measured over several
searches, not one.

Each search is also diagnosed (`diagnose`): which schedules it tried, how many long-schedule trials started,
where the pruner stopped them, and (`finish_pruned`) what a few of the pruned long ones reach when trained to
their end on the same validation split.

Results are written to a JSON file after every search and every re-training, so an interrupted run keeps what it
measured; a second run with the same file continues where it stopped.
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from rich.console import Console

from hpo import data as data_mod
from hpo.api import run_study
from hpo.errors import HpoError
from hpo.plotting import plt, save
from hpo.provenance import ROOT
from hpo.results.export import load_config
from hpo.results.retrain import run_seeds, stats
from hpo.search.files import resolve_file
from hpo.search.studyfile import load_study
from hpo.stats import mean_sd
from hpo.training.loop import train
from hpo.training.spec import TrainConfig
from hpo.trials import best_trials, completed, confirmed, is_confirmation, score, searched

STUDY = "relu3_adam"
# A careful person's third try inside relu3_adam's space, no search: its edges (the widest layers), a long cosine
# schedule and light regularisation (issue 23: 89.43 ± 0.34% in an independent plain-PyTorch loop). A file that
# `hpo train` reads as it is.
HAND = {"relu3_adam": ROOT / "docs" / "relu3_adam_hand.yaml"}
VARIANTS = {  # name: what it changes in the study file
    "shipped": {},
    "epoch_steps": {"pruner_step": "epoch"},
    "percent_steps": {"pruner_step": "percent"},
    "no_pruning": {"pruner": "none"},
    "gp": {"sampler": "gp"},
    "tpe_start20": {"sampler_options": {"n_startup_trials": 20}},
    "tpe_independent": {"sampler_options": {"multivariate": False, "group": False}},
    # more trials in about the same wall time: 2 workers of 1 thread run 1.72x the trials per hour (bench item 3);
    # what relu3_adam ships with since 2026-12-05, kept by name for the measurement that chose it
    "trials100_workers2": {"n_trials": 100, "workers": 2},
    "no_confirm": {"confirm": None},  # the optimum is the best single run (None: the key is left out)
    # in 30% of TPE's trials one categorical parameter set to its least-tried choice (hpo.search.samplers)
    "explore30": {"sampler_options": {"explore": 0.3}},
    # several trials as one stacked computation, K chosen by timing (README: trial packs): more trials in the budget
    "pack_auto": {"budget": {"pack": "auto"}},
    # batch size as an ordered range (log scale, any integer) rather than five unrelated choices: TPE's numeric
    # estimator can move from 64 towards 128, where its categorical one commits to the choice its best trials had
    "batch_log": {"space": {"batch_size": {"low": 32, "high": 512, "log": True}}},
    # a 40k/20k split instead of 50k/10k: each epoch 20% shorter and the validation score less noisy (a
    # 20k set's sampling std is 0.22 points at 89%, a 10k set's 0.31), so fewer lucky draws win the search
    "val20k": {"split": {"val_size": 20000, "seed": 0}},
    # n_trials out of the way, so that the time budget alone ends the search: searches that settle where trials are
    # fast otherwise end at their 100 trials with a third of the budget left
    "trials300": {"n_trials": 300},
}
MERGED = ("budget",)  # a variant's keys merged into the study file's own mapping rather than replacing it
RUN_KEYS = ("workers",)  # a variant's keys that are `hpo study` options, not study-file keys
LONG = 0.75  # a long schedule: at least this share of the space's largest epoch count


def study_copy(study: str, workdir: Path, seed: int, variant: str) -> Path:
    """The study file with its sampler seed and the variant's changes; named like the study, in a folder named
    by the variant and the seed."""
    changes = {k: v for k, v in VARIANTS[variant].items() if k not in RUN_KEYS}
    path = resolve_file(study, "studies", "study")
    doc = yaml.safe_load(path.read_text())
    out = workdir / f"{variant}-seed{seed}" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(changes.get("space"), dict):  # changes to the search space: a copy of it beside the study's
        space = resolve_file(doc["space"], "search_spaces", "search space", source=str(path), key="space",
                             base=path.parent)
        space_doc = {**yaml.safe_load(space.read_text()), **changes["space"]}
        (out.parent / "space").mkdir(exist_ok=True)
        (out.parent / "space" / space.name).write_text(yaml.safe_dump(space_doc, sort_keys=False))
        changes["space"] = f"space/{space.name}"
    for key in MERGED:
        if key in changes:
            changes[key] = {**doc.get(key, {}), **changes[key]}
    doc.update(seed=seed, **changes)
    doc = {k: v for k, v in doc.items() if v is not None}
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def diagnose(trials: list, max_epochs: int) -> dict:
    """Where the search spent its trials: schedules and epochs tried, long-schedule trials started, pruned (at
    which epoch) and finished."""
    drawn = [t for t in searched(trials) if not t.user_attrs.get("baseline") and "config" in t.user_attrs]
    long = [t for t in drawn if t.user_attrs["config"].get("epochs", 0) >= LONG * max_epochs]
    pruned_long = [t for t in long if t.user_attrs.get("outcome") == "pruned"]
    return {
        "trials": len(drawn),
        "pruned": sum(t.user_attrs.get("outcome") == "pruned" for t in drawn),
        "long_started": len(long),
        "long_pruned": len(pruned_long),
        "long_pruned_at": sorted(t.user_attrs.get("epochs_trained", 0) for t in pruned_long),
        "long_finished": sum(t.user_attrs.get("outcome") == "complete" for t in long),
        "schedules": {s: sum(t.user_attrs["config"].get("schedule") == s for t in drawn)
                      for s in ("constant", "cosine", "onecycle")},
        "epochs_trained": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
    }


def confirm_seconds(trials: list) -> float:
    """Wall time of the confirmation phase: its first run's start to its last run's end (0 without one)."""
    runs = [t for t in trials if is_confirmation(t) and t.datetime_complete]
    if not runs:
        return 0.0
    return round((max(t.datetime_complete for t in runs) - min(t.datetime_start for t in runs)).total_seconds(), 1)


def trial_rows(trials: list) -> list[list]:
    """[number, planned epochs, epochs trained, outcome, baseline] per trial: what the picture draws."""
    return [[t.number, t.user_attrs["config"].get("epochs", 0), t.user_attrs.get("epochs_trained", 0),
             t.user_attrs.get("outcome") or "", bool(t.user_attrs.get("baseline"))]
            for t in trials if "config" in t.user_attrs]


def picture(r: dict, path: Path) -> Path:
    """Where each search spent its epochs: one panel per search (rows: sampler seeds, columns: variants), a bar per
    trial to its planned epochs, filled to the epochs it trained (green: complete, red: pruned, grey: other)."""
    variants = list(dict.fromkeys(x["variant"] for x in r["searches"]))
    seeds = sorted({x["seed"] for x in r["searches"]})
    fig, axes = plt.subplots(len(seeds), len(variants), figsize=(4.2 * len(variants), 2.2 * len(seeds)),
                             squeeze=False, sharey=True)
    colours = {"complete": "tab:green", "pruned": "tab:red"}
    drawn = {(seeds.index(x["seed"]), variants.index(x["variant"])) for x in r["searches"]}
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            if (i, j) not in drawn:  # a search not run (yet)
                ax.axis("off")
    for x in r["searches"]:
        ax = axes[seeds.index(x["seed"])][variants.index(x["variant"])]
        rows = x.get("trials") or []
        ax.bar([n for n, *_ in rows], [p for _, p, *_ in rows], color="0.88", width=0.8)
        ax.bar([n for n, *_ in rows], [e for _, _, e, *_ in rows], width=0.8,
               color=[colours.get(o, "0.5") if not b else "tab:blue" for *_, o, b in rows])
        epochs = sum(e for _, _, e, *_ in rows)
        ax.set_title(f"{x['variant']}, seed {x['seed']}: test {100 * x['test']['mean']:.2f}%, {epochs} epochs",
                     fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.tick_params(labelsize=7)
    for i, row in enumerate(axes):  # the first panel drawn in each row carries the y axis (sharey hides the rest)
        first = min((j for j in range(len(row)) if (i, j) in drawn), default=0)
        row[first].set_ylabel("epochs", fontsize=8)
        row[first].tick_params(labelleft=True)
    fig.suptitle(f"{r['study']}: planned epochs (grey) and epochs trained (green complete, red pruned, blue the "
                 "paper's rows)", fontsize=9)
    return save(fig, path)


def finish_pruned(trials: list, max_epochs: int, splits, threads: int, k: int) -> list[dict]:
    """The k pruned long-schedule trials that were best when stopped, trained to their end on the same split."""
    long = [t for t in trials if t.user_attrs.get("outcome") == "pruned" and t.user_attrs.get("val_curve")
            and t.user_attrs["config"].get("epochs", 0) >= LONG * max_epochs]
    long.sort(key=lambda t: -t.user_attrs["val_curve"][-1])
    out = []
    for t in long[:k]:
        r = train(TrainConfig.from_dict(t.user_attrs["config"]), splits, threads=threads)
        out.append({"number": t.number, "epochs": t.user_attrs["config"]["epochs"],
                    "pruned_at": t.user_attrs["epochs_trained"], "when_pruned": t.user_attrs["val_curve"][-1],
                    "at_its_end": r.eval_acc})
    return out


def bench_quality(log: Callable[[str], None], workdir: Path, *, study: str = STUDY, searches: int = 3,
                  seeds: int = 3, variants: tuple[str, ...] = ("shipped",), smoke: bool = False, threads: int = 2,
                  finish: int = 0, results: Path | None = None, first: int = 0) -> dict:
    """`searches` searches of `study` per variant, each best re-trained over `seeds` seeds on the test set, and the
    hand configuration re-trained the same way. `finish`: pruned long trials per search trained to their end."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise HpoError(f"--variants: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if study not in HAND:
        raise HpoError(f"--study: no hand configuration for {study!r}; known: {', '.join(HAND)}")
    cfg = load_study(study, smoke=smoke)
    ds = data_mod.load(cfg.dataset)
    limits = {"train_limit": 3000, "eval_limit": 1000} if smoke else {}
    final = data_mod.make_splits(ds, final=True, **limits)
    split = data_mod.make_splits(ds, val_size=cfg.val_size, seed=cfg.split_seed, **limits)
    max_epochs = max(cfg.space.possible("epochs", 10))
    hand = {**load_config(HAND[study]).train.to_dict(active_only=True), **({"epochs": 1} if smoke else {})}
    seed_list = list(range(seeds))
    r = json.loads(results.read_text()) if results and results.exists() else {}
    r.update(study=study, smoke=smoke, seeds=seed_list, hand_config=hand)
    r.setdefault("searches", [])

    def save():
        if results:
            results.write_text(json.dumps(r, indent=1))

    if "hand" not in r:
        log(f"quality: the hand configuration over {seeds} seeds")
        r["hand"] = stats(run_seeds(hand, final, seed_list, threads=threads))
        save()
    for s in range(first, first + searches):  # seed-major: an interrupted run compared the variants on the same seeds
        for variant in variants:
            if any(x["variant"] == variant and x["seed"] == s for x in r["searches"]):
                continue
            path = study_copy(study, workdir, s, variant)
            t0 = time.time()
            st = run_study(str(path), storage=f"sqlite:///{path.parent / 'study.db'}", smoke=smoke,
                           console=Console(file=io.StringIO()), workers=VARIANTS[variant].get("workers"))
            seconds = time.time() - t0
            best = best_trials(st, 1)[0]  # by the mean over runs where the study confirms its top trials
            single = max(searched(completed(st)), key=lambda t: (t.value, -t.number))  # the best single run
            cfg_best = best.user_attrs["config"]
            trials = st.get_trials(deepcopy=False)
            confirms = confirmed(st)
            entry = {"variant": variant, "seed": s, "seconds": round(seconds, 1),
                     "best_val": score(best, confirms), "best_number": best.number, "best_config": cfg_best,
                     "diagnosis": diagnose(trials, max_epochs),
                     "trials": trial_rows(trials), "confirm_seconds": confirm_seconds(trials),
                     "single_number": single.number, "single_val": single.value,
                     "best_runs": confirms.get(best.number, [best.value])}  # its own run first
            log(f"quality: {variant} search {s}: optimum trial {best.number} (validation {entry['best_val']:.4f}, "
                f"{cfg_best.get('epochs')} epochs {cfg_best.get('schedule')}), best single run trial {single.number} "
                f"({single.value:.4f}), in {seconds:.0f} s; re-training")
            entry["test"] = stats(run_seeds(cfg_best, final, seed_list, threads=threads))
            # what the optimum would have been without confirmation, re-trained the same way (paired)
            entry["single_test"] = entry["test"] if single.number == best.number else stats(
                run_seeds(single.user_attrs["config"], final, seed_list, threads=threads))
            if finish:
                entry["finished_pruned"] = finish_pruned(trials, max_epochs, split, threads, finish)
            r["searches"].append(entry)
            save()
    return r


def picture_variants(r: dict, path: Path) -> Path:
    """Each search's optimum on the test set (mean ± std over its re-training seeds), one column per variant, beside
    the hand configuration's band: whether a change to the search moves the optima above the person, over searches.
    Where a study's confirmation chose another trial than its best single run, that run is drawn too (hollow)."""
    variants = list(dict.fromkeys(x["variant"] for x in r["searches"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(variants) + 2), 4.2))
    hand = r["hand"]
    ax.axhspan(100 * (hand["mean"] - hand["std"]), 100 * (hand["mean"] + hand["std"]), color="tab:orange", alpha=0.18,
               lw=0)
    ax.axhline(100 * hand["mean"], color="tab:orange", lw=1.5, label=f"hand configuration: {100 * hand['mean']:.2f}% "
               f"± {100 * hand['std']:.2f}")
    drawn_single = False
    for j, variant in enumerate(variants):
        runs = [x for x in r["searches"] if x["variant"] == variant]
        xs = [j + 0.12 * (k - (len(runs) - 1) / 2) for k in range(len(runs))]
        ax.errorbar(xs, [100 * x["test"]["mean"] for x in runs], yerr=[100 * x["test"]["std"] for x in runs],
                    fmt="o", color="tab:blue", ms=5, capsize=2, label="one search's optimum (± std over seeds)"
                    if j == 0 else None)
        moved = [(xx, x) for xx, x in zip(xs, runs) if "single_test" in x and x["single_number"] != x["best_number"]]
        if moved:  # where confirmation chose another trial: the best single run it passed over, re-trained
            ax.scatter([xx + 0.05 for xx, _ in moved], [100 * x["single_test"]["mean"] for _, x in moved], s=30,
                       facecolors="none", edgecolors="tab:red", zorder=4,
                       label=None if drawn_single else "the best single run, where confirmation chose another")
            drawn_single = True
        mean, _ = mean_sd([x["test"]["mean"] for x in runs])
        ax.plot([j - 0.3, j + 0.3], [100 * mean] * 2, color="black", lw=2,
                label="mean over searches" if j == 0 else None)
    ax.set_xticks(range(len(variants)), [textwrap.fill(v.replace("_", " "), 24) for v in variants], fontsize=8)
    ax.set_ylabel("test accuracy (%), re-trained")
    ax.set_title(f"{r['study']}: each search's optimum against a person's configuration", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def summary(r: dict) -> list[str]:
    """The measured rows as Markdown: the hand configuration, then each variant's searches and their mean. A search
    that confirmed its top trials (study file `confirm`) also shows its best single run, re-trained the same way:
    what its optimum would have been without confirmation."""
    def pm(s):
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}%"

    def single(x):
        if "single_test" not in x:
            return "-"
        return "same trial" if x["single_number"] == x["best_number"] else \
            f"trial {x['single_number']}: {pm(x['single_test'])}"

    lines = ["| who | searches | wall per search | best validation | test (re-trained) | best single run instead "
             "| epochs trained | long trials started / pruned / finished |", "|---|---|---|---|---|---|---|---|",
             f"| hand configuration ({', '.join(f'{k}={v}' for k, v in r['hand_config'].items())}) | - | - | - | "
             f"{pm(r['hand'])} | - | {r['hand_config'].get('epochs', '-')} | - |"]
    for variant in dict.fromkeys(x["variant"] for x in r["searches"]):
        runs = [x for x in r["searches"] if x["variant"] == variant]
        for x in runs:
            d = x["diagnosis"]
            lines.append(f"| {variant}, seed {x['seed']} | 1 | {x['seconds']:.0f} s | {x['best_val']:.4f} | "
                         f"{pm(x['test'])} | {single(x)} | {d['epochs_trained']} | {d['long_started']} / "
                         f"{d['long_pruned']} / {d['long_finished']} |")
        mean, sd = mean_sd([x["test"]["mean"] for x in runs])
        paired = [x for x in runs if "single_test" in x]
        alone = "-"
        if paired:
            m, s_ = mean_sd([x["single_test"]["mean"] for x in paired])
            alone = f"{100 * m:.2f} ± {100 * s_:.2f}% over {len(paired)}"
        lines.append(f"| **{variant}: over searches** | {len(runs)} | "
                     f"{sum(x['seconds'] for x in runs) / len(runs):.0f} s | - | "
                     f"{100 * mean:.2f} ± {100 * sd:.2f}% | {alone} | "
                     f"{sum(x['diagnosis']['epochs_trained'] for x in runs) / len(runs):.0f} | - |")
    return lines


def markdown_quality(r: dict) -> tuple[list[str], list[tuple]]:
    """Item 7's section and its target: the shipped search's optimum, re-trained, against the hand configuration."""
    lines = ["## 7. Search quality: the study's optimum against a person's configuration", "",
             f"`hpo study {r['study']}`, searched with sampler seeds "
             f"{', '.join(map(str, sorted({x['seed'] for x in r['searches']})))} per variant"
             + (" at smoke scale" if r["smoke"] else "")
             + f"; each search's best trial re-trained on the full training set and scored on the test set over "
             f"{len(r['seeds'])} seeds, beside a strong hand configuration of the same space re-trained the same "
             "way. Long trials: at least 3/4 of the space's largest epoch count (hpo/bench/quality.py).", "",
             *summary(r)]
    targets = []
    for variant in dict.fromkeys(x["variant"] for x in r["searches"]):
        means = [x["test"]["mean"] for x in r["searches"] if x["variant"] == variant]
        gap = 100 * (mean_sd(means)[0] - r["hand"]["mean"])
        searches = f"{len(means)} search{'es' if len(means) > 1 else ''}"
        targets.append(("7 search quality", f"{variant}: optimum over {searches} vs the hand configuration "
                        "(test, re-trained)", "≥ +0.00 points", f"{gap:+.2f} points", gap >= 0))
    return lines, targets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpo.bench.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=STUDY)
    p.add_argument("--searches", type=int, default=3)
    p.add_argument("--first", type=int, default=0, help="the first search's sampler seed (then +1, +2, ...)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default="shipped", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--finish", type=int, default=0, help="pruned long trials per search to train to their end")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--results", default="runs/quality.json")
    p.add_argument("--workdir", default="runs/quality")
    a = p.parse_args(argv)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    r = bench_quality(lambda line: print(line, flush=True), Path(a.workdir), study=a.study, searches=a.searches,
                      seeds=a.seeds, variants=tuple(a.variants.split(",")), smoke=a.smoke, finish=a.finish,
                      results=Path(a.results), first=a.first)
    print("\n".join(summary(r)))
    if r["searches"]:
        print(f"wrote {picture(r, Path(a.results).with_suffix('.png'))}")
        print(f"wrote {picture_variants(r, Path(a.results).with_name(Path(a.results).stem + '_variants.png'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

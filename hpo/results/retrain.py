"""`hpo train FILE`: train one exported (or hand-written) config over several seeds, on the full training set
scored on the test set, or on the study's own split to reproduce a trial's validation accuracy; and
`run_seeds`, the runs over seeds that `hpo compare` is made of. Results are plain dicts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hpo import data as data_mod
from hpo.display import describe_config, make_console, spread, spread_label
from hpo.errors import HpoError
from hpo.results.activation_report import MIX_PAPER, p_summary, p_table, paper_mix
from hpo.results.export import load_config
from hpo.search.papers import load_paper
from hpo.stats import mean_sd
from hpo.training.activations import mix_p
from hpo.training.loop import train
from hpo.training.models import accuracy
from hpo.training.runtime import resolve_device
from hpo.training.spec import TrainConfig

# --- runs over seeds ----------------------------------------------------------------------------


def run_seeds(hp: dict, splits, seeds: list[int], *, threads: int | None = None, label: str = "",
              console: Console | None = None, progress=None, task=None) -> list[dict]:
    """Train `hp` once per seed; a diverged run is kept, scored as what its network does (chance)."""
    runs = []
    for s in seeds:
        r = train(TrainConfig.from_dict({**hp, "seed": s}), splits, threads=threads)
        acc = r.eval_acc if r.status == "complete" else accuracy(r.model, splits.eval_x, splits.eval_y)
        run = {"seed": s, "accuracy": acc, "status": r.status, "reason": r.reason, "epochs": r.epochs,
               "seconds": round(r.train_seconds, 2), "curve": [round(a, 5) for a in r.eval_curve]}
        learned = mix_p(r.model)
        if any(p is not None for p in learned):  # a learnable mix: its P per layer too
            run["mix_p"] = learned
        runs.append(run)
        if console is not None:
            flag = f" [red]{r.status}: {r.reason}[/]" if r.status != "complete" else ""
            console.print(f"{label} seed {s}: {acc:.4f} ({r.epochs} ep, {r.train_seconds:.1f}s){flag}", highlight=False)
        if progress is not None:
            progress.advance(task)
    return runs


def stats(runs: list[dict]) -> dict:
    """Accuracy over the runs: n, mean, std, min, max, and how many diverged."""
    accs = [r["accuracy"] for r in runs]
    mean, std = mean_sd(accs)
    return {"n": len(accs), "mean": mean, "std": std, "min": min(accs), "max": max(accs),
            "diverged": sum(r["status"] == "diverged" for r in runs)}



# --- hpo train ----------------------------------------------------------------------------------


def train_file(path: str, *, seeds: int = 1, validation: bool = False, epochs: int | None = None,
               train_limit: int | None = None, eval_limit: int | None = None, threads: int | None = None,
               device: str | None = None, console: Console | None = None, json_out: str | Path | None = None) -> dict:
    """Train an exported config over `seeds` seeds (the config's seed, +1, +2, ...). By default on the whole
    training set, scored on the test set; with `validation`, on the study's own split, to show that the
    trial's validation accuracy is reproduced. `device`: where to train (default cpu). `json_out`: also write
    the result there, which `hpo compare --reuse` takes instead of re-training the same optimum."""
    if seeds <= 0:
        raise HpoError("--seeds: must be a positive number")
    if json_out is not None and (Path(json_out).is_dir() or not Path(json_out).parent.is_dir()):
        raise HpoError(f"--json: {json_out} is a folder or lies in no existing folder; give a file path")
    cfg = load_config(path)
    device = resolve_device(device)
    console = console or make_console()
    hp = cfg.train.to_dict()
    if epochs:
        hp["epochs"] = epochs
    ds = data_mod.load(cfg.dataset)
    if validation:
        splits = data_mod.make_splits(ds, val_size=cfg.val_size, seed=cfg.split_seed,
                                      train_limit=train_limit or cfg.n_train, eval_limit=eval_limit or cfg.n_eval)
    else:
        splits = data_mod.make_splits(ds, final=True, train_limit=train_limit, eval_limit=eval_limit)
    splits = splits.to(device)
    where = "validation" if validation else "test"
    io = (splits.train_x.shape[1], splits.n_classes)
    console.print(f"[bold]{cfg.source}[/]: {describe_config(hp, io)}")
    console.print(f"{cfg.dataset}: {splits.meta['n_train']} training samples, {splits.meta['n_eval']} {where} samples")
    seed_list = [cfg.train.seed + i for i in range(seeds)]
    label = textwrap.shorten(describe_config(hp, io), 40, placeholder=" …")  # cut between words, not in a value
    runs = run_seeds(hp, splits, seed_list, threads=threads, label=label, console=console)
    st = stats(runs)

    table = Table(title=f"{cfg.source}: {where} accuracy over {seeds} seed{'s' * (seeds > 1)}", title_justify="left")
    for col in ("seed", f"{where} accuracy", "epochs", "train time", "status"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for r in runs:
        table.add_row(str(r["seed"]), f"{r['accuracy']:.4f}", str(r["epochs"]), f"{r['seconds']:.1f}s",
                      r["status"] + (f": {r['reason']}" if r["reason"] else ""))
    if seeds > 1:
        table.add_row(spread_label(seeds), spread(st["mean"], st["std"], st["n"], st["min"], st["max"]), "", "", "",
                      style="bold")
    console.print(table)
    if any(r.get("mix_p") for r in runs):
        paper = load_paper(MIX_PAPER)
        console.print(p_table(p_summary(runs, paper_mix(paper, cfg.dataset)),
                              f"{cfg.source}: learned P per layer over {seeds} seed{'s' * (seeds > 1)} vs "
                              f"{paper.title.split(',')[0]} ({cfg.dataset})"))
    result = {"config": cfg.source, "dataset": str(cfg.dataset), "where": where, "hp": hp, "seeds": seed_list,
              "trial": cfg.provenance.get("trial"), "meta": splits.meta, "runs": runs, "stats": st}
    if validation:
        result["reproduced"] = _reproduction(cfg, runs, st, epochs, train_limit, eval_limit, console)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        console.print(f"wrote {json_out}")
    return result


def _reproduction(cfg, runs, st, epochs, train_limit, eval_limit, console) -> bool | None:
    """The run with the study's seed against the trial's recorded validation accuracy."""
    recorded = cfg.provenance.get("val_accuracy")
    if recorded is None:
        console.print("no recorded validation accuracy in the config's provenance: nothing to reproduce")
        return None
    changed = [f for f, v in (("--epochs", epochs), ("--train-limit", train_limit), ("--eval-limit", eval_limit)) if v]
    if changed:
        console.print(f"[yellow]{', '.join(changed)} changed the trial's setting: not a reproduction[/]")
        return None
    first = runs[0]["accuracy"]
    # Noise: two seed-to-seed std where there are several seeds, at least half a point either way.
    tol = max(0.005, 2 * st["std"])
    ok = abs(first - recorded) <= tol
    word = "[green]reproduced[/]" if ok else "[red]NOT reproduced[/]"
    console.print(f"trial {cfg.provenance.get('trial', '?')} recorded validation accuracy {recorded:.4f}; "
                  f"re-run with the study's seed {runs[0]['seed']}: {first:.4f} ({first - recorded:+.4f}): {word} "
                  f"within noise (±{tol:.4f}); "
                  f"all seeds {spread(st['mean'], st['std'], st['n'], st['min'], st['max'])}")
    return ok


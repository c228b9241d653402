"""Re-run configurations on the test set over several seeds: `hpo train FILE` for one exported config,
`hpo compare NAME` for the paper's hand-tuned rows, reference MLPs and the study's best, side by side.

Every configuration in one comparison sees the same data, the same protocol and the same seeds; seed s
fixes the initialisation and the batch order. Results are plain dicts, so that compare.json holds exactly
what the table, the findings and the report are made from.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo import data as data_mod
from hpo.errors import HpoError
from hpo.models import accuracy
from hpo.paper import PAPERS, REFERENCES, TRAIN_KEYS, row_config
from hpo.runner import describe_config, make_console
from hpo.train import TrainConfig, train

SMOKE = {"seeds": 2, "epochs": 1, "train_limit": 3000, "eval_limit": 1000}
DEFAULT_SEEDS = 3


# --- runs over seeds ----------------------------------------------------------------------------


def run_seeds(hp: dict, splits, seeds: list[int], *, threads: int | None = None, label: str = "",
              console: Console | None = None, progress=None, task=None) -> list[dict]:
    """Train `hp` once per seed; a diverged run is kept, scored as what its network does (chance)."""
    runs = []
    for s in seeds:
        r = train(TrainConfig.from_dict({**hp, "seed": s}), splits, threads=threads)
        acc = r.eval_acc if r.status == "complete" else accuracy(r.model, splits.eval_x, splits.eval_y)
        runs.append({"seed": s, "accuracy": acc, "status": r.status, "reason": r.reason, "epochs": r.epochs,
                     "seconds": round(r.train_seconds, 2), "curve": [round(a, 5) for a in r.eval_curve]})
        if console is not None:
            flag = f" [red]{r.status}: {r.reason}[/]" if r.status != "complete" else ""
            console.print(f"{label} seed {s}: {acc:.4f} ({r.epochs} ep, {r.train_seconds:.1f}s){flag}", highlight=False)
        if progress is not None:
            progress.advance(task)
    return runs


def stats(runs: list[dict]) -> dict:
    accs = [r["accuracy"] for r in runs]
    return {"n": len(accs), "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "min": min(accs), "max": max(accs), "diverged": sum(r["status"] == "diverged" for r in runs)}


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def mean_std(st: dict | None) -> str:
    if not st:
        return ""
    tail = f" ({st['diverged']}/{st['n']} diverged)" if st["diverged"] else ""
    return f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f}%{tail}"


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


# --- hpo train ----------------------------------------------------------------------------------


def train_file(path: str, *, seeds: int = 1, validation: bool = False, epochs: int | None = None,
               train_limit: int | None = None, eval_limit: int | None = None, threads: int | None = None,
               console: Console | None = None) -> dict:
    """Train an exported config over `seeds` seeds (the config's seed, +1, +2, ...). By default on the whole
    training set, scored on the test set; with `validation`, on the study's own split, to show that the
    trial's validation accuracy is reproduced."""
    from hpo.export import load_config

    if seeds <= 0:
        raise HpoError("--seeds: must be a positive number")
    cfg = load_config(path)
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
    where = "validation" if validation else "test"
    console.print(f"[bold]{cfg.source}[/]: {describe_config(hp)}")
    console.print(f"{cfg.dataset}: {splits.meta['n_train']} training images, {splits.meta['n_eval']} {where} images")
    seed_list = [cfg.train.seed + i for i in range(seeds)]
    runs = run_seeds(hp, splits, seed_list, threads=threads, label=describe_config(hp)[:40], console=console)
    st = stats(runs)

    table = Table(title=f"{cfg.source}: {where} accuracy over {seeds} seed{'s' * (seeds > 1)}", title_justify="left")
    for col in ("seed", f"{where} accuracy", "epochs", "train time", "status"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for r in runs:
        table.add_row(str(r["seed"]), f"{r['accuracy']:.4f}", str(r["epochs"]), f"{r['seconds']:.1f}s",
                      r["status"] + (f": {r['reason']}" if r["reason"] else ""))
    table.add_row("mean ± std", f"{st['mean']:.4f} ± {st['std']:.4f}", "", "", "", style="bold")
    console.print(table)
    result = {"config": cfg.source, "where": where, "meta": splits.meta, "runs": runs, "stats": st}
    if validation:
        result["reproduced"] = _reproduction(cfg, runs, st, epochs, train_limit, eval_limit, console)
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
                  f"within noise (±{tol:.4f}); all seeds {st['mean']:.4f} ± {st['std']:.4f}")
    return ok


# --- hpo compare --------------------------------------------------------------------------------


def reference_config(ref: dict, proto: dict) -> dict:
    """Xiao et al.'s scikit-learn MLPClassifier, re-created: its default solver (adam, lr 1e-3) under the protocol."""
    hp = {k: proto[k] for k in TRAIN_KEYS if k in proto}
    hp.update(widths=tuple(ref["widths"]), activation=ref["activation"], optimizer="adam", lr=1e-3)
    return hp


def protocol_lines(paper_key: str | None, proto: dict, extra: list[tuple[str, str, str]]) -> list[dict]:
    """Each assumption the comparison rests on: key, value, reason (the paper's protocol, then this run's)."""
    paper = PAPERS[paper_key or "youn_hong_2024"]
    lines = []
    for a in paper.protocol:
        value = proto.get(a.key, a.value)
        reason = a.reason if value == a.value else f"set by the study (the default assumption is {a.value!r}): {a.reason}"
        lines.append({"key": a.key, "value": value, "reason": reason})
    lines += [{"key": k, "value": v, "reason": r} for k, v, r in extra]
    return lines


def build_entries(study, proto: dict, dataset: str, references: bool) -> list[dict]:
    from hpo.export import best_trials

    s = study.user_attrs
    entries = []
    if s.get("paper"):
        paper = PAPERS[s["paper"]]
        for t in s.get("tables", []):
            for row in paper.table(t):
                entries.append({"kind": "paper", "name": row.name, "table": t, "reported": row.reported,
                                "note": row.note, "hp": row_config(row, proto)})
    best = best_trials(study, 1)[0]
    hp = {k: v for k, v in best.user_attrs["config"].items() if k != "seed"}
    entries.append({"kind": "optimum", "name": f"automated optimum (trial {best.number})", "trial": best.number,
                    "val_accuracy": best.values[0], "reported": None, "note": describe_config(hp), "hp": hp})
    if references:
        for ref in REFERENCES:
            entries.append({"kind": "reference", "name": ref["name"], "reported": ref.get(dataset),
                            "note": "scikit-learn MLPClassifier, re-created", "hp": reference_config(ref, proto)})
    return entries


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
            rows.append([f"{e['name']}, validation {pct(e['val_accuracy'])}: {e['note']}", "", "",
                         mean_std(e["stats"]), ""])
            continue
        diff = 100 * (opt["stats"]["mean"] - e["stats"]["mean"])
        rows.append([e["name"], pct(e["reported"]), mean_std(e["stats"]), mean_std(opt["stats"]), f"{diff:+.2f} pts"])
    return headers, rows


def rich_table(result: dict) -> Table:
    headers, rows = table_rows(result)
    table = Table(title=f"{result['study']}: {result['dataset']} test accuracy, {len(result['seeds'])} seeds each "
                        f"(mean ± std); difference = automated optimum − re-run", title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for e, row in zip(result["entries"], rows):
        table.add_row(*row, style={"optimum": "bold green", "reference": "dim"}.get(e["kind"]))
    return table


def findings(result: dict) -> list[str]:
    """Words for what the numbers say: where a paper number lies outside what its re-run reaches."""
    out = []
    entries = result["entries"]
    opt = next(e for e in entries if e["kind"] == "optimum")
    papers = [e for e in entries if e["kind"] == "paper"]
    outside = 0
    for e in papers:
        st, rep = e["stats"], e["reported"]
        gap = 100 * (rep - st["mean"])
        spread = f"{pct(st['mean'])} ± {100 * st['std']:.2f} (seeds {pct(st['min'])} to {pct(st['max'])})"
        if st["diverged"]:
            out.append(f"{e['name']}: diverged in {st['diverged']} of {st['n']} seeds (loss became NaN or inf); "
                       f"the diverged network scores {pct(st['min'])}, the paper reports {pct(rep)}.")
            outside += rep > st["max"]
        elif rep > st["max"] or rep > st["mean"] + 2 * st["std"]:
            outside += 1
            sds = f", {gap / (100 * st['std']):.0f} std" if st["std"] > 0 else ""
            out.append(f"{e['name']}: the paper reports {pct(rep)}, but the re-run reaches {spread}: the paper's "
                       f"number is {gap:.2f} points above the re-run mean{sds}, and "
                       f"{100 * (rep - st['max']):.2f} points above its best seed.")
        elif rep < st["min"] or rep < st["mean"] - 2 * st["std"]:
            outside += 1
            out.append(f"{e['name']}: the paper reports {pct(rep)}, {-gap:.2f} points BELOW the re-run's {spread}: "
                       f"the paper's training reached less than this protocol does.")
        else:
            out.append(f"{e['name']}: the paper's {pct(rep)} lies within the re-run's {spread}.")
    if papers:
        out.insert(0, f"{outside} of {len(papers)} paper numbers lie outside what their re-run reaches "
                      f"on {result['dataset']} under this protocol.")
        best = max(papers, key=lambda e: e["stats"]["mean"])
        d = 100 * (opt["stats"]["mean"] - best["stats"]["mean"])
        out.append(f"The automated optimum ({mean_std(opt['stats'])}) is {abs(d):.2f} points "
                   f"{'above' if d >= 0 else 'below'} the best re-run paper configuration, {best['name']} "
                   f"({mean_std(best['stats'])}).")
    for e in entries:
        if e["kind"] == "reference" and e["reported"] is not None:
            d = 100 * (e["stats"]["mean"] - e["reported"])
            out.append(f"{e['name']}: published {pct(e['reported'])}, re-created here {mean_std(e['stats'])} "
                       f"({d:+.2f} points).")
    return out


def compare_study(name: str, *, seeds: int | None = None, dataset: str | None = None, storage: str | None = None,
                  smoke: bool = False, epochs: int | None = None, references: bool = True,
                  train_limit: int | None = None, eval_limit: int | None = None, out: str | Path | None = None,
                  console: Console | None = None) -> dict:
    """Re-run the study's paper rows, its best trial and the references on the test set; print the table,
    the findings and the protocol; write compare.json and report.md (with pictures) to runs/NAME/."""
    from hpo.export import open_study
    from hpo.report import write_report
    from hpo.study import git_commit, versions

    if smoke:
        seeds = seeds or SMOKE["seeds"]
        epochs, train_limit, eval_limit = epochs or SMOKE["epochs"], train_limit or SMOKE["train_limit"], \
            eval_limit or SMOKE["eval_limit"]
    seeds = seeds or DEFAULT_SEEDS
    for flag, v in (("--seeds", seeds), ("--epochs", epochs)):
        if v is not None and v <= 0:
            raise HpoError(f"{flag}: must be a positive number")
    console = console or make_console()
    study = open_study(name, storage, smoke)
    s = study.user_attrs
    study_dataset = s.get("split", {}).get("dataset") or s.get("study_yaml", {}).get("dataset")
    dataset = dataset or study_dataset
    proto = s.get("protocol") or {}
    entries = build_entries(study, proto, dataset, references)  # raises when there is no completed trial
    if epochs:
        for e in entries:
            e["hp"] = {**e["hp"], "epochs": epochs}
    splits = data_mod.make_splits(data_mod.load(dataset), final=True, train_limit=train_limit, eval_limit=eval_limit)
    threads = (s.get("study_yaml", {}).get("budget") or {}).get("threads", 2)
    seed0 = s.get("seed", 0)
    seed_list = [seed0 + i for i in range(seeds)]

    console.print(f"[bold]{study.study_name}[/]: re-running {len(entries)} configurations × {seeds} seeds on "
                  f"{dataset} ({splits.meta['n_train']} train / {splits.meta['n_eval']} test)")
    with progress_bar(console) as bar:
        task = bar.add_task("runs", total=len(entries) * seeds)
        for e in entries:
            e["runs"] = run_seeds(e["hp"], splits, seed_list, threads=threads, label=e["name"], console=console,
                                  progress=bar, task=task)
            e["stats"] = stats(e["runs"])

    extra = [
        ("seeds", seed_list, "the same seeds for every configuration; a seed fixes initialisation and batch order"),
        ("data", f"{splits.meta['n_train']} training images, scored on {splits.meta['n_eval']} test images",
         "the test set is never seen while tuning; every configuration trains on the same images"),
        ("optimum", f"trained with its own tuned {'' if epochs else 'epochs, '}batch size, schedule and regularisation",
         "what the search chose is part of the configuration being compared"),
    ]
    if references:
        extra.append(("references", "adam, lr 1e-3, under the protocol's epochs and batch size",
                      "scikit-learn's MLPClassifier default solver, re-created in PyTorch (no scikit-learn here)"))
    if epochs:
        extra.append(("epochs override", epochs, ("asked for on the command line (--epochs or --smoke): "
                                                 "a quick look, not the paper's protocol")))
    paper_dataset = PAPERS[s["paper"]].dataset if s.get("paper") else study_dataset
    result = {
        "study": study.study_name, "dataset": dataset, "paper_dataset": paper_dataset, "paper": s.get("paper"),
        "tables": s.get("tables", []), "seeds": seed_list,
        "smoke": smoke, "epochs_override": epochs, "train_limit": train_limit, "eval_limit": eval_limit,
        "data": splits.meta, "protocol": protocol_lines(s.get("paper"), proto, extra), "entries": entries,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
        "git_commit": git_commit(),
    }
    result["findings"] = findings(result)
    print_result(result, console)
    folder = Path(out) if out else Path("runs") / study.study_name
    suffix = "" if dataset == study_dataset else f"-{dataset}"
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"compare{suffix}.json"
    raw.write_text(json.dumps(result, indent=1, default=str) + "\n")
    report = write_report(study, result, folder, suffix=suffix)
    console.print(f"wrote {raw} and {report}")
    return result


def print_result(result: dict, console: Console) -> None:
    console.print(rich_table(result))
    for line in result["findings"]:
        console.print(f"• {line}", highlight=False)
    console.print("[bold]protocol assumptions[/] (hpo/paper.py; override under baselines.protocol in the study):")
    for p in result["protocol"]:
        console.print(f"  {p['key']} = {p['value']}: [dim]{p['reason']}[/]", highlight=False)

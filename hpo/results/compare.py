"""`hpo compare NAME`: re-run the paper's hand-tuned rows, reference MLPs and the study's best on the test set
over several seeds, side by side; findings in words; compare.json and the report (hpo.results.report).

Every configuration in one comparison sees the same data, the same protocol and the same seeds; seed s
fixes the initialisation and the batch order. Results are plain dicts, so that compare.json holds exactly
what the table, the findings and the report are made from.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from hpo import data as data_mod
from hpo.display import MIN_SPREAD_N, describe_config, make_console, pct, pm_stats, progress_bar
from hpo.errors import HpoError, StudyError
from hpo.hints import command_hint
from hpo.provenance import git_commit, versions
from hpo.results.notes import artifact_dir, study_url
from hpo.results.report import print_result, write_report
from hpo.results.retrain import run_seeds, stats
from hpo.search.papers import Paper, study_paper
from hpo.search.storage import open_study, study_name
from hpo.search.study import SMOKE_EVAL, SMOKE_TRAIN, check_same_data, search_name
from hpo.sources import name_of
from hpo.stats import mean_sd, prediction_interval
from hpo.training.runtime import resolve_device
from hpo.training.spec import TrainConfig
from hpo.trials import best_trials, confirmed, score, study_attrs

SMOKE = {"seeds": 2, "epochs": 1, "train_limit": SMOKE_TRAIN, "eval_limit": SMOKE_EVAL}
DEFAULT_SEEDS = 3


def protocol_lines(paper: Paper | None, proto: dict, extra: list[tuple[str, str, str]],
                   tables: list | None = None) -> list[dict]:
    """Each assumption the comparison rests on: key, value, reason (the paper's protocol, then this run's).
    One that concerns only other tables than those compared is left out, unless the study set it."""
    lines = []
    for a in paper.protocol if paper else ():
        value = proto.get(a.key, a.value)
        if tables and a.tables and not set(a.tables) & set(tables) and value == a.value:
            continue
        reason = (a.reason if value == a.value
                  else f"set by the study (the default assumption is {a.value!r}): {a.reason}")
        lines.append({"key": a.key, "value": value, "reason": reason})
    lines += [{"key": k, "value": v, "reason": r} for k, v, r in extra]
    return lines


def build_entries(study, paper: Paper | None, proto: dict, dataset: str, references: bool) -> list[dict]:
    s = study_attrs(study)
    entries = []
    if paper:
        for t in s.get("tables", []):
            for row in paper.table(t):
                entries.append({"kind": "paper", "name": row.name, "table": t, "reported": row.reported,
                                "note": row.note, "hp": paper.row_config(row, proto)})
    opt = optimum_row(study)
    entries.append({"kind": "optimum", "name": f"automated optimum (trial {opt['trial']})", "reported": None, **opt})
    if references and paper and paper.references:
        # The references of the compared data set where the paper cites them, else the first data set's rows.
        refs = [r for r in paper.references if r.dataset == dataset]
        if not refs:
            first = paper.references[0].dataset
            refs = [r for r in paper.references if r.dataset == first]
        for ref in refs:
            entries.append({"kind": "reference", "name": ref.name, "reported": ref.reported if ref.dataset == dataset
                            else None, "note": ref.note or "a published number, re-run here",
                            "hp": paper.row_config(ref, proto)})
    return entries



def findings(result: dict) -> list[str]:
    """Words for what the numbers say: where a paper number lies outside what its re-run reaches. From
    MIN_SPREAD_N seeds on, "outside" means outside the t-based 95% prediction interval for one run, and the gap
    is also given in stds; with fewer seeds, only the seeds' range is a basis, and the words say so."""
    out = []
    entries = result["entries"]
    opt = next(e for e in entries if e["kind"] == "optimum")
    papers = [e for e in entries if e["kind"] == "paper"]
    outside = 0
    n = min((e["stats"]["n"] for e in papers), default=0)
    for e in papers:
        st, rep = e["stats"], e["reported"]
        gap = 100 * (rep - st["mean"])
        interval = prediction_interval(st["mean"], st["std"], st["n"])
        if interval:
            lo, hi = interval
            spread = f"{pm_stats(st)} (seeds {pct(st['min'])} to {pct(st['max'])})"
            where = (f", outside the 95% prediction interval for one run, {pct(lo)} to {pct(hi)} "
                     f"(t, {st['n']} seeds)")
            few = ""
            sds = f", {abs(gap) / (100 * st['std']):.0f} std" if st["std"] > 0 else ""
        else:
            lo, hi = st["min"], st["max"]
            seeds = "the single seed" if st["n"] == 1 else f"its {st['n']} seeds"
            spread = (f"{pct(st['mean'])} (one seed)" if st["n"] == 1 else
                      f"{pct(st['mean'])} (seeds {pct(st['min'])} to {pct(st['max'])})")
            where = ""
            sds = ""
            few = (f"; {seeds} cannot say how far one run may stray (a std needs {MIN_SPREAD_N} seeds or more: "
                   f"--seeds {MIN_SPREAD_N})")
        if st["diverged"]:
            out.append(f"{e['name']}: diverged in {st['diverged']} of {st['n']} seeds (loss became NaN or inf); "
                       f"the diverged network scores {pct(st['min'])}, the paper reports {pct(rep)}.")
            outside += rep > st["max"]
        elif rep > max(hi, st["max"]):
            outside += 1
            out.append(f"{e['name']}: the paper reports {pct(rep)}, but the re-run reaches {spread}: the paper's "
                       f"number is {gap:.2f} points above the re-run mean{sds}{where}, and "
                       f"{100 * (rep - st['max']):.2f} points above its best seed{few}.")
        elif rep < min(lo, st["min"]):
            outside += 1
            out.append(f"{e['name']}: the paper reports {pct(rep)}, {-gap:.2f} points BELOW the re-run's {spread}"
                       f"{sds}{where}: the paper's training reached less than this protocol does{few}.")
        else:
            within = "prediction interval" if interval else "seeds' range"
            out.append(f"{e['name']}: the paper's {pct(rep)} lies within the re-run's {within}: {spread}.")
    if papers:
        basis = "what their re-run reaches" if n >= MIN_SPREAD_N else \
            f"the range of their re-run's {n} seed{'s' * (n > 1)}"
        too_few = ("" if n >= MIN_SPREAD_N else
                   f" {n} seed{'s are' if n > 1 else ' is'} too few for a claim: use --seeds {MIN_SPREAD_N} or more.")
        out.insert(0, f"{outside} of {len(papers)} paper numbers lie outside {basis} "
                      f"on {result['dataset']} under this protocol." + too_few)
        best = max(papers, key=lambda e: e["stats"]["mean"])
        d = 100 * (opt["stats"]["mean"] - best["stats"]["mean"])
        out.append(f"The automated optimum, {pm_stats(opt['stats'])}, is {abs(d):.2f} points "
                   f"{'above' if d >= 0 else 'below'} the best re-run paper configuration, {best['name']} "
                   f"at {pm_stats(best['stats'])}.")
    over = (result.get("searches") or {}).get("over")
    if over:
        seed_std = 100 * mean_sd([r["stats"]["std"] for r in result["searches"]["rows"]])[0]
        out.append(f"Over {over['n']} independent searches of this study, each search's optimum re-trained on the same "
                   f"seeds gives {pm_stats(over)} over searches: the spread of the search itself. The searches' "
                   f"optima lie between {pct(over['min'])} and {pct(over['max'])}; within one optimum the seeds' "
                   f"std is {seed_std:.2f} points.")
    for e in entries:
        if e["kind"] == "reference" and e["reported"] is not None:
            d = 100 * (e["stats"]["mean"] - e["reported"])
            out.append(f"{e['name']}: published {pct(e['reported'])}, re-created here {pm_stats(e['stats'])}: "
                       f"{d:+.2f} points.")
    return out



def _same_run(hp: dict) -> dict:
    """A configuration as plain, comparable data: every TrainConfig field, the seed aside."""
    return json.loads(json.dumps(TrainConfig.from_dict({**hp, "seed": 0}).to_dict()))


def reused_runs(path: str | Path, hp: dict, dataset: str, meta: dict, seeds: list[int]) -> list[dict]:
    """The runs of an `hpo train --json` result, if it trained exactly this configuration on this data with
    these seeds; otherwise HpoError naming the first difference."""
    try:
        got = json.loads(Path(path).read_text())
    except OSError as e:
        raise HpoError(f"--reuse: cannot read {path} ({e.strerror})") from None
    except json.JSONDecodeError:
        raise HpoError(f"--reuse: {path} is not json (write it with `hpo train FILE --json {path}`)") from None
    if not isinstance(got, dict) or "runs" not in got or "hp" not in got:
        raise HpoError(f"--reuse: {path} is not the json of `hpo train --json`")
    checks = (("scored on", got.get("where"), "test"), ("data set", got.get("dataset"), dataset),
              ("training samples", got.get("meta", {}).get("n_train"), meta["n_train"]),
              ("test samples", got.get("meta", {}).get("n_eval"), meta["n_eval"]),
              ("seeds", got.get("seeds"), seeds), ("configuration", _same_run(got["hp"]), _same_run(hp)))
    for what, theirs, ours in checks:
        if theirs != ours:
            raise HpoError(f"--reuse: {path} differs from this comparison in its {what}: {theirs!r}, here "
                           f"{ours!r}; train it again with the same settings, or leave out --reuse")
    return got["runs"]


def optimum_row(study) -> dict:
    """The study's best trial as a configuration to re-train: its number, validation accuracy (its mean over
    seeds when the study confirmed it: `val_seeds` runs), config (without its seed: the comparison's seeds
    replace it) and the config in words."""
    best = best_trials(study, 1)[0]
    confirms = confirmed(study)
    hp = {k: v for k, v in best.user_attrs["config"].items() if k != "seed"}
    return {"trial": best.number, "val_accuracy": score(best, confirms),
            "val_seeds": len(confirms.get(best.number, [0])), "hp": hp,
            "note": describe_config(hp, best.user_attrs.get("io"))}


def search_optimum(name: str, search: int, storage: str | None, smoke: bool) -> tuple:
    """(the study of the `search`-th independent search, its optimum_row to re-train); one line naming the
    command when that search has not run."""
    try:
        study = open_study(search_name(name, search), storage, smoke)
    except StudyError:
        run = command_hint(f"study {name} --search {search}" + " --smoke" * smoke)
        missing = study_name(search_name(name, search), smoke)
        raise StudyError(f"--searches: search {search} of {name!r} has not run (no study {missing!r} in the storage); "
                         f"run `{run}` first") from None
    opt = optimum_row(study)
    return study, {"search": search, "study": study.study_name, "name": f"search {search}: trial {opt['trial']}",
                   **opt}


def compare_study(name: str, *, seeds: int | None = None, dataset: str | None = None, storage: str | None = None,
                  smoke: bool = False, epochs: int | None = None, references: bool = True,
                  train_limit: int | None = None, eval_limit: int | None = None, out: str | Path | None = None,
                  device: str | None = None, console: Console | None = None, artifacts: str | None = None,
                  reuse: str | Path | None = None, searches: int = 1) -> dict:
    """Re-run the study's paper rows, its best trial and the references on the test set; print the table,
    the findings and the protocol; write compare.json and report.md (with pictures) to runs/NAME/.
    `device`: where to train (default: the study's budget.device, else cpu). `reuse`: the json of an
    `hpo train --json` of the same optimum on the same data and seeds, taken instead of re-training it.
    `searches` N >= 2: also re-train the optima of the study's searches 2..N (`hpo study NAME --search K`) on
    the same seeds, and give the optimum as mean ± std over searches as well as over seeds."""
    if smoke:
        seeds = seeds or SMOKE["seeds"]
        epochs, train_limit, eval_limit = epochs or SMOKE["epochs"], train_limit or SMOKE["train_limit"], \
            eval_limit or SMOKE["eval_limit"]
    seeds = seeds or DEFAULT_SEEDS
    for flag, v in (("--seeds", seeds), ("--epochs", epochs), ("--searches", searches)):
        if v is not None and v <= 0:
            raise HpoError(f"{flag}: must be a positive number")
    console = console or make_console()
    study = open_study(name, storage, smoke)
    artifact_dir(study_url(study), artifacts)  # a bad --artifacts is one line, before the re-runs
    s = study_attrs(study)
    study_dataset = s.get("split", {}).get("dataset") or s.get("study_yaml", {}).get("dataset")
    spec = dataset or study_dataset
    dataset, study_dataset = name_of(spec), name_of(study_dataset)
    proto = s.get("protocol") or {}
    paper = study_paper(s)
    entries = build_entries(study, paper, proto, dataset, references)  # raises when there is no completed trial
    found = [search_optimum(name, k, storage, smoke) for k in range(2, searches + 1)]  # all there, before training
    others = [row for _, row in found]
    if epochs:
        for e in [*entries, *others]:
            e["hp"] = {**e["hp"], "epochs": epochs}
    budget = s.get("study_yaml", {}).get("budget") or {}
    device = resolve_device(device, budget.get("device", "cpu"))
    ds = data_mod.load(spec)
    if dataset == study_dataset:
        for searched in [study, *(st for st, _ in found)]:
            check_same_data(searched, ds.sha256)
    splits = data_mod.make_splits(ds, final=True, train_limit=train_limit, eval_limit=eval_limit).to(device)
    threads = budget.get("threads", 2)
    seed0 = s.get("seed", 0)
    seed_list = [seed0 + i for i in range(seeds)]
    if reuse is not None:
        opt = next(e for e in entries if e["kind"] == "optimum")
        opt["runs"] = reused_runs(reuse, opt["hp"], dataset, splits.meta, seed_list)
        console.print(f"the optimum's {seeds} runs come from {reuse} (`hpo train --json`), not trained again")

    console.print(f"[bold]{study.study_name}[/]: re-running {len(entries)} configurations × {seeds} seeds on "
                  f"{dataset} ({splits.meta['n_train']} train / {splits.meta['n_eval']} test)")
    with progress_bar(console) as bar:
        task = bar.add_task("runs", total=(sum("runs" not in e for e in entries) + len(others)) * seeds)
        for e in entries:
            if "runs" in e:  # reused
                e["stats"] = stats(e["runs"])
                continue
            e["runs"] = run_seeds(e["hp"], splits, seed_list, threads=threads, label=e["name"], console=console,
                                  progress=bar, task=task)
            e["stats"] = stats(e["runs"])
        for o in others:
            o["runs"] = run_seeds(o["hp"], splits, seed_list, threads=threads, label=o["name"], console=console,
                                  progress=bar, task=task)
            o["stats"] = stats(o["runs"])

    extra = [
        ("seeds", seed_list, "the same seeds for every configuration; a seed fixes initialisation and batch order"),
        ("data", f"{splits.meta['n_train']} training samples, scored on {splits.meta['n_eval']} test samples",
         "the test set is never seen while tuning; every configuration trains on the same samples"),
        ("optimum", f"trained with its own tuned {'' if epochs else 'epochs, '}batch size, schedule and regularisation",
         "what the search chose is part of the configuration being compared"),
    ]
    if any(e["kind"] == "reference" for e in entries):
        extra.append(("references", "their rows' own settings, under this paper's protocol",
                      "published numbers beside the paper's, re-run the same way (scikit-learn models re-created in "
                      "PyTorch)"))
    if epochs:
        extra.append(("epochs override", epochs, ("asked for on the command line (--epochs or --smoke): "
                                                 "a quick look, not the paper's protocol")))
    paper_dataset = paper.dataset_name if paper else study_dataset
    result = {
        "study": study.study_name, "dataset": dataset, "paper_dataset": paper_dataset, "paper": s.get("paper"),
        "paper_title": paper.title if paper else None,
        "tables": s.get("tables", []), "seeds": seed_list,
        "smoke": smoke, "epochs_override": epochs, "train_limit": train_limit, "eval_limit": eval_limit,
        "data": splits.meta, "protocol": protocol_lines(paper, proto, extra, s.get("tables")), "entries": entries,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
        "git_commit": git_commit(),
    }
    if others:
        opt = next(e for e in entries if e["kind"] == "optimum")
        rows = [{"search": 1, "study": study.study_name, **{k: opt[k] for k in ("name", "trial", "val_accuracy", "note",
                                                                               "hp", "runs", "stats")}}, *others]
        means = [r["stats"]["mean"] for r in rows]
        mean, std = mean_sd(means)
        result["searches"] = {"rows": rows, "over": {"n": len(means), "mean": mean, "std": std, "min": min(means),
                                                     "max": max(means), "diverged": 0}}
    result["findings"] = findings(result)
    print_result(result, console)
    folder = Path(out) if out else Path("runs") / study.study_name
    suffix = "" if dataset == study_dataset else f"-{dataset}"
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"compare{suffix}.json"
    raw.write_text(json.dumps(result, indent=1, default=str) + "\n")
    report = write_report(study, result, folder, suffix=suffix, artifacts=artifacts)
    console.print(f"wrote {raw} and {report}")
    return result


"""The `hpo` command. Every HpoError becomes one line on stderr and exit status 2;
a traceback means a bug of ours.

Each command imports its module when it runs, not at start-up: `hpo check` and `hpo --help` should not wait
for torch, optuna and matplotlib to load. These are the package's only imports inside functions (besides
hpo/__init__.py's, for the same reason)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpo.errors import HpoError
from hpo.training.spec import thread_cap


def cmd_study(args) -> int:
    from hpo.api import run_study

    run_study(args.name, trials=args.trials, timeout=args.timeout, storage=args.storage, smoke=args.smoke,
              workers=args.workers, pack=args.pack, artifacts=args.artifacts, search=args.search)
    return 0


def cmd_dashboard(args) -> int:
    from hpo.tools.dashboard import serve

    serve(args.storage, host=args.host, port=args.port, artifacts=args.artifacts,
          echo=lambda line: print(line, flush=True))
    return 0


def cmd_proxy(args) -> int:
    from hpo.tools.proxy import serve

    serve(args.storage, host=args.host, port=args.port, threads=args.threads, echo=lambda line: print(line, flush=True))
    return 0


def cmd_check(args) -> int:
    from hpo.search.studyfile import check_file

    failed = 0
    for path in args.paths:
        try:
            kind = check_file(path)
            print(f"ok: {path} ({kind})")
        except HpoError as e:
            print(f"hpo: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def cmd_activations(args) -> int:
    from hpo.display import make_console

    console = make_console()
    if args.study or args.mix_seeds is not None:
        if not args.study:
            raise HpoError("--mix-seeds: needs --study NAME (the study whose best mix configuration to retrain)")
        from hpo.results.mix_seeds import run_mix_seeds

        run_mix_seeds(args.study, 5 if args.mix_seeds is None else args.mix_seeds, storage=args.storage,
                      smoke=args.smoke, device=args.device, console=console)
        return 0
    from hpo.tools.activation_properties import plot, properties, properties_markdown, properties_table, showcase

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HpoError(f"--out: {out} exists and is not a folder")
    fns = showcase()
    props = [properties(name, fn) for name, fn in fns.items()]
    console.print(properties_table(props))
    try:
        files = plot(fns, out)
        (out / "properties.md").write_text(properties_markdown(props) + "\n")
    except OSError as e:
        raise HpoError(f"--out: cannot write to {out} ({e.strerror})") from None
    console.print(f"wrote {len(files)} plots (each activation and its derivative; overview {out / 'activations.png'}) "
                  f"and {out / 'properties.md'}")
    return 0


def cmd_export(args) -> int:
    from hpo.display import number
    from hpo.results.export import export

    for path, t in export(args.name, top=args.top, out=args.out, storage=args.storage, smoke=args.smoke):
        tag = f" [{t.user_attrs['baseline']}]" if t.user_attrs.get("baseline") else ""
        print(f"wrote {path}: trial {t.number} ({', '.join(number(v) for v in t.values)}){tag}")
    return 0


def _pack_arg(text: str) -> int | str:
    """--pack: a number of trials or auto (a bad number is reported by prepare, with the other checks)."""
    return text if text == "auto" else int(text)


def cmd_train(args) -> int:
    from hpo.results.retrain import train_file

    r = train_file(args.config, seeds=args.seeds, validation=args.validation, epochs=args.epochs,
                   train_limit=args.train_limit, eval_limit=args.eval_limit, threads=args.threads,
                   device=args.device, json_out=args.json)
    return 1 if r.get("reproduced") is False else 0


def cmd_compare(args) -> int:
    from hpo.results.compare import compare_study

    compare_study(args.name, seeds=args.seeds, dataset=args.dataset, storage=args.storage, smoke=args.smoke,
                  epochs=args.epochs, references=args.references, out=args.out, device=args.device,
                  artifacts=args.artifacts, reuse=args.reuse, searches=args.searches)
    return 0


def cmd_report(args) -> int:
    from hpo.results.report import report_study

    out = report_study(args.name, storage=args.storage, smoke=args.smoke, out=args.out, artifacts=args.artifacts)
    print(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    from hpo.bench.run import run_bench

    only = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
    run_bench(quick=args.quick, out=args.out, only=only, device=args.device, minutes=args.minutes)
    return 0


ARTIFACTS_HELP = ("folder of the pictures optuna-dashboard shows (default: $HPO_ARTIFACT_STORE, else artifacts/ beside "
                  "a SQLite storage: runs/artifacts)")


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the study's name (as `hpo study NAME` made it)")
    parser.add_argument("--storage", help="Optuna storage URL (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    parser.add_argument("--smoke", action="store_true",
                        help="use the NAME-smoke study that `hpo study NAME --smoke` made")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpo", description="Tune small networks with Optuna and hold the result "
                                                        "against hand-tuned configurations.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("study", help="create or resume a study and run it")
    s.add_argument("name", help="a study name (studies/NAME.yaml) or a path to a study file")
    s.add_argument("--trials", type=int, help="total trials the study should hold (default: the file's n_trials)")
    s.add_argument("--timeout", type=float, help="the run's time budget in seconds, confirmation runs included "
                                                 "(default: the study's timeout)")
    s.add_argument("--storage", help="Optuna storage URL (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    s.add_argument("--smoke", action="store_true", help="tiny scale: a few trials, 1 epoch, a few thousand samples")
    s.add_argument("--workers", type=int, help="worker processes on this machine, sharing the study and "
                                               "budget.threads (default: the study's budget.workers, else 1)")
    s.add_argument("--pack", type=_pack_arg, help="train up to K trials at once as one stacked computation, or "
                                                 "auto: K per shape and batch size from a short calibration "
                                                 "(default: the study's budget.pack, else 1)")
    s.add_argument("--artifacts", metavar="PATH", help=ARTIFACTS_HELP)
    s.add_argument("--search", type=int, default=1, metavar="K",
                   help="run the study's K-th independent search: study NAME-searchK, seed + K - 1, to measure how "
                        "far apart searches land (`hpo compare NAME --searches N`; default 1: the study itself)")
    s.set_defaults(func=cmd_study)

    d = sub.add_parser("dashboard", help="serve optuna-dashboard on the storage (http://127.0.0.1:8080/dashboard)")
    d.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free one)")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 exposes it, without a login)")
    d.add_argument("--storage", help="Optuna storage URL (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    d.add_argument("--artifacts", metavar="PATH", help=ARTIFACTS_HELP)
    d.set_defaults(func=cmd_dashboard)

    x = sub.add_parser("proxy", help="serve Optuna's gRPC storage proxy on a database, for many workers "
                                     "(--storage grpc://HOST:PORT)")
    x.add_argument("--storage", help="the database the proxy serves (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    x.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; the proxy has no login)")
    x.add_argument("--port", type=int, default=13000, help="port to listen on (default 13000)")
    x.add_argument("--threads", type=int, default=16, help="calls served at once, each with a database connection "
                                                           "(default 16)")
    x.set_defaults(func=cmd_proxy)

    c = sub.add_parser("check", help="validate study and search-space files without running anything")
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("export", help="write the best trial(s), or the Pareto set, as re-trainable YAML configs")
    _study_args(e)
    e.add_argument("--top", type=int, help="the K best trials (default 1; a multi-objective study: its Pareto set)")
    e.add_argument("--out", help="folder (default runs/NAME/), or a .yaml file for a single config")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("train", help="train an exported config on the full training set, test it over seeds")
    t.add_argument("config", help="an exported (or hand-written) config, e.g. runs/relu3_adam/best.yaml")
    t.add_argument("--seeds", type=int, default=1, help="runs with seeds seed, seed+1, ... (default 1)")
    t.add_argument("--validation", action="store_true",
                   help="train on the study's split and score on its validation set, to reproduce the trial")
    t.add_argument("--epochs", type=int, help="override the config's epochs (a quick look)")
    t.add_argument("--train-limit", type=int, help="train on the first N training images only (a quick look)")
    t.add_argument("--eval-limit", type=int, help="score on the first N evaluation images only (a quick look)")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    t.add_argument("--device", help="cpu or cuda (default cpu)")
    t.add_argument("--json", metavar="PATH", help="also write the runs there, for `hpo compare --reuse PATH`")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("compare", help="re-run the paper's configurations and the study's best on the test set; "
                                       "write runs/NAME/report.md")
    _study_args(m)
    m.add_argument("--seeds", type=int, help="seeds per configuration (default 3; --smoke: 2)")
    m.add_argument("--searches", type=int, default=1, metavar="N",
                   help="also re-train the optima of searches 2..N (`hpo study NAME --search K`) and give the optimum "
                        "as mean ± std over searches (default 1)")
    m.add_argument("--dataset", help="re-run on another data set, e.g. mnist (HPO_DATA_DIR)")
    m.add_argument("--epochs", type=int, help="override every configuration's epochs (a quick look; --smoke: 1)")
    m.add_argument("--references", action=argparse.BooleanOptionalAction, default=True,
                   help="also re-run the Xiao et al. 2017 reference MLPs (default: yes)")
    m.add_argument("--device", help="cpu or cuda (default: the study's budget.device)")
    m.add_argument("--out", help="folder for report.md, compare.json and the pictures (default runs/NAME/)")
    m.add_argument("--reuse", metavar="PATH", help="take the optimum's runs from `hpo train --json PATH` (same "
                                                   "config, data and seeds) instead of training it again")
    m.add_argument("--artifacts", metavar="PATH", help=ARTIFACTS_HELP)
    m.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="re-write runs/NAME/report.md from the storage and the last compare.json")
    _study_args(r)
    r.add_argument("--out", help="folder (default runs/NAME/)")
    r.add_argument("--artifacts", metavar="PATH", help=ARTIFACTS_HELP)
    r.set_defaults(func=cmd_report)

    a = sub.add_parser("activations", help="plot each activation with its derivative and print their properties; "
                                           "with --study, retrain a study's best mix configuration over seeds")
    a.add_argument("--out", default="runs/activations", help="folder for the plots (default: runs/activations)")
    a.add_argument("--study", metavar="NAME", help="an Optuna study name in the storage (e.g. mixed_activation)")
    a.add_argument("--mix-seeds", type=int, metavar="N", help="retrain the study's best mix configuration with seeds "
                   "0..N-1 and compare its learned P per layer with the paper's (default 5; stored for the report)")
    a.add_argument("--storage", help="Optuna storage URL (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    a.add_argument("--smoke", action="store_true", help="with --study: a few thousand samples, 1 epoch per cycle; "
                                                        "printed, not stored")
    a.add_argument("--device", help="with --study: cpu or cuda (default: the study's budget.device)")
    a.set_defaults(func=cmd_activations)

    b = sub.add_parser("bench", help="measure throughput, search efficiency, parallel scaling and overhead; "
                                     "write BENCHMARKS.md")
    b.add_argument("--quick", action="store_true", help="tiny sizes, about a minute (default --out "
                                                        "runs/bench-quick.md, so BENCHMARKS.md is left alone)")
    b.add_argument("--out", help="markdown file to write (default BENCHMARKS.md at the repository root)")
    b.add_argument("--only", help="comma-separated items to run: throughput,search,scaling,overhead,packs,versus "
                                  "(default all)")
    b.add_argument("--minutes", type=float, help="item versus: each runner's wall budget in minutes (default 10; "
                                                 "the checkpoints are 10%%, 20%%, 50%% and 100%% of it)")
    b.add_argument("--device", help="cpu or cuda: where the trials train (default cpu)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        thread_cap()  # a bad $HPO_MAX_THREADS is one line before any work, not after the data has loaded
        return args.func(args)
    except HpoError as e:
        print(f"hpo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

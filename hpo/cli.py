"""The `hpo` command. Every HpoError becomes one line on stderr and exit status 2;
a traceback means a bug of ours."""

from __future__ import annotations

import argparse
import sys

from hpo.errors import HpoError


def cmd_study(args) -> int:
    from hpo.runner import run_study

    run_study(args.name, trials=args.trials, timeout=args.timeout, storage=args.storage, smoke=args.smoke)
    return 0


def cmd_check(args) -> int:
    from hpo.config import check_file

    failed = 0
    for path in args.paths:
        try:
            kind = check_file(path)
            print(f"ok: {path} ({kind})")
        except HpoError as e:
            print(f"hpo: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpo", description="Tune small networks with Optuna and hold the result "
                                                        "against hand-tuned configurations.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("study", help="create or resume a study and run it")
    s.add_argument("name", help="a study name (studies/NAME.yaml) or a path to a study file")
    s.add_argument("--trials", type=int, help="total trials the study should hold (default: the file's n_trials)")
    s.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    s.add_argument("--storage", help="Optuna storage URL (default: $HPO_STORAGE or sqlite:///runs/hpo.db)")
    s.add_argument("--smoke", action="store_true", help="tiny scale: a few trials, 1 epoch, a few thousand samples")
    s.set_defaults(func=cmd_study)

    c = sub.add_parser("check", help="validate study and search-space files without running anything")
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except HpoError as e:
        print(f"hpo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

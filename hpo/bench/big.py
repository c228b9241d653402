"""`python -m hpo.bench.big`: is a study of 10,000 trials with hpo's notes still usable?

A synthetic relu3_adam study is written through hpo's own paths (create_or_load and the paper's baselines; each
trial asked from the study's sampler, its user attributes as the objective records them, its note by TrialNotes,
then told), on a fresh SQLite file. Then each reader is timed on it, as a user runs it:

  live note   one write of the study's "best so far" note (LiveNote.flush), in this process
  export      `hpo export NAME` (a fresh process: start-up included)
  report      `hpo report NAME` (a fresh process)
  dashboard   the study page's first data load: `hpo dashboard`, then GET /api/studies/ID (what optuna-dashboard's
              study page fetches first: every trial, with its notes) until it answers; the browser's own
              rendering is not included
Targets (issue 21): report and export <= 15 s, live note <= 1 s, dashboard first load <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna

from hpo import optuna_private
from hpo.bench.pgcluster import free_port
from hpo.errors import HpoError
from hpo.provenance import ROOT
from hpo.results.notes import LiveNote, TrialNotes
from hpo.search.storage import open_storage
from hpo.search.study import create_or_load, enqueue_baselines, load_data, prepare
from hpo.training.spec import TrainConfig
from hpo.trials import trial_state

STUDY = "relu3_adam"


def build(url: str, n: int, seed: int = 0, log=print) -> optuna.Study:
    """A relu3_adam study of n finished trials (90% complete, 8% pruned, 2% failed) with a note on each."""
    cfg, space = prepare(STUDY, smoke=True)
    meta = load_data(cfg).meta  # the split's record (of the smoke-scale data), as a study that ran has it
    study, _ = create_or_load(cfg, open_storage(url, heartbeat=False), cfg.name, meta, space)
    enqueue_baselines(study, cfg, space)
    # The study's TPE would cost more per trial as the study grows; what is measured here is the reading.
    study = optuna.load_study(study_name=study.study_name, storage=optuna_private.storage(study),
                              sampler=optuna.samplers.RandomSampler(seed=seed))
    notes = TrialNotes(cfg.paper, None)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(n):
        trial = study.ask()
        config = TrainConfig(**{"seed": cfg.seed, **space.suggest(trial)}).to_dict(active_only=True)
        epochs = int(config.get("epochs") or 10)
        curve = [round(min(0.99, 0.80 + 0.08 * rng.random() + 0.004 * e), 5) for e in range(epochs)]
        roll = rng.random()
        state = "complete" if roll < 0.90 else "pruned" if roll < 0.98 else "crashed"
        attrs = {"config": config, "worker": f"synthetic:{os.getpid()}", "n_params": rng.randint(20_000, 60_000),
                 "outcome": state, "reason": "" if state == "complete" else f"synthetic {state} trial",
                 "epochs_trained": epochs if state == "complete" else max(1, epochs // 3),
                 "train_seconds": round(30 * rng.random(), 3), "samples_per_sec": round(20_000 * rng.random(), 1),
                 "val_curve": curve if state == "complete" else curve[:max(1, epochs // 3)]}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        value = curve[-1] if state == "complete" else None
        notes.write(trial, state, value)
        study.tell(trial, value, state=trial_state(state))
        if (i + 1) % 1000 == 0:
            log(f"  {i + 1} trials written ({time.perf_counter() - t0:.0f}s)")
    return study


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise HpoError(f"{' '.join(cmd[2:])} failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return time.perf_counter() - t0


def dashboard_first_load(url: str, study_id: int, env: dict) -> float:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", "--storage", url, "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server.stdout.readline()  # "optuna-dashboard on ...": listening
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0", timeout=300) as r:
            body = json.loads(r.read())
        seconds = time.perf_counter() - t0
        if len(body.get("trials", [])) == 0:
            raise HpoError("the dashboard's study API returned no trials")
        return seconds
    finally:
        server.terminate()
        server.wait(10)


def measure(n: int, log=print, keep: Path | None = None) -> dict:
    """Build the study (or reuse `keep`'s, a SQLite file a previous run kept) and time the four readers."""
    with tempfile.TemporaryDirectory(prefix="hpo-big-") as tmp:
        db = keep or Path(tmp) / "big.db"
        url = f"sqlite:///{db.resolve()}"
        t0 = time.perf_counter()
        if db.is_file():
            study = optuna.load_study(study_name=STUDY, storage=url)
            if len(study.trials) < n:
                raise HpoError(f"--keep {db}: holds {len(study.trials)} trials, fewer than --trials {n}")
            log(f"  reading the {len(study.trials)} trials kept in {db}")
        else:
            study = build(url, n, log=log)
        built = time.perf_counter() - t0
        note = LiveNote()
        t0 = time.perf_counter()
        note.flush(study)
        live = time.perf_counter() - t0
        env = {**os.environ, "HPO_STORAGE": url}
        hpo = [sys.executable, "-m", "hpo.cli"]
        export = timed([*hpo, "export", STUDY, "--out", str(Path(tmp) / "export")], env)
        report = timed([*hpo, "report", STUDY, "--out", str(Path(tmp) / "report")], env)
        dashboard = dashboard_first_load(url, optuna_private.study_id(study), env)
    got = {"trials": n, "build_s": built, "live_note_s": live, "export_s": export, "report_s": report,
           "dashboard_first_load_s": dashboard}
    log(json.dumps(got, indent=1))
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpo.bench.big", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10_000, help="trials in the synthetic study (default 10000)")
    p.add_argument("--keep", type=Path, metavar="FILE.db",
                   help="build the study into this SQLite file and keep it; a later run with the same file only "
                        "measures (building 10,000 trials takes minutes)")
    args = p.parse_args(argv)
    try:
        if args.trials < 1:
            raise HpoError("--trials: must be a positive number")
        measure(args.trials, keep=args.keep)
    except HpoError as e:
        print(f"hpo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

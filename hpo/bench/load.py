"""`make load`: many workers on one study, on PostgreSQL directly and through `hpo proxy`, with some killed.

Each setting gets a fresh database on a throwaway loopback cluster (hpo.bench.pgcluster) or on --storage's
server. N independent `hpo study FILE --storage URL` processes join one study, as workers on N machines would;
the trials are cheap (relu3_adam at --smoke scale: 3,000 images, one epoch, one thread, random sampler), so that
the storage, not training, is what is measured. While they run, `--kills` workers are SIGKILLed in the middle
of a trial, spread over the run. Afterwards the storage itself is read for what matters:

  trials per second   counted trials over the span from the first trial's start to the last one's end
  peak connections    the most connections to the setting's database in pg_stat_activity (sampled each 0.2 s)
  outcomes            COMPLETE / PRUNED / FAIL (FAIL: the killed workers' trials, and `surplus` ones)
  retries run         killed trials whose retry ran (one can lose the race for the freed slot: budget.py)
  baselines           each paper configuration run once (FAIL attempts aside)
  duplicated          enqueued configurations that were run more than once (FAIL attempts aside)
  left running        RUNNING or WAITING trials at the end
  total               counted trials; must equal n_trials

`lost` is true when any of the last four is wrong. The heartbeat is shortened (HPO_HEARTBEAT_INTERVAL 2 s,
HPO_HEARTBEAT_GRACE 6 s) so that a killed worker's trials are retried within the run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from hpo import optuna_private
from hpo.bench.pgcluster import Cluster, free_port
from hpo.errors import HpoError
from hpo.provenance import ROOT
from hpo.search.files import read_yaml
from hpo.search.storage import open_storage
from hpo.search.studyfile import load_study
from hpo.trials import COUNTED

STUDY = "relu3_adam"
HEARTBEAT = {"HPO_HEARTBEAT_INTERVAL": "2", "HPO_HEARTBEAT_GRACE": "6"}
MODES = ("direct", "proxy")
SECTION = "<!-- written by `make load` (hpo/bench/load.py); `make bench` keeps it -->"
OWN = "hpo-load"  # this process's own connections (the look for a trial to kill): not counted


@dataclass
class Setting:
    mode: str  # direct | proxy
    workers: int
    trials: int
    kills: int


@dataclass
class Result:
    setting: Setting
    wall_s: float = 0.0
    per_second: float = 0.0
    peak_connections: int = 0
    states: Counter = field(default_factory=Counter)
    baselines: dict = field(default_factory=dict)  # name -> times run (FAIL attempts aside)
    duplicated: int = 0
    retried: int = 0  # killed workers' trials whose retry ran (a retry can lose its slot as `surplus`)
    fails: Counter = field(default_factory=Counter)  # outcome of each FAIL trial ('killed': none recorded)
    left_running: int = 0
    total: int = 0
    killed: list = field(default_factory=list)  # pids
    exit_codes: list = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return (self.total != self.setting.trials or self.left_running or self.duplicated
                or any(n != 1 for n in self.baselines.values()))


def study_file(workdir: Path) -> Path:
    """relu3_adam with a random sampler (TPE's cost grows with the trials; here the storage is measured) and one
    torch thread per worker; --smoke makes it one epoch on 3,000 images with two paper baselines."""
    src = load_study(STUDY)
    doc, _ = read_yaml(ROOT / "studies" / f"{STUDY}.yaml")
    doc.update(space=str(ROOT / "search_spaces" / f"{STUDY}.yaml"), sampler="random", pruner="none")
    doc["budget"] = {**doc.get("budget", {}), "threads": 1}
    for key in ("timeout", "sampler_options", "confirm"):  # TPE's options; n_trials counted trials and no more
        doc.pop(key, None)
    doc["split"] = {"val_size": src.val_size, "seed": src.split_seed}
    path = workdir / "load.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class _Connections(threading.Thread):
    """The peak number of server connections to one database, sampled until stopped."""

    def __init__(self, cluster: Cluster, dbname: str):
        super().__init__(daemon=True)
        self.conn = cluster.connect()
        self.conn.autocommit = True
        self.dbname, self.peak, self.done = dbname, 0, threading.Event()

    def run(self) -> None:
        cursor = self.conn.cursor()
        while not self.done.wait(0.2):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
                           (self.dbname, OWN))
            self.peak = max(self.peak, cursor.fetchone()[0])

    def stop(self) -> int:
        self.done.set()
        self.join(5)
        self.conn.close()
        return self.peak


def _hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", *args]


def _pid(trial) -> int:
    """The process that ran `trial` (Objective records host:pid); 0 when not recorded yet."""
    return int(trial.user_attrs.get("worker", ":0").rsplit(":", 1)[1])


def _kill_one_mid_trial(study: optuna.Study, procs: dict[int, subprocess.Popen], killed: list[int]) -> bool:
    """SIGKILL one live worker that has a trial running now (frozen first, so that it cannot finish the
    trial between the look and the kill). True when one was killed."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = _pid(t)
        if pid not in procs or pid in killed or procs[pid].poll() is not None:
            continue
        os.kill(pid, signal.SIGSTOP)
        if optuna_private.storage(study).get_trial(optuna_private.trial_id(t)).state == TrialState.RUNNING:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return True
        os.kill(pid, signal.SIGCONT)
    return False


def run_setting(cluster: Cluster, setting: Setting, workdir: Path, log=print, timeout: float = 3600,
                study_path: Path | None = None) -> Result:
    """One setting on a fresh database of `cluster`; `study_path`: another study file (default: study_file's),
    run with --smoke."""
    dbname = f"load_{setting.mode}_{setting.workers}_{setting.trials}_{int(time.time() * 1000) % 10**8}"
    direct = cluster.database(dbname)
    path = study_path or study_file(workdir)
    name = f"{load_study(str(path)).name}-smoke"
    env = {**os.environ, **HEARTBEAT, "HPO_ARTIFACT_STORE": str(workdir / "artifacts")}
    proxy = None
    url = direct
    watch = _Connections(cluster, dbname)
    watch.start()
    result = Result(setting)
    procs: dict[int, subprocess.Popen] = {}
    logs = []
    own = open_storage(f"{direct}?application_name={OWN}", heartbeat=False)  # left out of the connection count
    study = None
    try:
        if setting.mode == "proxy":
            port = free_port()
            proxy = subprocess.Popen(_hpo("proxy", "--storage", direct, "--port", str(port)), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if "storage proxy for" not in (proxy.stdout.readline() or ""):
                raise HpoError(f"hpo proxy did not start: {proxy.stdout.read()[-500:]}")
            url = f"grpc://127.0.0.1:{port}"
        logs = [open(workdir / f"{dbname}-w{i}.log", "w") for i in range(setting.workers)]  # noqa: SIM115
        t0 = time.perf_counter()
        for i in range(setting.workers):
            p = subprocess.Popen(_hpo("study", str(path), "--storage", url, "--smoke", "--trials", str(setting.trials)),
                                 cwd=ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
            procs[p.pid] = p
        # Kills at evenly spaced fractions of the trials: 1/(k+1), 2/(k+1), ...
        marks = [setting.trials * (j + 1) // (setting.kills + 1) for j in range(setting.kills)]
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs.values()):
            if time.monotonic() > deadline:
                raise HpoError(f"load setting {setting} did not finish in {timeout:.0f}s")
            if marks and study is None:
                try:
                    study = optuna.load_study(study_name=name, storage=own)
                except KeyError:
                    pass
            if marks and study is not None:
                done = len(study.get_trials(deepcopy=False, states=COUNTED))
                if done >= marks[0] and _kill_one_mid_trial(study, procs, result.killed):
                    log(f"  killed worker {result.killed[-1]} at {done} trials")
                    marks.pop(0)
            time.sleep(0.2)
        result.wall_s = time.perf_counter() - t0
        result.exit_codes = sorted(p.returncode for p in procs.values())
    finally:
        for f in logs:
            f.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if proxy is not None:
            proxy.send_signal(signal.SIGINT)
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        result.peak_connections = watch.stop()
    _tally(result, optuna.load_study(study_name=name, storage=own))
    own.engine.dispose()
    return result


def _tally(result: Result, study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    result.states = Counter(t.state.name for t in trials)
    alive = [t for t in trials if t.state != TrialState.FAIL]
    killed = {t.number for t in trials if t.state == TrialState.FAIL and _pid(t) in result.killed}
    result.fails = Counter("killed" if t.number in killed else t.user_attrs.get("outcome", "?")
                           for t in trials if t.state == TrialState.FAIL)
    result.retried = sum(t.system_attrs.get("failed_trial") in killed for t in alive)
    result.baselines = dict(Counter(t.user_attrs["baseline"] for t in alive if t.user_attrs.get("baseline")))
    enqueued = Counter(tuple(sorted(t.params.items())) for t in alive if "fixed_params" in t.system_attrs)
    result.duplicated = sum(n - 1 for n in enqueued.values())
    result.left_running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    counted = [t for t in trials if t.state in COUNTED]
    result.total = len(counted)
    if counted:
        span = (max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted)).total_seconds()
        result.per_second = len(counted) / span if span > 0 else 0.0


def table(results: list[Result]) -> str:
    rows = ["| storage | workers | n_trials | killed | trials/s | peak DB connections | COMPLETE / PRUNED / FAIL | "
            "retries run | baselines run | duplicated | left RUNNING | total | nothing lost |",
            "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---|"]
    for r in results:
        s = r.setting
        runs = ", ".join(f"{n}x" for n in r.baselines.values()) or "none"
        rows.append(f"| {'PostgreSQL' if s.mode == 'direct' else 'hpo proxy'} | {s.workers} | {s.trials} | "
                    f"{len(r.killed)} | {r.per_second:.1f} | {r.peak_connections} | {r.states['COMPLETE']} / "
                    f"{r.states['PRUNED']} / {r.states['FAIL']} | {r.retried} | {runs} | {r.duplicated} | "
                    f"{r.left_running} | "
                    f"{r.total} | {'yes' if not r.lost else '**no**'} |")
    return "\n".join(rows)


def run_load(workers: list[int], trials: int, kills: int, modes: list[str], out: Path | None, log=print,
             max_connections: int = 400, append: bool = False) -> list[Result]:
    """Run every setting on one throwaway cluster and write the section of `out`; `append`: add this run's rows
    to the table already there (a larger setting run later) instead of replacing it."""
    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-load-") as tmp, Cluster(max_connections=max_connections) as cluster:
        for n in workers:
            for mode in modes:
                setting = Setting(mode, n, trials, min(kills, n - 1))
                log(f"load: {mode}, {n} workers, {trials} trials, {setting.kills} killed")
                r = run_setting(cluster, setting, Path(tmp), log=log)
                log(f"  {r.per_second:.1f} trials/s, {r.wall_s:.0f}s, peak {r.peak_connections} connections, "
                    f"{dict(r.states)}, FAIL outcomes {dict(r.fails)}, "
                    f"{'nothing lost' if not r.lost else 'LOST TRIALS'}")
                results.append(r)
    text = table(results)
    log(text)
    if out is not None:
        load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
        when = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
        run = (f"`make load ARGS=\"{' '.join(sys.argv[1:])}\"` on {when}, {os.cpu_count()} cores, load average "
               f"{load_avg} at the end")
        old = _split(out.read_text() if out.is_file() else "")[1] if append else ""
        write_section(out, section_body(text, run, old))
    return results


def _split(text: str) -> tuple[str, str, str]:
    """(before, the load test's section, after) of a BENCHMARKS.md text: the section runs from its marker to the
    next second-level heading after its own (a section written after it, such as one measured separately)."""
    if SECTION not in text:
        return text, "", ""
    before, rest = text.split(SECTION, 1)
    own = rest.find("\n## ")
    nxt = rest.find("\n## ", own + 1) if own >= 0 else -1
    return before, SECTION + (rest if nxt < 0 else rest[:nxt]), "" if nxt < 0 else rest[nxt:]


def section_body(text: str, run: str, old: str = "") -> str:
    """The load section for this run's table `text` and its description `run`; with the `old` section (--append),
    its rows come first and its runs are named too."""
    old_rows = [line for line in old.splitlines() if line.startswith(("| PostgreSQL", "| hpo proxy"))]
    if old_rows:
        runs = old.split("\n\n")[1].split(" (other programs")[0]  # the runs the section named so far
        text = "\n".join(text.splitlines()[:2] + old_rows + text.splitlines()[2:])
        run = f"{runs}, and {run}"
    return ("## Load test: many workers, some killed\n\n"
            f"{run} (other programs on the machine slow every setting alike). hpo/bench/load.py says what each "
            f"column means.\n\n{text}\n")


def write_section(path: Path, body: str) -> None:
    """Put `body` as the load test's section of `path` (BENCHMARKS.md), replacing the last one in place and
    keeping what comes before and after it; a file without one gets it at the end."""
    before, _, after = _split(path.read_text() if path.is_file() else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((before.rstrip() + "\n\n" if before.strip() else "") + SECTION + "\n" + body.rstrip() + "\n"
                    + after)


def kept_section(path: Path) -> str:
    """The load test's section of `path`, for `hpo bench` to keep when it rewrites the file; '' if none."""
    section = _split(path.read_text() if path.is_file() else "")[1]
    return "\n" + section.rstrip() + "\n" if section else ""


def _positive_list(raw: str) -> list[int]:
    try:
        values = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, but got {raw!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpo.bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=_positive_list, default=[8], help="worker counts, e.g. 8,32,64 (default 8)")
    p.add_argument("--trials", type=int, default=300, help="n_trials per setting (default 300)")
    p.add_argument("--kills", type=int, default=2, help="workers SIGKILLed mid-trial per setting (default 2)")
    p.add_argument("--modes", default="direct,proxy", help="direct,proxy (default both)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"),
                   help="markdown file whose load section to (re)write (default BENCHMARKS.md)")
    p.add_argument("--append", action="store_true",
                   help="add this run's rows to the section's table instead of replacing it (a larger setting later)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        if not modes or set(modes) - set(MODES):
            raise HpoError(f"--modes: expected some of {', '.join(MODES)}, but got {args.modes!r}")
        if args.trials < 1 or args.kills < 0:
            raise HpoError("--trials must be positive and --kills not negative")
        results = run_load(args.workers, args.trials, args.kills, modes, Path(args.out),
                           max_connections=max(100, 8 * max(args.workers) + 50), append=args.append)
    except HpoError as e:
        print(f"hpo: error: {e}", file=sys.stderr)
        return 2
    return 1 if any(r.lost for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

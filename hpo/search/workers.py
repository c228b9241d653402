"""`hpo study NAME --workers N`: N worker processes on one study, on one machine.

The parent (hpo.search.runner: the same path as one process) validates, creates the study and enqueues
the paper's baselines once, before any worker starts (enqueuing from several processes at once could
duplicate them); Optuna hands each WAITING trial to exactly one worker. Each worker (a fresh 'spawn'
process: no forked torch or SQLite state) loads the data and the study and optimizes until the study holds
n_trials counted trials (hpo.search.budget.BudgetStudy), with budget.threads split between the workers. The
parent trains nothing: it polls the storage for the live display, fails the trials of workers that died
(heartbeat), and on Ctrl-C stops the workers, whose running trials are marked FAIL and not counted.

Across machines no parent is needed: each machine runs `hpo study NAME --storage postgresql://...`
(optionally with --workers), and BudgetStudy keeps the total at n_trials.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings

import optuna
from optuna.trial import TrialState
from rich.console import Console

from hpo.display import LiveDisplay
from hpo.search import confirm
from hpo.search.budget import BudgetStudy, Deadline
from hpo.search.objective import Objective, StudyNotes
from hpo.search.pack_runner import run_packs
from hpo.search.samplers import joining_seed, make_pruner, make_sampler
from hpo.search.storage import close_storage, fail_stale, open_storage
from hpo.search.study import load_data, prepare
from hpo.search.studyfile import StudyConfig
from hpo.training.loop import train
from hpo.training.runtime import set_threads
from hpo.trials import add_provenance, counted, study_attrs
from hpo.urls import redact

POLL_SECONDS = 1.0
STOP_SECONDS = 20  # how long stopped workers get to mark their trials before they are terminated
READY_SECONDS = 120  # how long a loaded worker waits for the others before it starts alone


def threads_per_worker(threads: int, workers: int) -> int:
    return max(1, threads // workers)


class _Interrupts:
    """SIGINT/SIGTERM in a worker, from a terminal's Ctrl-C or from the parent.

    Raised as KeyboardInterrupt while the worker loads or a trial trains: Optuna then marks the trial
    FAIL (outcome `interrupted`). Anywhere else in the loop (asking for, telling or waiting for trials)
    an exception could leave the storage half updated, e.g. a trial that is never told stays RUNNING
    until its heartbeat expires, so there the worker stops at the next safe point instead. Later signals
    are ignored: the terminal's Ctrl-C and the parent's forwarded one must not cut the clean-up short.
    """

    def __init__(self):
        self.requested = False
        self.raise_now = True  # while loading there is nothing in the storage to leave half done
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.requested = True
        if self.raise_now:
            raise KeyboardInterrupt

    def around(self, train):
        """`train` (one trial's or one pack's training) with signals raised inside it: the worker's objective
        trains through this, so a signal once training has ended stops the worker after the trial is told
        instead of failing a trial that has finished training."""
        def run(*args, **kwargs):
            if self.requested:  # the signal came while this trial was being asked for or built
                raise KeyboardInterrupt
            self.raise_now = True
            try:
                return train(*args, **kwargs)
            finally:
                self.raise_now = False

        return run

    def __call__(self, study, trial) -> None:  # a study callback: the safe point after each trial
        if self.requested:
            study.stop()


class _ParentWatch:
    """Study callback: an orphaned worker (its parent was killed) stops after its current trial."""

    def __init__(self):
        self.parent = mp.parent_process()

    def __call__(self, study, trial):
        if self.parent is not None and not self.parent.is_alive():
            study.stop()


def worker_main(name_or_path: str, study_name: str, url: str, *, smoke: bool, n_trials: int,
                timeout: float | None, threads: int, ready=None, pack: int = 1,
                notes: StudyNotes | None = None, search: int = 1, deadline: float | None = None,
                workers: int = 1, spawned: float | None = None) -> None:
    """One worker process: load data and study, optimize until the study's trials are all taken. `deadline`: the
    study's time budget (hpo.search.budget.Deadline); `spawned`: when the parent started the workers."""
    interrupts = _Interrupts()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the parent shows every trial and its reason
    set_threads(threads)
    storage = study = None
    try:
        try:
            cfg, space = prepare(name_or_path, smoke=smoke, trials=n_trials, timeout=timeout, pack=pack,
                                 search=search)
            splits = load_data(cfg)
            storage = open_storage(url)
            sampler = make_sampler(cfg, space, seed=joining_seed())  # not the parent's draws
            study = BudgetStudy(study_name, storage, cfg.n_trials, sampler=sampler, pruner=make_pruner(cfg, space))
            if study_attrs(study).get("split") is None:  # the parent created the study without loading the data
                add_provenance(study, split=splits.meta)
        except BaseException:
            if ready is not None:
                ready.abort()  # the others start now instead of waiting for this worker
            raise
        if ready is not None:  # start together, so that no worker runs the whole study while the others load
            try:
                ready.wait(timeout=READY_SECONDS)
            except threading.BrokenBarrierError:
                pass  # a worker failed to load (its error is on stderr); the others go on without it
        remaining = cfg.n_trials - counted(study)
        interrupts.raise_now = False
        study.should_stop = lambda: interrupts.requested  # a worker waiting for the last trials stops too
        objective = Objective(cfg, splits, threads=threads, space=space, train_fn=interrupts.around(train),
                              notes=notes.trial_notes(cfg.paper) if notes is not None else None)
        callbacks = [interrupts, _ParentWatch()]
        if deadline is not None:  # the study's time budget, counted by the parent (hpo.search.runner)
            # the confirmation phase starts workers again: what starting these took (importing, loading) is kept too
            startup = time.time() - (spawned or time.time()) if cfg.confirm.top else 0.0
            callbacks.append(Deadline(deadline, lambda st: confirm.reserve_seconds(st, cfg, workers) + startup))
        if remaining > 0 and cfg.budget.packs:
            run_packs(study, objective, pack=cfg.budget.pack, max_trials=remaining, callbacks=callbacks,
                      around=interrupts.around)
        elif remaining > 0:
            study.run(objective, max_trials=remaining, callbacks=callbacks)
    except KeyboardInterrupt:
        pass  # stopped by the parent or Ctrl-C; Optuna has marked the running trial FAIL
    if study is not None and interrupts.requested:
        study.fail_left_running()  # a signal inside a storage write can leave one untold
    _quick_exit(storage)


def _quick_exit(storage) -> None:
    """Leave without the interpreter's teardown: with torch loaded (and torch._dynamo, which its optimizers
    import) that takes seconds, and every trial is committed already. Errors still leave the normal way."""
    if storage is not None:
        close_storage(storage)  # close the database connections cleanly
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _parent_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill PARENT` stops the workers as Ctrl-C does


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return f"exit status {code}"


def _stop(procs: list, console: Console) -> None:
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    deadline = time.time() + STOP_SECONDS
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            console.print(f"[yellow]worker {p.name} did not stop in {STOP_SECONDS}s; terminating it[/]")
            p.kill()
            p.join()


def run_workers(name_or_path: str, study: optuna.Study, cfg: StudyConfig, *, url: str, n_procs: int,
                threads: int, done: int, console: Console, pack: int = 1, notes: StudyNotes | None = None,
                deadline: float | None = None) -> None:
    """Start `n_procs` worker processes on the study, show their trials as they finish, stop them on Ctrl-C.
    The workers write their trials' notes; the study's live note is written here alone."""
    ctx = mp.get_context("spawn")
    kwargs = {"smoke": cfg.smoke, "n_trials": cfg.n_trials, "timeout": cfg.timeout, "threads": threads,
              "ready": ctx.Barrier(n_procs), "pack": pack, "notes": notes, "search": cfg.search, "deadline": deadline,
              "workers": n_procs, "spawned": time.time()}
    procs = [ctx.Process(target=worker_main, args=(name_or_path, study.study_name, url), kwargs=kwargs,
                         name=f"w{i}", daemon=False) for i in range(n_procs)]
    finished = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    shown = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    reported: set[str] = set()
    t0 = time.time()
    note = notes.live() if notes is not None else None
    in_main = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = signal.signal(signal.SIGTERM, _parent_sigterm) if in_main else None
    try:
        with LiveDisplay(console, cfg.n_trials, done, len(cfg.objectives) > 1, deadline) as live:
            try:
                for p in procs:
                    p.start()
                while True:
                    alive = [p for p in procs if p.is_alive()]
                    fail_stale(study)  # a killed worker's trial is retried by the others
                    for t in study.get_trials(deepcopy=False, states=finished):
                        if t.number not in shown:
                            shown.add(t.number)
                            live(study, t)
                            if note is not None:
                                note(study, t)
                    for p in procs:
                        if p.exitcode not in (None, 0) and p.name not in reported:
                            reported.add(p.name)
                            live.progress.console.print(f"[red]worker {p.name} (pid {p.pid}) died: "
                                                        f"{_signal_name(p.exitcode)}[/]")
                    if not alive:
                        break
                    time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                live.progress.stop()
                console.print("[yellow]interrupted[/]: stopping the workers")
                _stop(procs, console)
                console.print(f"{counted(study)} finished trials are kept in {redact(url)}; "
                              f"run the same command to continue")
                raise
    finally:
        if note is not None:
            note.flush(study)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    console.print(f"ran {counted(study) - done} trials in {time.time() - t0:.0f}s on {n_procs} workers")

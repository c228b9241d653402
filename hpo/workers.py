"""`hpo study NAME --workers N`: N worker processes on one study, on one machine.

The parent validates, creates the study and enqueues the paper's baselines once, before any worker
starts (enqueuing from several processes at once could duplicate them); Optuna hands each WAITING
trial to exactly one worker. Each worker (a fresh 'spawn' process: no forked torch or SQLite state)
loads the data and the study and optimizes until the study holds n_trials counted trials
(hpo.study.BudgetStudy), with budget.threads split between the workers. The parent trains nothing:
it polls the storage for the live display, fails the trials of workers that died (heartbeat), and on
Ctrl-C stops the workers, whose running trials are marked FAIL and not counted.

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

from hpo import data as data_mod
from hpo import study as study_mod
from hpo.config import StudyConfig
from hpo.runner import LiveDisplay, counts_line, load_data, prepare, summary_table
from hpo.study import BudgetStudy, counted, fail_stale, open_storage, redact

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

    def around(self, objective):
        def run(trial):
            if self.requested:  # the signal came while this trial was being asked for
                raise KeyboardInterrupt
            self.raise_now = True
            try:
                return objective(trial)
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
                timeout: float | None, threads: int, ready=None) -> None:
    """One worker process: load data and study, optimize until the study's trials are all taken."""
    interrupts = _Interrupts()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the parent shows every trial and its reason
    import torch

    from hpo.objective import Objective

    torch.set_num_threads(threads)
    storage = None
    try:
        try:
            cfg, space = prepare(name_or_path, smoke=smoke, trials=n_trials, timeout=timeout)
            splits = load_data(cfg, smoke)
            storage = open_storage(url)
            sampler = study_mod.make_sampler(cfg, space, seed=study_mod.joining_seed())  # not the parent's draws
            study = BudgetStudy(study_name, storage, cfg.n_trials, sampler=sampler,
                                pruner=study_mod.make_pruner(cfg, space))
            if study.user_attrs.get("split") is None:  # the parent created the study without loading the data
                study.set_user_attr("split", splits.meta)
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
        if remaining > 0:
            study.run(interrupts.around(Objective(cfg, splits, threads=threads, space=space)), max_trials=remaining,
                      timeout=cfg.timeout, callbacks=[interrupts, _ParentWatch()])
    except KeyboardInterrupt:
        pass  # stopped by the parent or Ctrl-C; Optuna has marked the running trial FAIL
    _quick_exit(storage)


def _quick_exit(storage) -> None:
    """Leave without the interpreter's teardown: with torch loaded (and torch._dynamo, which its optimizers
    import) that takes seconds, and every trial is committed already. Errors still leave the normal way."""
    if storage is not None:
        storage.engine.dispose()  # close the database connections cleanly
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


def run_parallel(name_or_path: str, cfg: StudyConfig, space, *, workers: int, url: str, smoke: bool,
                 console: Console) -> optuna.Study:
    """The parent: create the study once, start the workers, show their trials, end with the summary."""
    # Decoded (and cached) once here: a missing data set fails before any worker starts, and the workers
    # read the cache instead of decoding it N times. The splits themselves are made in the workers.
    data_mod.load(cfg.dataset)
    study_name = cfg.name + ("-smoke" if smoke else "")
    rdb = open_storage(url)
    study, created = study_mod.create_or_load(cfg, rdb, study_name, None, space)
    if not created and study.user_attrs.get("config_hash") not in (None, study_mod.config_hash(cfg)):
        console.print(f"[yellow]warning:[/] {cfg.source} changed since study {study_name!r} was created; "
                      f"resuming it with the new file")
    new_baselines = study_mod.enqueue_baselines(study, cfg, space)
    fail_stale(study)
    done = counted(study)
    remaining = cfg.n_trials - done
    n_procs = min(workers, max(remaining, 0))
    threads = threads_per_worker(cfg.budget.threads, n_procs or workers)
    from hpo.dashboard import hint

    console.print(f"[bold]{study_name}[/] ({cfg.source}): {cfg.dataset}, space {space.source}, sampler {cfg.sampler}, "
                  f"pruner {cfg.pruner}; {n_procs or workers} workers x {threads} threads")
    console.print(f"storage {redact(url)}; {'created' if created else f'resuming with {done} finished trials'}; "
                  f"{new_baselines} paper baselines enqueued; {hint(url)}")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        _, grace = study_mod.heartbeat_settings()
        console.print(f"[yellow]{len(running)} trials are marked running[/] (other workers, or killed ones: those "
                      f"are failed and retried {grace}s after their last heartbeat)")
    if remaining <= 0:
        console.print(f"study already has {done} of {cfg.n_trials} trials; raise --trials to run more")
    else:
        _run_workers(name_or_path, study, cfg, url=url, smoke=smoke, n_procs=n_procs, threads=threads,
                     done=done, console=console)
    console.print(summary_table(study))
    console.print(f"outcomes: {counts_line(study)}")
    return study


def _run_workers(name_or_path: str, study: optuna.Study, cfg: StudyConfig, *, url: str, smoke: bool, n_procs: int,
                 threads: int, done: int, console: Console) -> None:
    ctx = mp.get_context("spawn")
    kwargs = {"smoke": smoke, "n_trials": cfg.n_trials, "timeout": cfg.timeout, "threads": threads,
              "ready": ctx.Barrier(n_procs)}
    procs = [ctx.Process(target=worker_main, args=(name_or_path, study.study_name, url), kwargs=kwargs,
                         name=f"w{i}", daemon=False) for i in range(n_procs)]
    finished = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    shown = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    reported: set[str] = set()
    t0 = time.time()
    in_main = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = signal.signal(signal.SIGTERM, _parent_sigterm) if in_main else None
    try:
        with LiveDisplay(console, cfg.n_trials, done, len(cfg.objectives) > 1) as live:
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
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    console.print(f"ran {counted(study) - done} trials in {time.time() - t0:.0f}s on {n_procs} workers")

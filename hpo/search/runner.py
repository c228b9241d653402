"""`hpo study`: validate, create or resume the study, run it with a live display in this process or in N
worker processes, and end with a summary of the top trials and the baselines. One path for 1..N workers:
only where the trials train differs (here, or in hpo.search.workers)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

import optuna
from optuna.trial import TrialState
from rich.console import Console

from hpo import data as data_mod
from hpo.display import LiveDisplay, counts_line, make_console, summary_table
from hpo.errors import HpoError
from hpo.hints import dashboard_hint, describe_storage
from hpo.search import confirm
from hpo.search.budget import BudgetStudy, Deadline, taken
from hpo.search.objective import Objective, StudyNotes
from hpo.search.pack_runner import run_packs
from hpo.search.samplers import joining_seed, make_sampler
from hpo.search.storage import fail_stale, heartbeat_settings, open_storage
from hpo.search.study import check_same_data, config_hash, create_or_load, enqueue_baselines, load_data, prepare
from hpo.search.studyfile import StudyConfig
from hpo.search.workers import run_workers, threads_per_worker
from hpo.trials import COUNTED, counted, searched, study_attrs
from hpo.urls import redact, storage_url


def run_study(name_or_path: str, *, trials: int | None = None, timeout: float | None = None,
              storage: str | None = None, smoke: bool = False, console: Console | None = None,
              workers: int | None = None, pack: int | str | None = None, notes: StudyNotes | None = None,
              search: int = 1) -> optuna.Study:
    """Create or resume the study `name_or_path` names and run it to n_trials counted trials, in `workers`
    processes (default: the study's budget.workers; one at smoke scale) and `pack` (default: the study's
    budget.pack) trials at a time as one stacked computation. `notes`: what the run writes for optuna-dashboard
    (hpo.results.notes.DashboardNotes; hpo.api.run_study and `hpo study` pass one), None for nothing."""
    started = time.time()
    console = console or make_console()
    if workers is not None and workers < 1:
        raise HpoError(f"--workers: must be a positive number, but got {workers}")
    cfg, space = prepare(name_or_path, smoke=smoke, trials=trials, timeout=timeout, pack=pack, search=search)
    if workers is None:  # a smoke run's few short trials would take longer to start workers than to train
        workers = 1 if cfg.smoke else cfg.budget.workers
    if notes is not None:
        notes = notes.bind(storage_url(storage, mkdir=False))  # a bad --artifacts fails here too
    parallel = workers > 1
    if parallel:
        # The parent of N worker processes trains nothing and loads no splits. The data set is decoded (and
        # cached) once here: a missing one fails before any worker starts, and the workers read the cache.
        sha256 = data_mod.load(cfg.dataset).sha256
        splits = None
    else:
        splits = load_data(cfg)
        sha256 = splits.meta["data_sha256"]
    url = storage_url(storage)
    name = cfg.study_name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(url)
    study, created = create_or_load(cfg, rdb, name, splits.meta if splits else None, space)
    if not created:
        check_same_data(study, sha256)
    if not created and study_attrs(study).get("config_hash") not in (None, config_hash(cfg)):
        console.print(f"[yellow]warning:[/] {cfg.source} changed since study {name!r} was created; "
                      f"resuming it with the new file")
    new_baselines = enqueue_baselines(study, cfg, space)
    if parallel:
        fail_stale(study)
    # Confirmation runs (hpo.search.confirm) come on top of n_trials: the search's slots are n_trials plus those
    # already held, so that a study resumed with more trials runs its n_trials searched ones.
    search_cfg = replace(cfg, n_trials=cfg.n_trials + confirm.held(study))
    done = counted(study)
    remaining = search_cfg.n_trials - done
    if parallel:
        n_procs = min(workers, max(remaining, 0)) or min(workers, cfg.confirm.runs) or workers
        threads = threads_per_worker(cfg.budget.threads, n_procs)
        data_line = f"{cfg.dataset}"
        tail = f"; {n_procs} workers x {threads} thread{'' if threads == 1 else 's'}"
    else:
        data_line = f"{cfg.dataset} {splits.meta['n_train']} train / {splits.meta['n_eval']} validation"
        tail = ""
    if cfg.budget.packs:
        size = "a calibrated size" if cfg.budget.pack == "auto" else f"up to {cfg.budget.pack} trials"
        tail += f"; packs of {size}"
    console.print(f"[bold]{name}[/] ({cfg.source}): {data_line}, space {space.source}, sampler {cfg.sampler}, "
                  f"pruner {cfg.pruner}{' at percent of each schedule' if cfg.pruner_step == 'percent' else ''}{tail}")
    opened = "created" if created else f"resuming with {done} finished trials"
    console.print(f"storage {describe_storage(url)}; {opened}; "
                  f"{new_baselines} paper baselines enqueued; {dashboard_hint(url)}")
    if notes is not None and notes.missing_pictures(redact(url)):
        console.print(notes.missing_pictures(redact(url)))
    if parallel:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            console.print(f"[yellow]{len(running)} trials are marked running[/] (other workers, or killed ones: those "
                          f"are failed and retried {heartbeat_settings()[1]}s after their last heartbeat)")
    trial_notes = notes.trial_notes(cfg.paper) if notes is not None else None  # its folder made here, not in a worker

    def run_phase(phase_cfg: StudyConfig, done: int, deadline: float | None = None) -> optuna.Study:
        if parallel:
            run_workers(name_or_path, study, phase_cfg, url=url, n_procs=n_procs, threads=threads, done=done,
                        pack=cfg.budget.pack, console=console, notes=notes, deadline=deadline)
            return study
        return _run_here(study, rdb, created, phase_cfg, space, splits, done=done, url=url, console=console,
                         notes=trial_notes, live_note=notes.live() if notes is not None else None, deadline=deadline)

    if remaining <= 0 and not cfg.confirm.top:
        console.print(f"study already has {done} of {cfg.n_trials} trials; raise --trials to run more")
    elif remaining > 0:
        # The time budget counts from here for the whole run: the search stops early enough to leave the
        # confirmation runs their expected time (hpo.search.budget.Deadline); those are then run to the end.
        deadline = started + cfg.timeout if cfg.timeout else None
        phase_start = time.time()
        study = run_phase(search_cfg, done, deadline)
        # workers (not one process) are started again for the confirmation runs: the budget keeps that time too
        startup = _first_start(study, phase_start) - phase_start if parallel and cfg.confirm.top else 0.0
        _say_budget(study, cfg, search_cfg.n_trials, started, n_procs if parallel else 1, startup, console)
    if cfg.confirm.top:
        study = _confirm(study, cfg, run_phase, console)
    console.print(summary_table(study))
    console.print(f"outcomes: {counts_line(study)}")
    return study


def _first_start(study: optuna.Study, since: float) -> float:
    """When the first trial that started after `since` (a time.time() instant) started; `since` if none did."""
    starts = [t.datetime_start.timestamp() for t in study.get_trials(deepcopy=False)
              if t.datetime_start is not None and t.datetime_start.timestamp() >= since]
    return min(starts, default=since)


def _say_budget(study: optuna.Study, cfg: StudyConfig, slots: int, started: float, workers: int, startup: float,
                console: Console) -> None:
    """One line when the time budget ended the search before its n_trials: how many ran, and the time kept."""
    if not cfg.timeout or counted(study) >= slots:
        return
    kept = confirm.reserve_seconds(study, cfg, workers) + startup
    ran = len(searched(study.get_trials(deepcopy=False, states=COUNTED)))
    console.print(f"time budget: the search stopped at {ran} of {cfg.n_trials} "
                  f"trials after {time.time() - started:.0f}s of its {cfg.timeout:.0f}s"
                  + (f", keeping about {kept:.0f}s for the confirmation runs" if kept else ""))


def _confirm(study: optuna.Study, cfg: StudyConfig, run_phase, console: Console) -> optuna.Study:
    """The confirmation phase: enqueue the runs the top trials still lack and train them (and any left waiting by an
    interrupted run), then say which trial the means chose."""
    confirm.enqueue(study, cfg)
    # The slots in use now (counted, running, waiting): the confirmation runs and nothing more, also when the time
    # budget ended the search before its n_trials.
    phase_cfg = replace(cfg, n_trials=taken(study)[0])
    done = counted(study)
    if phase_cfg.n_trials > done:
        console.print(f"confirming the top {cfg.confirm.top} trials: {phase_cfg.n_trials - done} runs with "
                      f"{cfg.confirm.seeds} more seed{'s' if cfg.confirm.seeds > 1 else ''} each, never pruned")
        study = run_phase(phase_cfg, done)
    console.print(confirm.summary_line(study))
    return study


class _NoInterruptNoise(logging.Filter):
    """Ctrl-C ends a study in one line of hpo's: Optuna's warning for the trial it interrupted (its parameters and
    a 25-line traceback) and the "failed with value None" after it are dropped; every other record passes."""

    def __init__(self):
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if isinstance(exc, KeyboardInterrupt) or message.endswith("KeyboardInterrupt()."):
            self.interrupted.add(message.split(" failed", 1)[0])  # "Trial 3"
            return False
        return not (message.endswith("failed with value None.") and message.split(" failed", 1)[0] in self.interrupted)


@contextlib.contextmanager
def _quiet_interrupts():
    handlers = logging.getLogger("optuna").handlers
    noise = _NoInterruptNoise()
    for h in handlers:
        h.addFilter(noise)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(noise)


def _run_here(study: optuna.Study, rdb, created: bool, cfg: StudyConfig, space, splits, *, done: int, url: str,
              console: Console, notes, live_note, deadline: float | None = None) -> optuna.Study:
    """Train the remaining trials in this process; returns the BudgetStudy that ran them."""
    # Resuming, or joining other workers: the study's seed would redraw the start-up trials already drawn.
    sampler = study.sampler if created else make_sampler(cfg, space, seed=joining_seed())
    # Exactly n_trials, also when workers on other machines share the study.
    wait_note = (f"all {cfg.n_trials} trials are taken; waiting for the running ones (other workers', or a killed "
                 f"worker's: that one is failed {heartbeat_settings()[1]}s after its last heartbeat, "
                 "then retried here)")
    study = BudgetStudy(study.study_name, rdb, cfg.n_trials, sampler=sampler, pruner=study.pruner,
                        on_wait=lambda _: console.print(wait_note))
    objective = Objective(cfg, splits, space=space, notes=notes)
    callbacks = [live_note] if live_note is not None else []
    if deadline is not None:
        callbacks.append(Deadline(deadline, lambda st: confirm.reserve_seconds(st, cfg, 1)))
    t0 = time.time()
    with LiveDisplay(console, cfg.n_trials, done, len(cfg.objectives) > 1, deadline) as live, _quiet_interrupts():
        try:
            if cfg.budget.packs:
                run_packs(study, objective, pack=cfg.budget.pack, max_trials=cfg.n_trials - done,
                          callbacks=[live, *callbacks])
            else:
                study.run(objective, max_trials=cfg.n_trials - done, callbacks=[live, *callbacks])
        except KeyboardInterrupt:
            live.progress.stop()
            study.fail_left_running()  # Ctrl-C between ask and tell leaves a trial untold
            console.print(f"[yellow]interrupted[/]: {counted(study)} finished trials are kept in {redact(url)}; "
                          f"run the same command to continue")
            raise
        finally:
            if live_note is not None:
                live_note.flush(study)  # the trials since its last write
    console.print(f"ran {counted(study) - done} trials in {time.time() - t0:.0f}s")
    return study

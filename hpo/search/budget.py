"""BudgetStudy: an Optuna study that ends at exactly n_trials counted trials, however many workers
(processes, machines) share it."""

from __future__ import annotations

import time

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpo import optuna_private
from hpo.search.storage import fail_stale
from hpo.trials import COUNTED, trial_state

HOLDING = (TrialState.RUNNING, TrialState.WAITING)  # not counted yet, but holding a slot


class StudyFull(Exception):
    """Raised by BudgetStudy.ask when every trial slot is taken: optimize() ends without a new trial."""


class SurplusTrial(Exception):
    """A trial that started after the study's last slot was taken (see BudgetStudy)."""


def taken(study: optuna.Study) -> tuple[int, int, int]:
    """(trial slots in use, running trials, waiting trials), from one read of the storage: counted, running and
    waiting trials hold a slot (a running trial may yet be counted; a waiting one, an enqueued baseline or a
    killed worker's retry, will run). One snapshot, so that a trial finishing between two reads cannot look
    like "every slot taken, none running"."""
    states = [t.state for t in study.get_trials(deepcopy=False, states=(*COUNTED, *HOLDING))]
    return len(states), states.count(TrialState.RUNNING), states.count(TrialState.WAITING)


def _enqueued(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether this trial was enqueued rather than sampled: by enqueue_trial (a baseline: Optuna marks it with
    the system attribute `fixed_params`) or by the heartbeat's retry callback (a killed worker's trial:
    `failed_trial`, with the failed trial's own system attributes)."""
    return "fixed_params" in trial.system_attrs or "failed_trial" in trial.system_attrs


class BudgetStudy(optuna.Study):
    """A study that ends at exactly n_trials counted trials, however many workers (processes, machines) share it.

    Optuna's MaxTrialsCallback stops a worker only after its own trial has finished, so N workers overshoot
    by up to N-1 trials. Here every counted, running or waiting trial holds a slot, and `ask`, which optimize
    calls for each new trial just after failing stale ones, creates no trial while every slot is taken (a
    waiting one is still taken and run): it waits
    as long as some of them are running (a running trial may still fail and free its slot: a killed
    worker's trial is failed by the heartbeat after the grace period and re-enqueued, and this worker then
    retries it), and ends the run once all of them are counted. Between that check and the new trial lie
    a few milliseconds in which another worker may take the last slot; `guard` catches that trial: it is
    not run, and ends FAIL (not counted) with outcome `surplus`. The same guard settles the race between a
    killed worker's trial being failed (its slot freed) and its retry being enqueued a moment later: a fresh
    trial that took the slot in between gives way to the retry when it starts after it, and otherwise the
    retry is the surplus one (the load test, hpo.bench.load, counts how often).

    Optuna never fails a running trial that has no heartbeat at all: a worker killed between creating a
    trial and its heartbeat's first write leaves it RUNNING for good, and here it would hold its slot for
    good. While waiting, such a trial that stays without a heartbeat for longer than the grace period
    (by this worker's clock) is failed and re-enqueued as a stale one is.
    """

    poll_seconds = 1.0

    def __init__(self, study_name: str, storage, n_trials: int, *, sampler=None, pruner=None, on_wait=None,
                 should_stop=None):
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        self.n_trials = n_trials
        self._rdb = storage if isinstance(storage, RDBStorage) and storage.heartbeat_interval else None
        self.on_wait = on_wait  # called with the number of running trials when this worker starts to wait
        self.should_stop = should_stop  # polled while waiting: True ends the run (e.g. Ctrl-C)
        self.asked: set[int] = set()  # trial ids this process created, for fail_left_running

    def _ask_here(self, fixed_distributions=None) -> optuna.Trial:
        trial = super().ask(fixed_distributions)
        self.asked.add(optuna_private.trial_id(trial))
        return trial

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        waiting, silent_since = False, {}
        while True:
            in_use, running, waiting = taken(self)
            if in_use < self.n_trials or waiting:
                break  # a free slot, or a waiting trial (Optuna's ask runs those first) to take
            if not running or (self.should_stop is not None and self.should_stop()):
                raise StudyFull
            if not waiting and self.on_wait is not None:
                self.on_wait(running)
            waiting = True
            time.sleep(self.poll_seconds)
            fail_stale(self)
            self._fail_silent(silent_since)
        return self._ask_here(fixed_distributions)

    def _fail_silent(self, silent_since: dict[int, float]) -> None:
        """Fail (and re-enqueue, through the storage's stale-trial callback) running trials that have had no
        heartbeat at all for longer than the grace period; `silent_since` maps trial ids to when first seen."""
        if self._rdb is None:
            return
        silent = optuna_private.silent_running_trials(self._rdb, self)
        now = time.monotonic()
        for trial_id in set(silent_since) - silent:
            del silent_since[trial_id]
        for trial_id in silent:
            if now - silent_since.setdefault(trial_id, now) <= self._rdb.grace_period:
                continue
            try:
                if not optuna_private.storage(self).set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile, or failed by another worker
            callback = self._rdb.get_heartbeat_stale_trial_callback()
            if callback is not None:
                callback(self, optuna_private.storage(self).get_trial(trial_id))

    def try_ask(self) -> optuna.Trial | None:
        """A new trial if a slot is free now, else None: never waits (a pack's later members must not wait
        for its first, which is running)."""
        in_use, _, waiting = taken(self)
        if in_use >= self.n_trials and not waiting:  # a waiting (enqueued) trial holds a slot and is taken first
            return None
        return self._ask_here()

    def fail_left_running(self, outcome: str = "interrupted") -> list[int]:
        """End every trial this process asked for that is still RUNNING, with `outcome` and its state (FAIL for
        `interrupted`: hpo.trials.OUTCOME_STATES); return their numbers. For a stopped worker on its way out: a
        signal that lands inside a storage write, or between ask and the objective, can leave its trial untold,
        and it would then hold its slot until the heartbeat expires. Trials finished meanwhile (here or, after a
        heartbeat failure, elsewhere) are left alone."""
        left = []
        storage = optuna_private.storage(self)
        for t in self.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            tid = optuna_private.trial_id(t)
            if tid not in self.asked:
                continue
            try:
                storage.set_trial_user_attr(tid, "outcome", outcome)
                if storage.set_trial_state_values(tid, state=trial_state(outcome)):
                    left.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished between the look and the write
        return left

    def check_surplus(self, trial: optuna.Trial) -> None:
        """Raise SurplusTrial (outcome `surplus`) when `trial` started after every slot was taken."""
        # A fresh trial counts every enqueued trial (a killed worker's retry, a baseline) as ahead whatever
        # its number: a retry is enqueued just after its trial is failed, and a fresh trial that took the
        # freed slot in between gives way to it here, even when the retry has started already. Enqueued
        # trials keep the order of their numbers: the retries of a killed pack's members are enqueued
        # together, and the first to start must not give way to the second (it would end `surplus`, its
        # configuration never run, and the study would end a trial short).
        holding = self.get_trials(deepcopy=False, states=(*COUNTED, *HOLDING))
        this = next((t for t in holding if t.number == trial.number), None)
        fresh = this is None or not _enqueued(this)
        ahead = [t for t in holding
                 if t.number < trial.number or (fresh and t.number != trial.number and _enqueued(t))]
        if len(ahead) >= self.n_trials:
            reason = f"all {self.n_trials} trials were taken by other workers when it started; not run"
            trial.set_user_attr("outcome", "surplus")
            trial.set_user_attr("reason", reason)
            raise SurplusTrial(reason)

    def guard(self, objective):
        def guarded(trial: optuna.Trial):
            self.check_surplus(trial)
            return objective(trial)

        return guarded

    def run(self, objective, *, max_trials: int, timeout: float | None = None, callbacks=()) -> None:
        """optimize() until every slot is taken, `max_trials` have run here (a bound for when trials keep
        failing, which frees their slots), the timeout passes, or a callback calls stop()."""
        try:
            self.optimize(self.guard(objective), n_trials=max_trials, timeout=timeout, catch=(Exception,),
                          callbacks=list(callbacks), gc_after_trial=False)
        except StudyFull:
            pass
        except UnboundLocalError as e:
            # Ctrl-C inside tell's storage write: Optuna's clean-up after it reads a variable the write never
            # set (optuna/study/_optimize.py, _run_trial) and hides the interrupt behind this error.
            if isinstance(e.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from e
            raise



class Deadline:
    """Study callback: the study's wall-clock budget (study file `timeout`, `hpo study --timeout`). After each trial
    it stops this process's search once the time left is no more than `reserve(study)` seconds: what the work still
    to come after the search (the confirmation runs, hpo.search.confirm.reserve_seconds, and starting the workers
    that run them) is expected to take, so that the search and what follows it end near the budget. No trial starts
    after that; running ones finish.

    `at` is a time.time() instant: the parent sets it once and hands it to its workers, so the budget counts from
    the start of `hpo study`, the workers' start-up included."""

    def __init__(self, at: float, reserve=None):
        self.at = at
        self.reserve = reserve or (lambda study: 0.0)
        self.reached = False

    def left(self, study: optuna.Study) -> float:
        """Seconds the search may still start trials in."""
        return self.at - time.time() - self.reserve(study)

    def __call__(self, study: optuna.Study, trial) -> None:
        if self.left(study) <= 0:
            self.reached = True
            study.stop()

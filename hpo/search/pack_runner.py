"""`hpo study NAME --pack K` (budget.pack): ask Optuna for up to K trials at once, train them as one stacked
computation (hpo.training.pack), tell each member as its own trial.

The first member is sampled freely; the others through optuna.samplers.PartialFixedSampler around the study's
sampler, with what a pack shares (model, depth, batch size, optimizer, activations: hpo.training.pack.pack_key)
fixed to the first member's values. TPE treats the members already asked as running trials (its constant liar),
so a pack spreads out like K parallel workers. A trial popped from the queue (a paper baseline, a retried
trial) brings its own parameters: members that cannot share a pack train in packs of their own, and a trial
that cannot be packed at all (a CNN, a learnable activation, the three-cycle schedule) trains alone.

Every member is an ordinary Optuna trial: it reports its own validation accuracy each epoch and is pruned
alone (the pack goes on without it), gets the objective's outcomes and user attributes, and has its own
heartbeat while the pack trains, so that a worker killed mid-pack leaves every member to be failed and
retried by the heartbeat, as a single trial is. Only a failure of the stacked computation itself fails all
of its members (outcome crashed, with the reason).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import optuna

from hpo.optuna_private import heartbeat_thread, optimize_loop, stop_requested
from hpo.search.budget import BudgetStudy, StudyFull, SurplusTrial
from hpo.search.objective import Objective, TrialRun
from hpo.search.storage import fail_stale
from hpo.training.memory import PeakMemory
from hpo.training.pack import calibrate_pack, pack_key, train_pack
from hpo.trials import CONFIRM_SPLIT, PACK, trial_state

# The Optuna parameters that decide a pack's key (per-layer activations are activation_1, activation_2, ...).
# Widths too: members of different widths are padded to the widest, so with widths drawn freely a pack of K
# computes about K of the largest networks, several times its members' own arithmetic.
SHARED_PARAMS = ("model", "depth", "batch_size", "optimizer", "activation", "width")


def shared_params(params: dict) -> dict:
    """The parameters a pack's later members take from its first."""
    return {k: v for k, v in params.items() if k in SHARED_PARAMS or k.rsplit("_", 1)[0] in ("activation", "width")}


def run_packs(study: BudgetStudy, objective: Objective, *, pack: int | str, max_trials: int,
              callbacks: Sequence[Callable] = (),
              around: Callable[[Callable], Callable] | None = None) -> None:
    """Run packs of up to `pack` trials until every slot is taken, `max_trials` have run here, or a callback calls
    study.stop() (the study's time budget is one: hpo.search.budget.Deadline). `around` wraps each pack's training
    (workers use it to turn a signal into KeyboardInterrupt only while training). `pack="auto"`: K per shared shape
    and batch size, from a short calibration at the first pack of that shape (hpo.training.pack.calibrate_pack)."""
    # Callbacks may call study.stop(), which Optuna allows only inside optimize().
    size = pack_size(objective, pack)
    ran = 0
    with optimize_loop(study):
        while ran < max_trials and not stop_requested(study):
            members = _ask(study, objective, lambda tc, left=max_trials - ran: min(size(tc), left))
            if not members:
                return
            ran += len(members)
            _train_and_tell(study, objective, members, callbacks, around)


def pack_size(objective: Objective, pack: int | str) -> Callable[[object], int]:
    """K for a pack whose first member has config tc: `pack` itself, or for "auto" the K calibrated on the first
    pack of each pack key (depth, batch size, optimizer, activations) in this study run, on that member's widths.
    Not per widths: with widths drawn from a range nearly every pack has new ones, and calibrating each (about a
    second) cost more than the pack saved."""
    if pack != "auto":
        return lambda tc: int(pack)
    chosen: dict[tuple, int] = {}
    data = objective.data

    def size(tc) -> int:
        key = pack_key(tc)
        if key not in chosen:
            chosen[key] = calibrate_pack(tc, data.train_x.shape[1], int(data.train_y.max()) + 1,
                                         data.train_x.device, threads=objective.threads)
        return chosen[key]
    return size


def _ask(study: BudgetStudy, objective: Objective, size: Callable[[object], int]) -> list[tuple[optuna.Trial, object]]:
    """Up to size(first member's config) new trials, each with its configuration drawn; [] when the study's slots
    are all taken."""
    fail_stale(study)  # as optimize() does before each trial: a dead worker's trials are retried
    try:
        first = study.ask()  # waits while other workers' running trials may still free a slot
    except StudyFull:
        return []
    members = [(first, objective.configure(first))]
    if pack_key(members[0][1]) is None:
        return members
    k = size(members[0][1])
    base = study.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fixed = optuna.samplers.PartialFixedSampler(shared_params(first.params), base)
    study.sampler = fixed
    try:
        for _ in range(k - 1):
            trial = study.try_ask()
            if trial is None:
                break
            members.append((trial, objective.configure(trial)))
    finally:
        study.sampler = base
    return members


def _tell(study: BudgetStudy, objective: Objective, trial: optuna.Trial, callbacks, values=None) -> None:
    """Tell a member: complete with its values, else in the state of the outcome it recorded (OUTCOME_STATES)."""
    outcome = "complete" if values is not None else trial.user_attrs.get("outcome") or "crashed"
    # The member's dashboard note, while it still runs (as Objective.__call__ writes a lone trial's).
    objective.note(trial, outcome, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna warns when a PRUNED trial reported nothing
        frozen = study.tell(trial, values, state=trial_state(outcome), skip_if_finished=True)
    for callback in callbacks:
        callback(study, frozen)


def _train_and_tell(study: BudgetStudy, objective: Objective, members, callbacks, around) -> None:
    with ExitStack() as beats:  # each member's heartbeat, from its admission until it is told
        runs: list[TrialRun] = []
        for trial, tc in members:
            thread = heartbeat_thread(study, trial)
            thread.start()
            beats.callback(thread.join)
            try:
                study.check_surplus(trial)
                runs.append(objective.admit(trial, tc, measure_memory=False))
            except optuna.TrialPruned:  # over a cap: not trained
                _tell(study, objective, trial, callbacks)
            except SurplusTrial:
                _tell(study, objective, trial, callbacks)
            except Exception as e:
                objective.crashed(trial, e)
                _tell(study, objective, trial, callbacks)
        groups: dict[object, list[TrialRun]] = {}
        for run in runs:  # a pack shares its data too: a confirmation run's split is its own (hpo.search.confirm)
            key = pack_key(run.tc)
            key = (key, run.trial.user_attrs.get(CONFIRM_SPLIT)) if key is not None else id(run)
            groups.setdefault(key, []).append(run)
        for group in groups.values():
            _train_group(study, objective, group, callbacks, around)


def _train_group(study: BudgetStudy, objective: Objective, group: list[TrialRun], callbacks, around) -> None:
    budget = objective.cfg.budget
    if len(group) == 1 and pack_key(group[0].tc) is None:
        run = group[0]
        try:  # trained through objective.train_fn, which a worker guards as `around` guards a pack
            _tell(study, objective, run.trial, callbacks, values=objective.train_one(run))
        except optuna.TrialPruned:
            _tell(study, objective, run.trial, callbacks)
        except KeyboardInterrupt:
            objective.interrupted(run.trial)
            _tell(study, objective, run.trial, callbacks)
            raise
        except Exception as e:
            objective.crashed(run.trial, e)
            _tell(study, objective, run.trial, callbacks)
        return
    cap = budget.memory_mb * 2**20 * len(group) if budget.memory_mb else None  # the cap is per trial
    meter = PeakMemory(budget.device).start() if cap else None
    hooks = [objective.on_epoch(run, meter, cap) for run in group]
    t0 = time.perf_counter()
    for run in group:
        run.t0 = t0
        run.trial.set_user_attr(PACK, len(group))  # its run time is the pack's: hpo.search.confirm.reserve_seconds

    def train(_):
        return train_pack([run.tc for run in group], objective.data_for(group[0].trial), threads=objective.threads,
                          max_seconds=budget.trial_timeout, on_epoch=lambda j, epoch, acc: hooks[j](epoch, acc),
                          models=[run.model for run in group])

    try:
        results = (around(train) if around else train)(None)
    except KeyboardInterrupt:
        for run in group:
            objective.interrupted(run.trial)
            _tell(study, objective, run.trial, callbacks)
        raise
    except Exception as e:
        for run in group:
            objective.crashed(run.trial, e)
            _tell(study, objective, run.trial, callbacks)
        return
    for run, r in zip(group, results):
        try:
            if isinstance(r.stopped_by, optuna.TrialPruned):
                objective.stopped(run, r.stopped_by, r.model)
                _tell(study, objective, run.trial, callbacks)
            elif r.stopped_by is not None:
                raise r.stopped_by
            else:
                _tell(study, objective, run.trial, callbacks, values=objective.finish(run, r))
        except optuna.TrialPruned:
            _tell(study, objective, run.trial, callbacks)
        except Exception as e:
            objective.crashed(run.trial, e)
            _tell(study, objective, run.trial, callbacks)

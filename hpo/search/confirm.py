"""Confirmation (study file `confirm: {top: K, seeds: R}`): once the search holds its n_trials, its K best trials by
validation accuracy are trained again, R more times each, with another seed on another validation split; the study's
optimum is then the one with the best mean over its runs (hpo.trials.best_trials).

Why: a trial's validation accuracy is one draw from a run whose seed moves it by about as much as the top trials
differ, scored on one set of validation images that the search then chose by, so the best of a hundred draws is
the luckiest as much as the best, and it re-trains lower than it scored (README: search against a person). A run
on another split scores every confirmed trial on the same fresh images, which no choice was made on.

The runs are enqueued Optuna trials with the original's parameters and the user attributes `confirm_of` (its
number), `confirm_seed` and `confirm_split`, so they run on the study's workers, show in the dashboard, are kept on
a crash and resumed like any trial; they are never pruned, and train alone or in packs of their own split
(hpo.search.objective, hpo.search.pack_runner)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpo.search.studyfile import StudyConfig
from hpo.trials import CONFIRM_OF, CONFIRM_SEED, CONFIRM_SPLIT, PACK, best_trials, confirmed, is_confirmation, searched

HELD = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def held(study: optuna.Study) -> int:
    """Confirmation runs that hold a slot of the study's trials: counted, running or waiting."""
    return sum(is_confirmation(t) for t in study.get_trials(deepcopy=False, states=HELD))


def plan(study: optuna.Study, cfg: StudyConfig) -> list[tuple[optuna.trial.FrozenTrial, int, int]]:
    """(trial, seed, split seed) for each confirmation run the study's current top K still lack: the K best complete
    trials by their own value (baselines too: they compete for the optimum). The k-th run of each (k = 1..R) trains
    with the trial's own seed + k on the validation split of the study's split seed + k: one more draw of the
    training's randomness, scored on images the search never chose by, the same images for every trial confirmed."""
    trials = study.get_trials(deepcopy=False)
    have = {(t.user_attrs[CONFIRM_OF], t.user_attrs[CONFIRM_SEED]) for t in trials
            if is_confirmation(t) and t.state in HELD}
    top = sorted((t for t in trials if t.state == TrialState.COMPLETE and not is_confirmation(t)),
                 key=lambda t: (-t.values[0], t.number))[:cfg.confirm.top]
    out = []
    for t in top:
        first = t.user_attrs.get("config", {}).get("seed", cfg.seed)
        out += [(t, first + k, cfg.split_seed + k) for k in range(1, cfg.confirm.seeds + 1)
                if (t.number, first + k) not in have]
    return out


def enqueue(study: optuna.Study, cfg: StudyConfig) -> int:
    """Enqueue the confirmation runs `plan` lists; returns how many were new."""
    todo = plan(study, cfg)
    for t, seed, split in todo:
        study.enqueue_trial(t.params, user_attrs={CONFIRM_OF: t.number, CONFIRM_SEED: seed, CONFIRM_SPLIT: split})
    return len(todo)


def reserve_seconds(study: optuna.Study, cfg: StudyConfig, workers: int) -> float:
    """Wall seconds the confirmation runs the current top trials still lack are expected to take on `workers`
    processes, from those trials' own run times (a confirmation run trains the same configuration): their sum shared
    among the workers, but never less than the longest of them. What a study's time budget (hpo.search.budget.
    Deadline) keeps back from the search. A trial trained in a pack of K ran for as long as its pack did, about K
    runs' time, so it counts for a K-th of that: a confirmation run trains alone or packed with the other runs."""
    seconds = [t.duration.total_seconds() / t.user_attrs.get(PACK, 1) for t, _, _ in plan(study, cfg)
               if t.duration is not None]
    return max(sum(seconds) / max(workers, 1), max(seconds, default=0.0))


def summary_line(study: optuna.Study) -> str:
    """Which trial the means chose, against the single best run: `confirmed: trial 70 is the optimum, 0.8903 over
    2 runs (its own run 0.8916); the best single run, trial 41's 0.8921, gives 0.8874 over 2`."""
    confirms = confirmed(study)
    if not confirms:
        return "confirmed: no trial yet (none complete)"
    best = best_trials(study, 1)[0]
    runs = confirms[best.number]
    mean = sum(runs) / len(runs)
    line = (f"confirmed: trial {best.number} is the optimum, {mean:.4f} over {len(runs)} runs "
            f"(its own run {runs[0]:.4f})")
    luckiest = max(searched(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                   key=lambda t: (t.values[0], -t.number))
    if luckiest.number != best.number and luckiest.number in confirms:
        other = confirms[luckiest.number]
        line += (f"; the best single run, trial {luckiest.number}'s {other[0]:.4f}, gives {sum(other) / len(other):.4f}"
                 f" over {len(other)}")
    return line

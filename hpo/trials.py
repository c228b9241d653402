"""What a stored trial says: whether it counts, its outcome, and choosing trials out of a study.

Every module that reads trials (the live display, the study runner, export, report) asks here, so that
"counted", "complete" and "best" mean the same everywhere.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import optuna_private
from hpo.errors import StudyError

# Finished trials that count towards n_trials; failed ones (crashes, killed workers) are retried.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# Optuna's metric name for each objective (shown by the dashboard and written into exports).
METRIC_NAMES = {"accuracy": "val_accuracy", "params": "n_params", "latency": "latency_ms"}

# Every outcome a trial records (user attribute `outcome`; hpo.search.objective says when each happens) and the
# state Optuna keeps it in. PRUNED is counted and the sampler learns from it: a diverged run or a configuration
# over a cap marks a region to avoid, as a pruned one does. FAIL is not counted, and the slot is run again.
OUTCOME_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "diverged": TrialState.PRUNED,
    "time_cap": TrialState.PRUNED,
    "param_cap": TrialState.PRUNED,
    "memory_cap": TrialState.PRUNED,
    "crashed": TrialState.FAIL,  # an unexpected exception; the study carries on
    "interrupted": TrialState.FAIL,  # Ctrl-C, or a stopped worker
    "surplus": TrialState.FAIL,  # started after the study's last slot was taken; not run (hpo.search.budget)
}


def trial_state(outcome: str) -> TrialState:
    """The Optuna state of a trial whose outcome is `outcome` (OUTCOME_STATES)."""
    return OUTCOME_STATES[outcome]


# A study's provenance that is too long for a table row (the study file as read, its description and space, the
# package versions) lives in one system attribute, which `optuna studies` does not print, where it prints every
# user attribute in its table. Optuna 5 reaches system attributes only through its storage API (Study.system_attrs
# is gone); optuna-dashboard keeps its notes there the same way.
PROVENANCE_ATTR = "hpo:provenance"


def set_provenance(study: optuna.Study, attrs: dict) -> None:
    optuna_private.set_study_system_attr(study, PROVENANCE_ATTR, attrs)


def add_provenance(study: optuna.Study, **attrs) -> None:
    """Add to the study's PROVENANCE_ATTR (a worker that records the split its parent did not load)."""
    current = optuna_private.study_system_attrs(study).get(PROVENANCE_ATTR) or {}
    set_provenance(study, {**current, **attrs})


def study_attrs(study: optuna.Study) -> dict:
    """What hpo recorded about a study: its user attributes and PROVENANCE_ATTR together (a study from before
    keeps everything in its user attributes, and reads the same)."""
    system = optuna_private.study_system_attrs(study).get(PROVENANCE_ATTR) or {}
    return {**system, **study.user_attrs}


def outcome(t: FrozenTrial) -> str:
    """complete, running, waiting, or the outcome the objective recorded (pruned, diverged, time_cap, ...)."""
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    return t.user_attrs.get("outcome") or ("pruned" if t.state == TrialState.PRUNED else "failed")


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's COMPLETE trials (possibly none)."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's COMPLETE trials; StudyError when there is none yet."""
    trials = completed(study)
    if not trials:
        raise StudyError(f"study {study.study_name!r} has no completed trials yet "
                         f"({len(study.trials)} trials in all); run more trials first")
    return trials


def metric_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [METRIC_NAMES[o] for o in study.user_attrs.get("objectives", ["accuracy"])]


# A confirmation run (study file `confirm`, hpo.search.confirm): a top trial's configuration trained again with
# another seed on another validation split, so that the optimum is chosen by a mean over seeds and splits, not by
# one lucky draw on the split the search chose it on.
CONFIRM_OF = "confirm_of"  # user attribute: the number of the trial it confirms
CONFIRM_SEED = "confirm_seed"  # user attribute: the seed it trains with
CONFIRM_SPLIT = "confirm_split"  # user attribute: the seed of the validation split it trains and scores on
PACK = "pack"  # user attribute: how many trials its pack started with (absent: it trained alone)


def is_confirmation(t: FrozenTrial) -> bool:
    return t.user_attrs.get(CONFIRM_OF) is not None


def confirmation_value(t: FrozenTrial) -> float:
    """A confirmation run's validation accuracy; one stopped early (diverged, over the time cap) counts with the
    last accuracy it reached, 0 when it reached none: a configuration that does not train again is not confirmed."""
    if t.state == TrialState.COMPLETE:
        return t.values[0]
    curve = t.user_attrs.get("val_curve") or [0.0]
    return curve[-1]


def confirmed(study: optuna.Study) -> dict[int, list[float]]:
    """{trial number: its own value, then its finished confirmation runs' values} for each confirmed trial."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    out: dict[int, list[float]] = {}
    for t in trials:
        if is_confirmation(t) and t.state in COUNTED:
            first = by_number.get(t.user_attrs[CONFIRM_OF])
            if first is not None and first.state == TrialState.COMPLETE:
                out.setdefault(first.number, [first.values[0]]).append(confirmation_value(t))
    return out


def searched(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that are not confirmation runs (each a configuration of its own)."""
    return [t for t in trials if not is_confirmation(t)]


def score(t: FrozenTrial, confirms: dict[int, list[float]]) -> float:
    """A single-objective trial's score: the mean over its own run and its confirmation runs when it was confirmed,
    else its value."""
    values = confirms.get(t.number)
    return sum(values) / len(values) if values else t.values[0]


def best_trials(study: optuna.Study, top: int | None = None) -> list[FrozenTrial]:
    """Single objective: the top K (default 1): confirmed trials first, by their mean over runs, then the rest by
    value; confirmation runs are not candidates of their own. Multi-objective: the Pareto set, most accurate first
    (accuracy is always the first objective), cut to the top K when K is given."""
    trials = complete_trials(study)
    if len(study.directions) > 1:
        chosen = sorted(study.best_trials, key=lambda t: (-t.values[0], t.number))
    else:
        sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
        confirms = confirmed(study)
        chosen = sorted(searched(trials), key=lambda t: (t.number not in confirms, sign * score(t, confirms),
                                                         t.number))[:top or 1]
    return chosen[:top] if top else chosen

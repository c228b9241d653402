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


def best_trials(study: optuna.Study, top: int | None = None) -> list[FrozenTrial]:
    """Single objective: the top K (default 1) by value. Multi-objective: the Pareto set, most accurate first
    (accuracy is always the first objective), cut to the top K when K is given."""
    trials = complete_trials(study)
    if len(study.directions) > 1:
        chosen = sorted(study.best_trials, key=lambda t: (-t.values[0], t.number))
    else:
        sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
        chosen = sorted(trials, key=lambda t: (sign * t.values[0], t.number))[:top or 1]
    return chosen[:top] if top else chosen

"""The study's time budget (study file `timeout`, `hpo study --timeout`): it counts from the start of `hpo study`
for the whole run, the search stops early enough to leave the confirmation runs their expected time, and those
are then run to their end, in one process and on workers."""

from __future__ import annotations

import datetime
import os
import time

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.cli import main
from hpo.search import confirm
from hpo.search.budget import Deadline
from hpo.search.studyfile import load_study
from hpo.trials import COUNTED, is_confirmation
from tests.studyfiles import load, run_hpo, write_study
from tests.test_objective import tiny_study

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}
T0 = datetime.datetime(2026, 12, 5, 12, 0, 0)


def _add(study, value, seconds, **attrs):
    """A complete trial that ran for `seconds`."""
    study.add_trial(FrozenTrial(number=0, trial_id=0, state=TrialState.COMPLETE, value=value, params={"lr": 0.01},
                                distributions=LR, user_attrs={"config": {"lr": 0.01, "seed": 0}, **attrs},
                                system_attrs={},
                                intermediate_values={}, datetime_start=T0,
                                datetime_complete=T0 + datetime.timedelta(seconds=seconds)))


def test_the_reserve_is_the_top_trials_run_times_shared_among_the_workers(tmp_path, tiny_mnist):
    cfg = load_study(tiny_study(tmp_path, confirm="{top: 2, seeds: 2}"))
    study = optuna.create_study(direction="maximize")
    assert confirm.reserve_seconds(study, cfg, 2) == 0.0  # nothing complete: nothing to confirm yet
    _add(study, 0.9, 30)
    _add(study, 0.8, 10)
    _add(study, 0.5, 500)  # not in the top 2: never confirmed, so it costs nothing
    # 2 seeds each of 30 s and 10 s: 80 s of training, 40 s on 2 workers; 80 s on one
    assert confirm.reserve_seconds(study, cfg, 2) == 40.0
    assert confirm.reserve_seconds(study, cfg, 1) == 80.0
    assert confirm.reserve_seconds(study, cfg, 8) == 30.0  # never less than the longest run
    no_confirm = load_study(tiny_study(tmp_path))
    assert confirm.reserve_seconds(study, no_confirm, 2) == 0.0


def test_a_packed_trial_counts_for_its_share_of_its_packs_time(tmp_path, tiny_mnist):
    """A member of a pack of 8 ran for as long as the pack: 160 s is about 20 s of one run, and a study with packs
    would otherwise stop its search minutes early (a measured pack search stopped at 223 s of its 380)."""
    cfg = load_study(tiny_study(tmp_path, confirm="{top: 2, seeds: 1}"))
    study = optuna.create_study(direction="maximize")
    _add(study, 0.9, 160, pack=8)
    _add(study, 0.8, 160, pack=8)
    assert confirm.reserve_seconds(study, cfg, 2) == 20.0
    _add(study, 0.95, 30)  # trained alone: all of its time
    assert confirm.reserve_seconds(study, cfg, 1) == 50.0


def test_the_deadline_stops_the_search_once_the_time_left_is_what_the_reserve_needs():
    study = optuna.create_study()
    far = Deadline(time.time() + 3600)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3, callbacks=[far])
    assert len(study.trials) == 3 and not far.reached
    # an hour left, but what comes after the search needs more: the search stops after its current trial
    tight = Deadline(time.time() + 3600, reserve=lambda s: 3600 + len(s.trials))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10, callbacks=[tight])
    assert len(study.trials) == 4 and tight.reached


def test_a_spent_budget_ends_the_search_and_still_confirms_its_best(tmp_path, tiny_mnist, capsys):
    # a budget spent before the first trial starts (loading the data alone takes longer than 10 ms): the search
    # stops after its first trial, and the best of what ran is confirmed all the same
    path = tiny_study(tmp_path, pruner="none", n_trials=200, timeout=0.01, confirm="{top: 1, seeds: 1}")
    assert main(["study", path]) == 0
    out = capsys.readouterr().out
    assert "time budget: the search stopped at 1 of 200 trials" in out
    assert "left 0:00:00 (budget)" in out  # the progress line's time left is the budget's
    trials = optuna.load_study(study_name="t", storage=os.environ["HPO_STORAGE"]).trials
    runs = [t for t in trials if is_confirmation(t)]
    assert len(trials) == 2 and len(runs) == 1 and runs[0].state == TrialState.COMPLETE
    assert "confirmed: trial 0 is the optimum" in out


def test_workers_stop_at_the_parents_deadline_and_confirm(tiny_mnist, tmp_path):
    url = os.environ["HPO_STORAGE"]
    study_file = write_study(tmp_path, n_trials=200, threads=2, workers=2, baselines=False,
                             extra="timeout: 0.01\nconfirm: {top: 1, seeds: 1}\n")
    r = run_hpo("study", str(study_file), timeout=150)
    assert r.returncode == 0, r.stderr
    # the budget was spent while the workers started: each ran one trial and stopped
    assert "time budget: the search stopped at 2 of 200 trials" in r.stdout
    assert "confirming the top 1 trials: 1 runs" in r.stdout
    trials = load(url).trials
    assert len([t for t in trials if t.state in COUNTED]) == 3
    assert [t.state for t in trials if is_confirmation(t)] == [TrialState.COMPLETE]

"""Confirmation (study file `confirm`): the top trials trained again with more seeds, the optimum chosen by the mean
over seeds, confirmation runs never pruned and never candidates of their own, and a resumed study that keeps its
searched trials and its confirmations apart."""

from __future__ import annotations

import os

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.cli import main
from hpo.results.compare import optimum_row
from hpo.search import confirm
from hpo.search.objective import Objective
from hpo.search.study import load_data
from hpo.search.studyfile import load_study
from hpo.trials import CONFIRM_OF, CONFIRM_SEED, CONFIRM_SPLIT, COUNTED, best_trials, confirmed, is_confirmation
from tests.studyfiles import load, run_hpo, write_study
from tests.test_objective import tiny_study

# one depth and batch size, so that trials can share a pack
PACKABLE = ("depth: 2\nwidth: {low: 8, high: 32, per_layer: true}\noptimizer: adam\n"
            "lr: {low: 1e-3, high: 1e-1, log: true}\nbatch_size: 32\nepochs: 2\n")

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def _add(study, value, *, lr=0.01, of=None, seed=None, state=TrialState.COMPLETE, curve=None):
    attrs = {"config": {"lr": lr, "seed": 0}}
    if of is not None:
        attrs.update({CONFIRM_OF: of, CONFIRM_SEED: seed})
    if curve is not None:
        attrs["val_curve"] = curve
    study.add_trial(create_trial(params={"lr": lr}, distributions=LR, user_attrs=attrs, state=state,
                                 value=value if state == TrialState.COMPLETE else None))


def test_the_optimum_is_the_best_mean_over_seeds_not_the_luckiest_run():
    study = optuna.create_study(direction="maximize")
    _add(study, 0.90, lr=0.1)  # 0: the luckiest single run
    _add(study, 0.89, lr=0.02)  # 1
    _add(study, 0.895, lr=0.3)  # 2: not confirmed, above trial 1's mean
    _add(study, 0.86, lr=0.1, of=0, seed=1)  # 3: trial 0 again, another seed: mean 0.88
    _add(study, 0.888, lr=0.02, of=1, seed=1)  # 4: trial 1 again: mean 0.889
    assert confirmed(study) == {0: [0.90, 0.86], 1: [0.89, 0.888]}
    ranked = best_trials(study, 5)
    assert [t.number for t in ranked] == [1, 0, 2]  # confirmed ones first; confirmation runs are no candidates
    assert best_trials(study)[0].number == 1
    # a confirmation that does not train to its end counts with the last accuracy it reached
    _add(study, None, lr=0.02, of=1, seed=2, state=TrialState.PRUNED, curve=[0.5, 0.7])
    assert confirmed(study)[1] == [0.89, 0.888, 0.7] and best_trials(study)[0].number == 0


def test_the_plan_takes_the_top_trials_by_their_own_value_with_seeds_after_their_own(tmp_path, tiny_mnist):
    cfg = load_study(tiny_study(tmp_path, confirm="{top: 2, seeds: 2}"))
    study = optuna.create_study(direction="maximize")
    for value, lr in [(0.7, 0.01), (0.9, 0.02), (0.8, 0.03)]:
        _add(study, value, lr=lr)
    # (trial, its seed + k, the study's split seed + k) for k = 1, 2
    assert [(t.number, s, k) for t, s, k in confirm.plan(study, cfg)] == [(1, 1, 1), (1, 2, 2), (2, 1, 1), (2, 2, 2)]
    _add(study, 0.1, lr=0.02, of=1, seed=1)  # one is done (and scored low: it is not a candidate itself)
    assert [(t.number, s, k) for t, s, k in confirm.plan(study, cfg)] == [(1, 2, 2), (2, 1, 1), (2, 2, 2)]
    assert confirm.enqueue(study, cfg) == 3 and confirm.held(study) == 4 and confirm.plan(study, cfg) == []
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs[CONFIRM_OF], t.user_attrs[CONFIRM_SEED])
            for t in waiting] == [
        ({"lr": 0.02}, 1, 2), ({"lr": 0.03}, 2, 1), ({"lr": 0.03}, 2, 2)]


@pytest.mark.parametrize("text,key,fragment", [
    ("confirm: {top: 0}", "confirm.top", "> 0"),
    ("confirm: {seeds: 2}", "confirm.top", "missing"),
    ("confirm: {top: 2, sedes: 1}", "confirm.sedes", "unknown key"),
    ("confirm: {top: 2, seeds: two}", "confirm.seeds", "expected int"),
    ("objectives: [accuracy, params]\npruner: none\nconfirm: {top: 2}", "confirm", "multi-objective"),
])
def test_a_bad_confirm_is_one_line_naming_the_key(tmp_path, tiny_mnist, capsys, text, key, fragment):
    path = tmp_path / "bad.yaml"
    (tmp_path / "sp.yaml").write_text("depth: 1\nwidth: 8\nlr: 0.01\nepochs: 1\n")
    path.write_text(f"dataset: mnist\nspace: {tmp_path / 'sp.yaml'}\nsplit: {{val_size: 100}}\n{text}\n")
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{key}:" in err[0] and fragment in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_study_confirms_its_top_trials_and_exports_the_confirmed_optimum(tmp_path, tiny_mnist, capsys):
    # median pruning from the first step on: the confirmation runs must still train to their end
    path = tiny_study(tmp_path, pruner="median", n_trials=4, confirm="{top: 2, seeds: 2}",
                      pruner_options="{n_startup_trials: 1, n_warmup_steps: 0}")
    assert main(["study", path]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="t", storage=os.environ["HPO_STORAGE"])
    runs = [t for t in study.trials if is_confirmation(t)]
    assert len(runs) == 4 and "confirming the top 2 trials: 4 runs with 2 more seeds each" in out
    assert len([t for t in study.trials if t.state in COUNTED]) == 8
    by_number = {t.number: t for t in study.trials}
    for t in runs:
        first = by_number[t.user_attrs[CONFIRM_OF]]
        assert t.params == first.params and t.state == TrialState.COMPLETE
        assert t.user_attrs["config"]["seed"] == t.user_attrs[CONFIRM_SEED] != first.user_attrs["config"]["seed"]
        assert t.user_attrs["epochs_trained"] == t.user_attrs["config"]["epochs"]  # never pruned
        assert t.user_attrs[CONFIRM_SPLIT] == t.user_attrs[CONFIRM_SEED] - first.user_attrs["config"]["seed"]
    best = best_trials(study)[0]
    assert f"confirmed: trial {best.number} is the optimum" in out and "(3 runs)" in out
    assert main(["export", path, "--out", str(tmp_path / "best.yaml")]) == 0
    exported = (tmp_path / "best.yaml").read_text()
    assert exported.startswith(f"# t trial {best.number}: ")
    assert "the 2 confirmed first by their mean over runs" in exported
    assert "  confirmed:\n    mean: " in exported
    row = optimum_row(study)  # what compare re-trains and the report calls the optimum's validation accuracy
    assert row["trial"] == best.number and row["val_seeds"] == 3 and row["val_accuracy"] == pytest.approx(
        sum(confirmed(study)[best.number]) / 3)
    # run again: nothing more runs
    assert main(["study", path]) == 0
    assert len(optuna.load_study(study_name="t", storage=os.environ["HPO_STORAGE"]).trials) == len(study.trials)


def test_more_trials_later_runs_that_many_searched_ones_and_confirms_the_new_top(tmp_path, tiny_mnist, capsys):
    path = tiny_study(tmp_path, pruner="none", n_trials=2, confirm="{top: 1, seeds: 1}")
    assert main(["study", path]) == 0
    assert main(["study", path, "--trials", "5"]) == 0
    trials = optuna.load_study(study_name="t", storage=os.environ["HPO_STORAGE"]).trials
    drawn = [t for t in trials if not is_confirmation(t)]
    assert len(drawn) == 5  # 3 more searched trials; the first confirmation run took no search slot
    top = max(drawn, key=lambda t: (t.value, -t.number))
    assert {t.user_attrs[CONFIRM_OF] for t in trials if is_confirmation(t)} >= {top.number}


def test_workers_run_the_confirmation_runs(tiny_mnist, tmp_path):
    url = os.environ["HPO_STORAGE"]
    study_file = write_study(tmp_path, n_trials=4, threads=2, workers=2, baselines=False,
                             extra="confirm: {top: 2, seeds: 1}\n")
    r = run_hpo("study", str(study_file), timeout=150)
    assert r.returncode == 0, r.stderr
    assert "confirming the top 2 trials: 2 runs" in r.stdout and "confirmed: trial" in r.stdout
    study = load(url)
    runs = [t for t in study.trials if is_confirmation(t)]
    assert len(runs) == 2 and all(t.state == TrialState.COMPLETE for t in runs)
    assert str(os.getpid()) not in " ".join(t.user_attrs["worker"] for t in runs)


def test_a_confirmation_run_trains_and_is_scored_on_its_own_split(tmp_path, tiny_mnist):
    cfg = load_study(tiny_study(tmp_path, confirm="{top: 1, seeds: 1}"))
    objective = Objective(cfg, load_data(cfg))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({}, user_attrs={CONFIRM_OF: 0, CONFIRM_SEED: 1, CONFIRM_SPLIT: 1})
    study.enqueue_trial({})
    confirmation, plain = study.ask(), study.ask()
    assert objective.data_for(plain) is objective.data
    other = objective.data_for(confirmation)
    assert other is objective.data_for(confirmation)  # made once
    assert other.meta["split_seed"] == 1 and other.meta["n_eval"] == objective.data.meta["n_eval"]
    assert not torch.equal(other.eval_x, objective.data.eval_x)
    assert objective.configure(confirmation).seed == 1 and objective.configure(plain).seed == cfg.seed


def test_packs_train_a_confirmation_run_on_its_own_split(tmp_path, tiny_mnist, capsys):
    path = tiny_study(tmp_path, pruner="none", n_trials=4, confirm="{top: 2, seeds: 1}", space=PACKABLE)
    assert main(["study", path, "--pack", "2"]) == 0
    trials = optuna.load_study(study_name="t", storage=os.environ["HPO_STORAGE"]).trials
    runs = [t for t in trials if is_confirmation(t)]
    assert len(runs) == 2 and all(t.state == TrialState.COMPLETE and t.user_attrs[CONFIRM_SPLIT] == 1 for t in runs)

"""`hpo activations --study NAME --mix-seeds N`: retrain a study's best mix configuration over seeds and
compare its learned P per layer with Bansal 2022's; the runs are stored on the study for the report."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from optuna.trial import TrialState

from hpo import data as data_mod
from hpo.data import Splits
from hpo.errors import StudyError
from hpo.results.activation_report import MIX_PAPER, p_summary, p_table, paper_mix
from hpo.search.papers import load_paper, study_paper
from hpo.search.storage import open_study
from hpo.search.study import SMOKE_EVAL, SMOKE_TRAIN
from hpo.sources import name_of
from hpo.training.activations import mix_p
from hpo.training.diagnostics import dead_units
from hpo.training.loop import train
from hpo.training.runtime import resolve_device
from hpo.training.spec import TrainConfig
from hpo.trials import study_attrs


def mix_over_seeds(config: dict, splits: Splits, seeds: Iterable[int], *, threads: int | None = None,
                   on_run: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one configuration once per seed; per run: seed, status, accuracy, mix_p, dead_units."""
    runs = []
    for seed in seeds:
        tc = TrainConfig.from_dict({**config, "seed": seed})
        r = train(tc, splits, threads=threads)
        run = {"seed": seed, "status": r.status, "accuracy": round(r.eval_acc, 5), "mix_p": mix_p(r.model),
               "dead_units": dead_units(r.model, splits.eval_x)}
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return runs



def best_mix_trial(study):
    """The best complete trial that has a mix layer; StudyError when there is none."""
    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if any(p is not None for p in t.user_attrs.get("mix_p") or [])]
    if not candidates:
        raise StudyError(f"study {study.study_name!r} has no complete trial with a `mix` activation layer")
    return max(candidates, key=lambda t: t.values[0])



def run_mix_seeds(study_name: str, n_seeds: int, *, storage: str | None = None, smoke: bool = False,
                  device: str | None = None, console=None) -> list[dict]:
    """`hpo activations --study NAME --mix-seeds N`: retrain the study's best mix configuration with seeds
    0..N-1 on the study's own split and store the runs on the study (user attr `mix_seed_runs`) for the report.
    --smoke: a few thousand samples and one epoch per cycle, printed but not stored. `device`: where to train
    (default: the study's budget.device, else cpu)."""
    if n_seeds < 1:
        raise StudyError("--mix-seeds: must be a positive number")
    study = open_study(study_name, storage, smoke)  # --smoke: the NAME-smoke study, retrained at its scale
    best = best_mix_trial(study)
    config = dict(best.user_attrs["config"])
    split = study_attrs(study).get("split") or {}
    if not split.get("dataset"):
        raise StudyError(f"study {study_name!r} does not record its data split (user attr `split`)")
    if smoke:
        config.update(epochs=1, cycle_epochs=min(config.get("cycle_epochs", 0), 1))
    budget = (study_attrs(study).get("study_yaml") or {}).get("budget") or {}
    threads = budget.get("threads")
    device = resolve_device(device, budget.get("device", "cpu"))
    splits = data_mod.make_splits(data_mod.load(split["dataset"]), val_size=split.get("val_size") or 10000,
                                  seed=split.get("split_seed") or 0, train_limit=SMOKE_TRAIN if smoke else None,
                                  eval_limit=SMOKE_EVAL if smoke else None).to(device)

    def show(run: dict) -> None:
        if console is not None:
            p = "  ".join("-" if v is None else "/".join(f"{x:.3f}" for x in v) for v in run["mix_p"])
            console.print(f"seed {run['seed']}: {run['status']} val acc {run['accuracy']:.4f}  P per layer {p}")

    if console is not None:
        console.print(f"retraining trial {best.number} of {study_name} (val acc {best.values[0]:.4f}) with "
                      f"seeds 0..{n_seeds - 1}{' at smoke scale' if smoke else ''}")
    runs = mix_over_seeds(config, splits, range(n_seeds), threads=threads, on_run=show)
    if console is not None:
        paper = study_paper(study_attrs(study)) or load_paper(MIX_PAPER)
        console.print(p_table(p_summary(runs, paper_mix(paper, split["dataset"])),
                              f"{study_name}: learned P per layer over {n_seeds} seeds vs "
                              f"{paper.title.split(',')[0]} ({name_of(split['dataset'])})"))
    if not smoke:
        study.set_user_attr("mix_seed_runs", {"trial": best.number, "config": config, "runs": runs})
    return runs


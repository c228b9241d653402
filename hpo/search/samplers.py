"""The samplers and pruners a study file can name: plain registries of whitelisted constructors, the
defaults a careful user would pick, and building them from a study's config."""

from __future__ import annotations

import secrets
import warnings
from collections import Counter

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hpo.errors import StudyError


class ExploringTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE, and in a share `explore` of its trials after the random start one categorical parameter (one of
    those in the trial's relative search space, drawn at random) set to the choice the study's finished trials have
    tried least, the rest of the trial as TPE drew it: a one-setting change to where the search is looking.

    Why: TPE commits each categorical parameter to the choice its first good trials had. Three 100-trial searches of
    relu3_adam drew one schedule in 64, 75 and 90 of their 97 trials, a different one in each, and the searches
    that committed to a constant schedule gave the lowest optima (README: search against a person). A person who
    found a good constant-schedule configuration would try it with a cosine schedule; this does.

    `explore` 0 is TPE itself. The changed value is the one the trial runs with, while the relative parameters
    shared with other workers (`constant_liar`) are TPE's draw; they only steer where other workers sample next."""

    extends = optuna.samplers.TPESampler  # whose keyword arguments a study's sampler_options may also give

    def __init__(self, *, explore: float = 0.0, **kwargs):
        if not 0.0 <= explore <= 1.0:
            raise StudyError(f"sampler_options.explore: a share of trials between 0 and 1, but got {explore!r}")
        super().__init__(**kwargs)
        self.explore = explore
        self._explore_rng = np.random.RandomState(kwargs.get("seed"))

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._explore_rng.seed()

    def sample_relative(self, study, trial, search_space):
        params = super().sample_relative(study, trial, search_space)
        if not params or self.explore <= 0 or self._explore_rng.rand() >= self.explore:
            return params
        names = sorted(n for n, d in search_space.items()
                       if n in params and isinstance(d, CategoricalDistribution) and len(d.choices) > 1)
        if not names:
            return params
        name = names[self._explore_rng.randint(len(names))]
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        tried = Counter(t.params[name] for t in finished if name in t.params)
        choices = search_space[name].choices
        fewest = min(tried[c] for c in choices)
        least = [c for c in choices if tried[c] == fewest]
        return {**params, name: least[self._explore_rng.randint(len(least))]}


SAMPLERS = {
    "tpe": ExploringTPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
}
# Defaults a careful user would pick; a study's sampler_options override them.
SAMPLER_DEFAULTS = {
    # multivariate+group model the depth-conditional widths and the conditional hyperparameters (momentum only in
    # sgd_momentum trials: hpo.search.space) jointly, group by group; constant_liar keeps parallel workers apart.
    "tpe": {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": 10},
}

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
# Warm-up of 4 epochs and 8 finished trials before pruning: Optuna's percentile pruners compare against
# COMPLETE trials only, and pruning at epoch 2 kills every slow starter (low lr, long cosine schedules),
# a short-horizon bias that left a study with its baselines and little else.
PRUNER_DEFAULTS = {
    "median": {"n_startup_trials": 8, "n_warmup_steps": 4},
    # Optuna's `percentile` is the share of trials kept: 75 prunes only the bottom quarter.
    "percentile": {"percentile": 75.0, "n_startup_trials": 8, "n_warmup_steps": 4},
    "hyperband": {"min_resource": 1, "reduction_factor": 3},
    "successive_halving": {"min_resource": 1, "reduction_factor": 3},
}


def grid_space(space) -> dict[str, list]:
    """GridSampler's search space: every categorical and small int range; float ranges cannot be gridded."""
    skipped = space.conditional()
    if skipped:  # a grid point is a full assignment: one whose parameter a trial skips repeats another's run
        raise StudyError(f"{space.source}: {skipped[0]}: is drawn only in some trials (a condition), and the grid "
                         f"sampler would train the same configuration once per value it skips; fix it or use "
                         f"another sampler")
    grid = {}
    for name, dist in space.distributions().items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
            values = list(range(dist.low, dist.high + 1, dist.step))
            if len(values) > 64:
                raise StudyError(f"{space.source}: {name}: an int range of {len(values)} values is too large for the "
                                 f"grid sampler; give it `step` or `choices`")
            grid[name] = values
        else:
            raise StudyError(f"{space.source}: {name}: the grid sampler needs `choices` (or a small int range), "
                             f"not a {'log ' if getattr(dist, 'log', False) else ''}range")
    return grid


def make_sampler(cfg, space=None, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler (cfg: a StudyConfig), seeded with `seed` or the study's own."""
    options = {**SAMPLER_DEFAULTS.get(cfg.sampler, {}), **cfg.sampler_options}
    seed = cfg.seed if seed is None else seed
    if cfg.sampler == "grid":
        # Always the study's own seed: GridSampler shuffles its grid by the seed and stores each trial's place in
        # that order (grid_id), so a worker or a resumed run with another seed read the ids as other points (two
        # workers of mixed_activation ran seed 2 twice and seed 0 never).
        return optuna.samplers.GridSampler(grid_space(space or cfg.space), seed=cfg.seed, **options)
    with warnings.catch_warnings():  # TPE's `group` (a default here) is marked experimental: chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[cfg.sampler](seed=seed, **options)


# pruner_step: percent. A trial reports its validation accuracy at 5%, 10%, ..., 100% of its own schedule
# (`percent_steps`), so that the pruner compares trials at the same point of their schedules: at epoch steps, epoch 8
# of a 40-epoch cosine run (learning rate still near its peak) meets epoch 8 of a 10-epoch one (almost annealed) and
# loses, and long schedules are cut before they can show what they reach (README: where the search lost).
PERCENT_EVERY = 5
# Nothing is pruned before a quarter of its own schedule (the epoch-step defaults' 4 epochs, in percent).
PERCENT_DEFAULTS = {"median": {"n_warmup_steps": 25}, "percentile": {"n_warmup_steps": 25}}
PRUNER_STEPS = ("epoch", "percent")
PERCENT_PRUNERS = ("median", "percentile", "none")  # Hyperband's and successive halving's resource is the epoch


def percent_steps(epoch: int, epochs: int) -> list[int]:
    """The points of its schedule, in percent, that a run of `epochs` epochs passes with epoch `epoch` (from 1):
    each is reported with the accuracy of the first epoch at or after it."""
    n = 100 // PERCENT_EVERY
    first, last = (epoch - 1) * n // epochs + 1, epoch * n // epochs
    return [q * PERCENT_EVERY for q in range(first, last + 1)]


def max_epochs(space) -> int:
    d = space.params.get("epochs")
    if d is None:
        return 10
    return int(d.value if d.kind == "fixed" else d.high if d.kind == "int" else max(d.choices))


def make_pruner(cfg, space=None) -> optuna.pruners.BasePruner:
    options = dict(PRUNER_DEFAULTS.get(cfg.pruner, {}))
    if cfg.pruner_step == "percent":
        options.update(PERCENT_DEFAULTS.get(cfg.pruner, {}))
    if cfg.pruner == "hyperband":
        options["max_resource"] = max_epochs(space or cfg.space)
    options.update(cfg.pruner_options)
    return PRUNERS[cfg.pruner](**options)



def joining_seed() -> int:
    """A sampler seed for a process that resumes or joins a study. The study's own seed would replay the
    random start-up trials that the first process already drew; resumed and parallel runs cannot be
    reproduced anyway, since their trials interleave by timing."""
    return secrets.randbits(31)


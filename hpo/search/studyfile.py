"""Study and search-space files: typed and validated objects out, once, at the edge.

Every error names the file and the key, e.g.
    studies/x.yaml: budget.threads: expected int, but got 'two'
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpo.errors import ConfigError, DataError, check_keys, check_mapping, check_type
from hpo.search.files import file_label, read_yaml, resolve_file
from hpo.search.papers import Paper, load_paper
from hpo.search.samplers import PERCENT_PRUNERS, PRUNER_STEPS, PRUNERS, SAMPLERS
from hpo.search.space import PARAMS, Space
from hpo.search.storage import SAFE_NAME, study_name
from hpo.sources import DATASETS, DataSource, dataset_io, parse_source, train_size
from hpo.training.spec import TrainConfig, check_device

OBJECTIVES = {"accuracy": "maximize", "params": "minimize", "latency": "minimize"}


def load_space(name_or_path: str, source: str = "<command line>", key: str = "", base: Path | None = None) -> Space:
    path = resolve_file(name_or_path, "search_spaces", "search space", source, key, base)
    doc, header = read_yaml(path)
    return Space.parse(doc, file_label(path), header, base=path.parent)


# --- study --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    device: str = "cpu"
    threads: int = 2
    trial_timeout: float | None = None  # seconds of wall time per trial
    max_params: int | None = None
    memory_mb: int | None = None
    pack: int | str = 1  # trials trained at once as one stacked computation (hpo.search.pack_runner); 1: one at a time;
    # "auto": K per shape and batch size from a short calibration (hpo.training.pack.calibrate_pack)
    workers: int = 1  # processes on this machine sharing the study and `threads` (`hpo study --workers` overrides)

    @property
    def packs(self) -> bool:
        """Whether trials train in packs (hpo.search.pack_runner) rather than one at a time."""
        return self.pack == "auto" or self.pack > 1


def _pack(value, src) -> int | str:
    """budget.pack: a positive number of trials, or "auto"."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(src, "budget.pack", f"expected a positive number of trials or auto, but got {value!r}")
    return value


@dataclass(frozen=True)
class Confirm:
    """Once the search ends, its `top` best trials are trained `seeds` more times each, with other seeds on other
    validation splits, and the optimum is the one with the best mean (hpo.search.confirm): one run's validation
    accuracy is one draw, and the best of a hundred draws is the luckiest as much as the best (README: search
    against a person)."""

    top: int = 0  # 0: no confirmation
    seeds: int = 1

    @property
    def runs(self) -> int:
        return self.top * self.seeds


@dataclass(frozen=True)
class Baseline:
    name: str
    hp: dict  # TrainConfig keyword arguments
    reported: float | None = None


@dataclass(frozen=True)
class StudyConfig:
    name: str
    source: str
    description: str
    dataset: DataSource
    space: Space
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict = field(default_factory=dict)
    pruner_step: str = "epoch"  # what a trial's steps count for the pruner: epochs, or percent of its own schedule
    seed: int = 0
    n_trials: int = 20
    timeout: float | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    val_size: int = 10000
    split_seed: int = 0
    budget: Budget = Budget()
    confirm: Confirm = Confirm()
    paper: Paper | None = None
    tables: tuple = ()
    protocol: dict = field(default_factory=dict)
    baselines: tuple[Baseline, ...] = ()
    raw: dict = field(default_factory=dict)  # the file as read, for provenance
    smoke: bool = False  # scaled down by load_study(..., smoke=True); its trials train on a few thousand samples
    search: int = 1  # which independent search of the study this is (hpo.search.study.prepare, `--search K`)

    @property
    def study_name(self) -> str:
        """Its name in the storage: NAME, or NAME-smoke for the tiny-scale study."""
        return study_name(self.name, self.smoke)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]


STUDY_KEYS = {"dataset", "space", "sampler", "sampler_options", "pruner", "pruner_options", "pruner_step", "seed",
              "n_trials", "timeout", "objectives", "split", "budget", "baselines", "confirm"}
BUDGET_KEYS = {"device", "threads", "trial_timeout", "max_params", "memory_mb", "pack", "workers"}
SPLIT_KEYS = {"val_size", "seed"}
BASELINE_KEYS = {"paper", "tables", "protocol"}
CONFIRM_KEYS = {"top", "seeds"}


def check_options(factory, options: dict, source: str, key: str) -> None:
    """Options for a sampler or pruner must be keyword arguments its constructor takes (or, for one that `extends`
    another, the other's)."""
    params = dict(inspect.signature(factory).parameters)
    if getattr(factory, "extends", None) is not None:
        params = {**inspect.signature(factory.extends).parameters, **params}
        params = {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for k in options:
        if k not in params or k in ("seed", "search_space"):
            allowed = sorted(n for n in params if n not in ("seed", "search_space", "self"))
            raise ConfigError(source, f"{key}.{k}", f"unknown option; allowed: {', '.join(allowed) or 'none'}")


def load_study(name_or_path: str, smoke: bool = False) -> StudyConfig:
    """The study file, validated; with smoke, the same study at tiny scale, resolved here once."""
    cfg = _load_study(name_or_path)
    return _smoke_variant(cfg) if smoke else cfg


def _smoke_variant(cfg: StudyConfig) -> StudyConfig:
    """The same study at tiny scale: one epoch, a few trials, two baselines, its own study name."""
    # Under the three-cycle schedule `epochs` is 3 x cycle_epochs: one epoch per cycle is its smallest run.
    cycles = {"cycle_epochs": 1} if any(cfg.space.possible("cycle_epochs", 0)) else {}
    baselines = tuple(replace(b, hp={**b.hp, "epochs": 1}) for b in cfg.baselines[:2])
    confirm = replace(cfg.confirm, top=min(cfg.confirm.top, 2), seeds=min(cfg.confirm.seeds, 1))
    return replace(cfg, space=cfg.space.with_fixed(epochs=1, **cycles), n_trials=min(cfg.n_trials, 4),
                   baselines=baselines, confirm=confirm, smoke=True)


def _load_study(name_or_path: str) -> StudyConfig:
    path = resolve_file(name_or_path, "studies", "study")
    src = file_label(path)
    name = path.stem
    if not SAFE_NAME.match(name):
        raise ConfigError(src, "name", f"{name!r} is not a safe study name (letters, digits, _ . -)")
    doc, header = read_yaml(path)
    if not isinstance(doc, dict):
        raise ConfigError(src, "", "a study file is a mapping of keys to values")
    check_keys(doc, STUDY_KEYS, src, required=("dataset", "space"))

    dataset = parse_source(doc["dataset"], src, "dataset", base=path.parent)
    space = load_space(check_type(doc["space"], str, src, "space"), src, "space", base=path.parent)

    sampler = check_type(doc.get("sampler", "tpe"), str, src, "sampler")
    if sampler not in SAMPLERS:
        raise ConfigError(src, "sampler", f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    sampler_options = check_mapping(doc.get("sampler_options"), None, src, "sampler_options")
    check_options(SAMPLERS[sampler], sampler_options, src, "sampler_options")
    explore = sampler_options.get("explore", 0.0)
    if isinstance(explore, bool) or not isinstance(explore, (int, float)) or not 0 <= explore <= 1:
        raise ConfigError(src, "sampler_options.explore", f"a share of trials between 0 and 1, but got {explore!r}")
    pruner = check_type(doc.get("pruner", "median"), str, src, "pruner")
    if pruner not in PRUNERS:
        raise ConfigError(src, "pruner", f"unknown pruner {pruner!r}; known: {', '.join(PRUNERS)}")
    pruner_options = check_mapping(doc.get("pruner_options"), None, src, "pruner_options")
    check_options(PRUNERS[pruner], pruner_options, src, "pruner_options")
    pruner_step = check_type(doc.get("pruner_step", "epoch"), str, src, "pruner_step")
    if pruner_step not in PRUNER_STEPS:
        raise ConfigError(src, "pruner_step", f"expected one of {', '.join(PRUNER_STEPS)}, but got {pruner_step!r}")
    if pruner_step == "percent" and pruner not in PERCENT_PRUNERS:
        raise ConfigError(src, "pruner_step", f"the {pruner} pruner's resource is the epoch; percent steps suit "
                                              f"{', '.join(PERCENT_PRUNERS)}")

    objectives = doc.get("objectives", ["accuracy"])
    if not isinstance(objectives, list) or not objectives:
        raise ConfigError(src, "objectives", f"expected a non-empty list, but got {objectives!r}")
    for i, o in enumerate(objectives):
        if o not in OBJECTIVES:
            raise ConfigError(src, f"objectives[{i}]", f"unknown objective {o!r}; known: {', '.join(OBJECTIVES)}")
    if objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
        raise ConfigError(src, "objectives", "the first objective must be accuracy, and none may repeat")
    if len(objectives) > 1 and pruner != "none":
        raise ConfigError(src, "pruner", "Optuna cannot prune multi-objective studies; use `pruner: none`")

    split = check_mapping(doc.get("split"), SPLIT_KEYS, src, "split")
    val_size = check_type(split.get("val_size", 10000), int, src, "split.val_size", positive=True)
    split_seed = check_type(split.get("seed", 0), int, src, "split.seed")
    try:
        n_train = train_size(dataset)
    except DataError as e:
        raise ConfigError(src, "dataset", str(e)) from None
    if val_size >= n_train:
        raise ConfigError(src, "split.val_size", f"`val_size < {n_train}` must hold (the training samples of "
                                                 f"{dataset.title}), but got {val_size}")

    b = check_mapping(doc.get("budget"), BUDGET_KEYS, src, "budget")
    device = check_device(check_type(b.get("device", "cpu"), str, src, "budget.device"), src, "budget.device")
    budget = Budget(
        device=device,
        threads=check_type(b.get("threads", 2), int, src, "budget.threads", positive=True),
        trial_timeout=check_type(b.get("trial_timeout"), (int, float), src, "budget.trial_timeout", positive=True,
                             allow_none=True),
        max_params=check_type(b.get("max_params"), int, src, "budget.max_params", positive=True, allow_none=True),
        memory_mb=check_type(b.get("memory_mb"), int, src, "budget.memory_mb", positive=True, allow_none=True),
        pack=_pack(b.get("pack", 1), src),
        workers=check_type(b.get("workers", 1), int, src, "budget.workers", positive=True),
    )

    c = check_mapping(doc.get("confirm"), CONFIRM_KEYS, src, "confirm", required=("top",))
    confirm = Confirm(top=check_type(c["top"], int, src, "confirm.top", positive=True) if c else 0,
                      seeds=check_type(c.get("seeds", 1), int, src, "confirm.seeds", positive=True))
    if confirm.top and len(objectives) > 1:
        raise ConfigError(src, "confirm", "confirmation ranks trials by accuracy alone; a multi-objective study "
                                          "keeps its Pareto set: leave confirm out")

    paper, tables, proto, baselines = None, (), {}, []
    bl = check_mapping(doc.get("baselines"), BASELINE_KEYS, src, "baselines")
    if bl:
        if "paper" not in bl:
            raise ConfigError(src, "baselines.paper", "missing: the paper file whose rows are the baselines")
        io = dataset_io(dataset)
        paper = load_paper(check_type(bl["paper"], str, src, "baselines.paper"), src, "baselines.paper",
                           path.parent, io)
        tables = bl.get("tables", paper.tables)
        if not isinstance(tables, list) or not all(t in paper.captions for t in tables):
            raise ConfigError(src, "baselines.tables", f"expected a list of tables out of {paper.tables} "
                                                       f"({paper.source}), but got {tables!r}")
        overrides = check_mapping(bl.get("protocol"), {a.key for a in paper.protocol}, src, "baselines.protocol")
        proto = paper.protocol_values(overrides)
        for t in tables:
            for row in paper.table(t):
                hp = paper.row_config(row, proto)
                problems = space.problems(hp) + _unsearched_mismatch(space, hp) + _left_to_sampler(space, hp)
                if problems:
                    raise ConfigError(src, "baselines", f"{paper.source}: table {t}: row {row.name} lies outside "
                                                        f"the space {space.source}: {problems[0]}")
                baselines.append(Baseline(row.name, hp, row.reported))

    return StudyConfig(
        name=name, source=src, description=header, dataset=dataset, space=space,
        sampler=sampler, sampler_options=sampler_options, pruner=pruner, pruner_options=pruner_options,
        pruner_step=pruner_step,
        seed=check_type(doc.get("seed", 0), int, src, "seed"),
        n_trials=check_type(doc.get("n_trials", 20), int, src, "n_trials", positive=True),
        timeout=check_type(doc.get("timeout"), (int, float), src, "timeout", positive=True, allow_none=True),
        objectives=tuple(objectives), val_size=val_size, split_seed=split_seed, budget=budget, confirm=confirm,
        paper=paper, tables=tuple(tables), protocol=proto, baselines=tuple(baselines), raw=doc,
    )


def _left_to_sampler(space: Space, hp: dict) -> list[str]:
    """A searched hyperparameter that a paper row and its protocol leave out would be drawn by the sampler: the
    baseline would not be the paper's configuration."""
    tc = TrainConfig(**hp)
    return [f"{name} is searched, but neither the row nor the protocol gives it"
            for name, d in space.params.items()
            if d.kind != "fixed" and name not in ("depth", "seed", "negative_slope")
            and (PARAMS[name].field or name) not in hp and tc.active(PARAMS[name].field or name)]


def _unsearched_mismatch(space: Space, hp: dict) -> list[str]:
    """A baseline value for a hyperparameter the space leaves out must be the default the trial will use."""
    covered = {PARAMS[n].field or n for n in space.params} | {"widths"}
    default = TrainConfig()
    return [f"{k}={v!r} but the space does not set {k}, so trials use {getattr(default, k)!r}"
            for k, v in hp.items() if k not in covered and getattr(default, k) != v]


def paper_dataset_note(cfg: StudyConfig) -> str | None:
    """One line when the study runs a registered data set and its compared rows were reported on another registered
    one: not an error (auditing a paper's configurations on other data is a fair question), but worth saying."""
    if cfg.paper is None or cfg.dataset.kind != "registered":
        return None
    others = sorted(({r.dataset for t in cfg.tables for r in cfg.paper.table(t)} & set(DATASETS)) - {cfg.dataset.name})
    if not others:
        return None
    return (f"{cfg.paper.source} reports its rows on {', '.join(others)}; this study runs {cfg.dataset.name}, so "
            f"the paper's numbers are compared across data sets")


def check_file(path: str) -> str:
    """Validate one study, search-space or paper file; returns what it is. Raises ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(path, "", "no such file")
    doc, _ = read_yaml(p)
    if isinstance(doc, dict) and ("space" in doc or "dataset" in doc) and "title" not in doc:
        note = paper_dataset_note(load_study(str(p)))
        return f"study; note: {note}" if note else "study"
    if isinstance(doc, dict) and ("title" in doc or "tables" in doc):
        load_paper(str(p))
        return "paper"
    load_space(str(p))
    return "search space"

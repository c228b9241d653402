"""A study, from its validated config to a stored Optuna study: create it with its provenance (or load it to
resume), enqueue the paper's baselines once, and the smoke-scale variant. `prepare` and `load_data` are what
`hpo study` and its workers do first: everything that can fail on bad input, before anything is written."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import fields, replace

import optuna
from optuna.trial import TrialState

from hpo import data as data_mod
from hpo.errors import ConfigError, HpoError, StudyError
from hpo.provenance import git_commit, versions
from hpo.search.samplers import make_pruner, make_sampler
from hpo.search.studyfile import StudyConfig, load_study
from hpo.training.runtime import resolve_device
from hpo.trials import METRIC_NAMES, set_provenance, study_attrs

# --smoke: the first few thousand training and validation images (hpo study, compare, --mix-seeds).
SMOKE_TRAIN, SMOKE_EVAL = 3000, 1000


def config_hash(cfg: StudyConfig) -> str:
    text = json.dumps([cfg.raw, repr(cfg.space.params)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- the study ----------------------------------------------------------------------------------


def create_or_load(cfg: StudyConfig, storage, study_name: str, split_meta: dict, space=None,
                   sampler: optuna.samplers.BaseSampler | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (recording its provenance) or load it to resume. Returns (study, created)."""
    space = space or cfg.space
    sampler = sampler or make_sampler(cfg, space)
    try:  # exactly one of several processes starting at once creates it; the others load it
        study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=False,
                                    directions=cfg.directions, sampler=sampler, pruner=make_pruner(cfg, space))
        created = True
        study.set_user_attr(READY_ATTR, False)  # first of all: joiners wait until enqueue_baselines sets it
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                  pruner=make_pruner(cfg, space))
        created = False
        if not wait_until_ready(study):
            warnings.warn(f"study {study_name!r}: its creator had not finished enqueuing the paper's baselines "
                          f"after 120 s; this process enqueues those still missing", stacklevel=2)
    if created:
        with warnings.catch_warnings():  # experimental in Optuna; the dashboard shows the names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[o] for o in cfg.objectives])
        set_provenance(study, {"study_yaml": cfg.raw, "description": cfg.description, "versions": versions(),
                               "paper_record": cfg.paper.record() if cfg.paper else None, "split": split_meta,
                               "protocol": cfg.protocol, "study_file": cfg.source, "space_file": space.source,
                               "config_hash": config_hash(cfg), "git_commit": git_commit(),
                               "space": {n: plain_dist(d) for n, d in space.params.items()}})
        attrs = {
            "hpo_study": cfg.name, "objectives": list(cfg.objectives), "sampler": cfg.sampler,
            "pruner": cfg.pruner, "seed": cfg.seed, "data": str(cfg.dataset),
            "paper": cfg.paper.key if cfg.paper else None,
            "tables": list(cfg.tables),
        }
        for k, v in attrs.items():
            study.set_user_attr(k, v)
    return study, created


def plain_dist(d) -> dict:
    """A space entry as plain data, its non-default fields only: {"kind": "float", "low": 1e-05, "high": 0.1,
    "log": true}, which Optuna's CLI and the dashboard show as JSON (a Python repr reads as noise there)."""
    out = {}
    for f in fields(d):
        value = getattr(d, f.name)
        if f.name != "name" and (f.name == "kind" or value != f.default):
            out[f.name] = json.loads(json.dumps(value, default=str))
    return out


def enqueue_baselines(study: optuna.Study, cfg: StudyConfig, space=None, baselines=None) -> int:
    """Enqueue the paper's configurations as real trials, once (skip_if_exists); returns how many are new."""
    space = space or cfg.space
    baselines = cfg.baselines if baselines is None else baselines
    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for b in baselines:
        study.enqueue_trial(space.trial_params(b.hp), user_attrs={"baseline": b.name, "paper_reported": b.reported},
                            skip_if_exists=True)
    if not study.user_attrs.get(READY_ATTR):
        study.set_user_attr(READY_ATTR, True)
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - before


# Set once the creator has recorded the study's provenance and enqueued its baselines.
READY_ATTR = "baselines_enqueued"


def wait_until_ready(study: optuna.Study, timeout: float = 120.0) -> bool:
    """A process that joins a study another one has just created waits until the creator has enqueued the
    baselines: enqueuing them from both at the same moment could duplicate them (skip_if_exists only sees
    what is already stored), and a joiner that saw the first of them enqueued would add the rest itself.
    The creator sets READY_ATTR to False first and to True once every baseline is in. A study without the
    attribute is ready when it holds anything (one from before this attribute); an empty one without it is
    a creator's that has not written its first attribute yet. Returns False when the timeout passed first (a
    creator that died before it finished, or one starved of CPU that long). The joiner then enqueues what is
    missing; if the creator is alive after all, a baseline can run twice. This wait was 30 s, which eight
    workers starting at once on two busy cores can pass (a load test once ran both baselines twice)."""
    deadline = time.monotonic() + timeout

    def ready() -> bool:
        flag = study.user_attrs.get(READY_ATTR)
        if flag is not None:
            return bool(flag)
        return bool(study.user_attrs) or bool(study.get_trials(deepcopy=False))

    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True



def prepare(name_or_path: str, *, smoke: bool = False, trials: int | None = None, timeout: float | None = None,
            pack: int | str | None = None, search: int = 1):
    """Everything that can fail on bad input, before anything is written. `search` K >= 2: the study's K-th
    independent search (search_study)."""
    cfg = load_study(name_or_path, smoke=smoke)
    space = cfg.space
    if search != 1:
        cfg = search_study(cfg, search)
    if trials is not None:
        if trials <= 0:
            raise HpoError("--trials: must be a positive number")
        cfg = replace(cfg, n_trials=trials)
    if timeout is not None:
        cfg = replace(cfg, timeout=timeout)
    if pack is not None:
        if pack != "auto" and (not isinstance(pack, int) or pack <= 0):
            raise HpoError(f"--pack: must be a positive number or auto, but got {pack}")
        cfg = replace(cfg, budget=replace(cfg.budget, pack=pack))
    resolve_device(cfg.budget.device, where=f"{cfg.source}: budget.device")
    return cfg, space


def search_name(name: str, search: int) -> str:
    """The storage name of a study's K-th independent search: NAME for the first, NAME-searchK after it."""
    return name if search == 1 else f"{name}-search{search}"


def search_study(cfg: StudyConfig, search: int) -> StudyConfig:
    """The K-th independent search of a study, for measuring how far apart searches land (`make reproduce
    SEARCHES=3`, `hpo compare --searches`): its own study name (NAME-searchK, so that it never resumes another
    search's trials) and its own seed, the file's seed + K - 1, which seeds the sampler and the trials'
    initialisation and batch order. The split and everything else are the file's."""
    if not isinstance(search, int) or search < 1:
        raise HpoError(f"--search: must be a positive number, but got {search}")
    return replace(cfg, name=search_name(cfg.name, search), seed=cfg.seed + search - 1, search=search)


def check_same_data(study: optuna.Study, sha256: str) -> None:
    """Refuse to resume, export or compare a study whose data changed since its trials ran: the data's sha256
    is recorded with the study's split."""
    recorded = (study_attrs(study).get("split") or {}).get("data_sha256")
    if recorded and recorded != sha256:
        raise StudyError(f"study {study.study_name!r}: its data changed since it ran (sha256 {sha256[:12]}…, recorded "
                         f"{recorded[:12]}…); restore the data, or start a new study under another name")


def load_data(cfg: StudyConfig) -> data_mod.Splits:
    """The study's tuning split, on budget.device; a space that augments tabular data is refused here, where
    the data's shape is first known."""
    ds = data_mod.load(cfg.dataset)
    if not ds.images and any(v != "none" for v in cfg.space.possible("augment", "none")):
        raise ConfigError(cfg.space.source, "augment", f"shifts and flips need images, but {cfg.dataset} holds "
                                                       f"{ds.input_shape[0]} tabular features; leave augment out")
    splits = data_mod.make_splits(ds, val_size=cfg.val_size, seed=cfg.split_seed,
                                  train_limit=SMOKE_TRAIN if cfg.smoke else None,
                                  eval_limit=SMOKE_EVAL if cfg.smoke else None)
    return splits.to(cfg.budget.device)

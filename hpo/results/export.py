"""What a study finds, out of the storage: complete, re-trainable YAML configs with provenance.

An exported config is one YAML document:

    dataset: fashion_mnist
    split: {val_size: 10000, seed: 0, n_train: 50000, n_eval: 10000}   # the study's validation split
    train: {model: mlp, widths: [60, 40], activation: relu, optimizer: adam, lr: 0.001, ..., seed: 0}
    provenance: {study: relu3_adam, trial: 17, val_accuracy: 0.89, sampler: tpe, versions: ..., ...}

`train` holds every TrainConfig field that affects the run, so `hpo train FILE` needs nothing else; one that
does not (momentum under adam: hpo.training.spec.CONDITIONS) is left out and reads back as its default. A
hand-written file may leave out the optional TrainConfig fields (they take TrainConfig's defaults), `split` and
`provenance`.

Files, in runs/NAME/ unless --out says otherwise:
    single objective   best.yaml (the best trial), and with --top K also top2.yaml … topK.yaml
    multi-objective    pareto1.yaml … paretoN.yaml: the Pareto set, most accurate first
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial

from hpo import data as data_mod
from hpo.display import number
from hpo.errors import ConfigError, HpoError, StudyError, check_mapping
from hpo.hints import command_hint, hpo_command
from hpo.provenance import ROOT, git_commit, versions
from hpo.search.files import file_label, read_yaml
from hpo.search.space import PARAMS, Param, coerce
from hpo.search.storage import open_study
from hpo.search.study import check_same_data
from hpo.sources import DataSource, parse_source
from hpo.training.models import check_builder_args, is_plugin, load_builder
from hpo.training.spec import TrainConfig
from hpo.trials import best_trials, complete_trials, confirmed, metric_names, score, searched, study_attrs
from hpo.urls import redact, storage_url

CONFIG_KEYS = ("dataset", "split", "train", "provenance")
SPLIT_KEYS = ("val_size", "seed", "n_train", "n_eval")
# What defines a run; the other TrainConfig fields may be left out of a hand-written file.
TRAIN_REQUIRED = ("widths", "activation", "optimizer", "lr", "batch_size", "epochs", "seed")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
STALE = re.compile(r"^(best|top\d+|pareto\d+)\.yaml$")


@dataclass(frozen=True)
class ExportedConfig:
    source: str
    dataset: DataSource
    train: TrainConfig
    val_size: int = 10000
    split_seed: int = 0
    n_train: int | None = None  # what the study's trials trained on (smaller in a --smoke study)
    n_eval: int | None = None
    provenance: dict = field(default_factory=dict)


# --- reading a config ---------------------------------------------------------------------------


def _int(value, src, key, positive=False):
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise ConfigError(src, key, f"expected a{' positive' if positive else 'n'} int, but got {value!r}")
    return value


def _train_values(doc: dict, src: str) -> dict:
    """Each value checked with the search-space grammar's own rules for that hyperparameter."""
    out = {}
    for k, v in doc.items():
        key = f"train.{k}"
        if k == "seed":
            out[k] = _int(v, src, key)
        elif k == "widths":
            if not isinstance(v, list) or not v:
                raise ConfigError(src, key, f"expected a non-empty list of ints, but got {v!r}")
            out[k] = tuple(coerce(w, PARAMS["width"], src, f"{key}[{i}]") for i, w in enumerate(v))
        elif k in ("activation", "negative_slope") and isinstance(v, list):  # one per hidden layer
            out[k] = tuple(coerce(a, PARAMS[k], src, f"{key}[{i}]") for i, a in enumerate(v))
        elif k == "model_args":  # a user's model's own arguments, checked by its builder's signature
            if not isinstance(v, dict):
                raise ConfigError(src, key, f"expected a mapping of argument names to values, but got {v!r}")
            out[k] = {a: tuple(x) if isinstance(x, list) else x for a, x in v.items()}
        else:  # a TrainConfig field the grammar does not list is checked by its default's type
            out[k] = coerce(v, PARAMS.get(k) or Param(type(getattr(TrainConfig(), k))), src, key)
    if is_plugin(out.get("model", "mlp")):
        check_builder_args(load_builder(out["model"], src, "train.model"), list(out.get("model_args", {})), src,
                           "train.model_args")
    for k in ("activation", "negative_slope"):
        if isinstance(out.get(k), tuple) and len(out[k]) != len(out["widths"]):
            raise ConfigError(src, f"train.{k}", f"has {len(out[k])} entries but widths has {len(out['widths'])}")
    return out


def load_config(path: str | Path) -> ExportedConfig:
    """Read and validate an exported (or hand-written) config; errors name the file and the key."""
    src = file_label(Path(path))
    if not Path(path).is_file():
        raise ConfigError(src, "", "no such file")
    doc, _ = read_yaml(Path(path))
    if isinstance(doc, dict) and "space" in doc and "train" not in doc:
        name = Path(path).stem
        shipped = Path(path).resolve() == ROOT / "studies" / f"{name}.yaml"
        raise ConfigError(src, "", f"is a study file, not a trained configuration: run "
                                   f"`{command_hint(f'study {name if shipped else path}')}`"
                                   f", then `{command_hint(f'export {name}')}`, and train the runs/{name}/best.yaml "
                                   f"it writes (or `{command_hint(f'compare {name}', make=f'compare NAME={name}')}` "
                                   f"for the whole comparison)")
    check_mapping(doc, CONFIG_KEYS, src, "", required=("dataset", "train"), optional=False)
    dataset = parse_source(doc["dataset"], src, "dataset", base=Path(path).parent)
    split = check_mapping(doc.get("split") or {}, SPLIT_KEYS, src, "split")
    check_mapping(doc["train"], TRAIN_KEYS, src, "train", required=TRAIN_REQUIRED, optional=False)
    prov = check_mapping(doc.get("provenance") or {}, None, src, "provenance")
    opt = {k: _int(split[k], src, f"split.{k}", positive=True) if split.get(k) is not None else None
           for k in ("n_train", "n_eval")}
    return ExportedConfig(
        source=src, dataset=dataset, train=TrainConfig(**_train_values(doc["train"], src)),
        val_size=_int(split.get("val_size", 10000), src, "split.val_size", positive=True),
        split_seed=_int(split.get("seed", 0), src, "split.seed"), provenance=prov, **opt,
    )


# --- writing ------------------------------------------------------------------------------------


def config_doc(study: optuna.Study, trial: FrozenTrial, rank: int, selection: str, storage: str) -> dict:
    attrs, s = trial.user_attrs, study_attrs(study)
    split = s.get("split", {})
    train = TrainConfig.from_dict(attrs["config"]).to_dict(active_only=True)  # an old study's adam trial had momentum
    prov = {
        "study": study.study_name, "study_file": s.get("study_file"), "space_file": s.get("space_file"),
        "storage": storage, "trial": trial.number, "rank": rank, "selection": selection,
        "values": dict(zip(metric_names(study), trial.values)), "val_accuracy": trial.values[0],
        "val_curve": attrs.get("val_curve"), "n_params": attrs.get("n_params"),
        "epochs_trained": attrs.get("epochs_trained"), "train_seconds": attrs.get("train_seconds"),
        "baseline": attrs.get("baseline"), "paper_reported": attrs.get("paper_reported"),
        "sampler": s.get("sampler"), "pruner": s.get("pruner"), "study_seed": s.get("seed"),
        "data": {k: split.get(k) for k in ("source", "verified", "mean", "std")},
        "versions": s.get("versions"), "git_commit": s.get("git_commit"),
        "exported_with": {"versions": versions(), "git_commit": git_commit()},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {
        "dataset": split.get("dataset") or s.get("study_yaml", {}).get("dataset"),
        "split": {"val_size": split.get("val_size"), "seed": split.get("split_seed"),
                  "n_train": split.get("n_train"), "n_eval": split.get("n_eval")},
        "train": train,
        "provenance": {k: v for k, v in prov.items() if v is not None},
    }


def dump(doc: dict, header: str) -> str:
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def export(name: str, *, top: int | None = None, out: str | Path | None = None, storage: str | None = None,
           smoke: bool = False) -> list[tuple[Path, FrozenTrial]]:
    """Write the chosen trials as configs; returns (path, trial) pairs. Everything is checked before the
    first file or folder is made."""
    if top is not None and top <= 0:
        raise HpoError("--top: must be a positive number")
    study = open_study(name, storage, smoke)
    split = study_attrs(study).get("split") or {}
    if split.get("data_sha256"):  # an optimum re-trained on other data is another experiment
        check_same_data(study, data_mod.load(split["dataset"]).sha256)
    chosen = best_trials(study, top)
    missing = [t.number for t in chosen if "config" not in t.user_attrs]
    if missing:
        raise StudyError(f"study {study.study_name!r}: trial {missing[0]} records no config; cannot export it")
    multi = len(study.directions) > 1
    out = Path(out) if out else Path("runs") / study.study_name
    if out.suffix in (".yaml", ".yml"):
        if len(chosen) > 1:
            raise HpoError(f"--out {out}: a .yaml file holds one config, but {len(chosen)} were chosen; give a folder")
        paths = [out]
    else:
        if out.exists() and not out.is_dir():
            raise HpoError(f"--out {out}: exists and is not a folder")
        stems = [f"pareto{i}" for i in range(1, len(chosen) + 1)] if multi else \
            ["best"] + [f"top{i}" for i in range(2, len(chosen) + 1)]
        paths = [out / f"{s}.yaml" for s in stems]

    url = redact(storage_url(storage, mkdir=False))
    n_complete = len(searched(complete_trials(study)))
    confirms = {} if multi else confirmed(study)
    docs = []
    for rank, t in enumerate(chosen, 1):
        if multi:
            selection = (f"Pareto set of {'/'.join(metric_names(study))}: member {rank} of "
                         f"{len(study.best_trials)} (most accurate first)")
        elif confirms:
            runs = confirms.get(t.number)
            how = f"its mean over {len(runs)} runs, {number(score(t, confirms))}" if runs else "its own run"
            selection = (f"rank {rank} of {n_complete} complete trials by {metric_names(study)[0]}, the "
                         f"{len(confirms)} confirmed first by their mean over runs of other seeds and splits ({how})")
        else:
            selection = f"rank {rank} of {n_complete} complete trials by {metric_names(study)[0]}"
        doc = config_doc(study, t, rank, selection, url)
        if confirms.get(t.number):
            doc["provenance"]["confirmed"] = {"mean": score(t, confirms), "runs": confirms[t.number]}
        docs.append(doc)

    paths[0].parent.mkdir(parents=True, exist_ok=True)
    if paths[0].parent == out:  # a fresh export replaces the previous one's files, never anything else
        for old in out.iterdir():
            if STALE.match(old.name):
                old.unlink()
    hpo = hpo_command()  # as it is called from here, where `path` is valid too
    for path, doc, t in zip(paths, docs, chosen):
        values = ", ".join(f"{k} {number(v)}" for k, v in doc["provenance"]["values"].items())
        header = (f"{study.study_name} trial {t.number}: {doc['provenance']['selection']}; {values}\n"
                  f"Re-train on the full training set, test on the test set: {hpo} train {path} --seeds 5\n"
                  f"Reproduce the trial's validation accuracy:                 {hpo} train {path} --validation")
        path.write_text(dump(doc, header))
    return list(zip(paths, chosen))

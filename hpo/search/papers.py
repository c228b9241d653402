"""Papers as files: what a paper claims and what it leaves out, read from papers/NAME.yaml (or any path).

    title: "Smith 2023, Tuning small MLPs by hand"        # required
    citation: "J. Smith. Tuning small MLPs. 2023."         # optional
    dataset: fashion_mnist                                 # a registered name or {path: …} (hpo.sources)
    metric: accuracy
    tables:
      1:
        caption: two hidden layers
        rows:                                              # the space grammar's names, plus reported and note
          - {width: [60, 40], optimizer: adam, lr: 0.001, reported: 0.9707}
          - {width: [30, 10], optimizer: sgd, lr: 0.1, reported: 0.91, note: lr read from a merged cell}
    protocol:                                              # what the paper leaves out: value and reason
      epochs: {value: 10, reason: not stated}
      momentum: {value: 0.0, reason: "'ReLU alone' read as plain SGD", tables: [1]}
    references:                                            # other published numbers, re-run beside the rows
      - {paper: xiao_2017, tables: [1]}
    mix_weights:                                           # learned activation mixtures, per data set
      fashion_mnist: [[0.52, 0.15, 0.33], …]

`reported` is a fraction (0.9707) or a percent (97.07, or "97.07%"), one form per file. Protocol keys that are
training settings (epochs, batch_size, schedule, …) apply to the rows of the tables they concern (all, without
`tables`); the others (how data were normalised, what was evaluated) are recorded and printed with every
comparison. A study names a paper under `baselines: {paper: NAME or path, tables: [..]}`; the paper as read is
recorded with the study, so reports and comparisons read it from the storage, not from the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from hpo.display import describe_arch
from hpo.errors import ConfigError, check_keys
from hpo.search.files import file_label, read_yaml, resolve_file
from hpo.search.space import PARAMS, coerce
from hpo.sources import parse_source, recorded_shape
from hpo.training.spec import TrainConfig

PAPER_KEYS = {"title", "citation", "dataset", "metric", "tables", "protocol", "references", "mix_weights"}
TABLE_KEYS = {"caption", "rows", "dataset"}
ROW_KEYS = {"reported", "note", "name"}
PROTOCOL_KEYS = {"value", "reason", "tables"}
REFERENCE_KEYS = {"paper", "tables"}
METRICS = ("accuracy",)
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Row:
    """One configuration a paper reports: TrainConfig keyword arguments and the number the paper gives."""

    table: int | str
    hp: dict
    reported: float  # a fraction
    note: str = ""
    name: str = ""
    dataset: str = ""  # the data set the number is for (the table's, else the paper's)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.hp.get("widths", TrainConfig().widths))

    @property
    def optimizer(self) -> str:
        return self.hp.get("optimizer", TrainConfig().optimizer)

    @property
    def lr(self) -> float:
        return self.hp.get("lr", TrainConfig().lr)

    def plain(self) -> dict:
        hp = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hp.items()}
        return {"table": self.table, "hp": hp, "reported": self.reported, "note": self.note, "name": self.name,
                "dataset": self.dataset}


@dataclass(frozen=True)
class Assumption:
    key: str
    value: object
    reason: str
    tables: tuple = ()  # the tables it concerns; () for all (a comparison prints only what applies)


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    source: str
    dataset: object  # a registered name, or the {path: …} mapping as written
    rows: tuple[Row, ...]
    protocol: tuple[Assumption, ...]
    captions: dict = field(default_factory=dict)
    citation: str = ""
    metric: str = "accuracy"
    references: tuple[Row, ...] = ()
    mix_weights: dict = field(default_factory=dict)
    doc: dict = field(default_factory=dict)  # the file as read
    io: tuple | None = None  # (inputs, classes) in the rows' names, where the data set tells them

    def table(self, n) -> list[Row]:
        return [r for r in self.rows if r.table == n]

    @property
    def tables(self) -> list:
        return list(self.captions)

    @property
    def dataset_name(self) -> str:
        return self.dataset if isinstance(self.dataset, str) else Path(str(self.dataset.get("path", "?"))).stem

    def protocol_values(self, overrides: dict | None = None) -> dict:
        """The protocol assumptions as a dict, with a study's overrides applied."""
        values = {a.key: a.value for a in self.protocol}
        values.update(overrides or {})
        return values

    def row_config(self, row: Row, proto: dict) -> dict:
        """TrainConfig keyword arguments for one row under `proto`: the training settings among the protocol's
        assumptions that concern the row's table, then the row's own values; those that do not affect the run
        (momentum under adam) left out."""
        hp = {}
        for a in self.protocol:
            if a.key in TRAIN_FIELDS and (not a.tables or row.table in a.tables):
                hp[a.key] = proto.get(a.key, a.value)
        hp.update(row.hp)
        tc = TrainConfig(**hp)
        return {k: v for k, v in hp.items() if tc.active(k)}

    def record(self) -> dict:
        """What a study stores: enough to rebuild this paper without its file (from_record)."""
        return {"key": self.key, "source": self.source, "doc": self.doc, "io": list(self.io) if self.io else None,
                "references": [r.plain() for r in self.references]}

    @classmethod
    def from_record(cls, rec: dict) -> "Paper":
        refs = tuple(Row(r["table"], _tuples(r["hp"]), r["reported"], r.get("note", ""), r.get("name", ""),
                         r.get("dataset", "")) for r in rec.get("references", []))
        return parse_paper(rec["doc"], rec.get("source", rec["key"]), rec["key"], io=rec.get("io"), references=refs)


def _tuples(hp: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}


def load_paper(name_or_path: str, source: str = "<command line>", key: str = "", base: Path | None = None,
               io=None, _seen: tuple = ()) -> Paper:
    """papers/NAME.yaml (the working directory's, then the project's), or a path (relative to `base`, the
    folder of the file that names it). `io` (inputs, classes) goes into the rows' names where known."""
    path = resolve_file(name_or_path, "papers", "paper", source, key, base)
    if path.resolve() in _seen:
        raise ConfigError(file_label(path), "references", "the papers' references form a cycle")
    doc, _ = read_yaml(path)
    return parse_paper(doc, file_label(path), path.stem, base=path.parent, io=io, seen=(*_seen, path.resolve()))


def parse_paper(doc, src: str, stem: str, *, base: Path | None = None, io=None, seen: tuple = (),
                references: tuple[Row, ...] | None = None) -> Paper:
    if not isinstance(doc, dict):
        raise ConfigError(src, "", "a paper file is a mapping: title, dataset, tables, protocol, …")
    check_keys(doc, PAPER_KEYS, src, required=("title", "dataset"))
    title = _str(doc["title"], src, "title")
    citation = _str(doc.get("citation", ""), src, "citation")
    dataset = doc["dataset"]
    if isinstance(dataset, dict) and base is not None:
        parse_source(dataset, src, "dataset", base)  # the file must exist; the study's own dataset is what runs
    elif isinstance(dataset, str):
        parse_source(dataset, src, "dataset")
    elif not isinstance(dataset, dict):
        raise ConfigError(src, "dataset", f"expected a registered name or {{path: FILE}}, but got {dataset!r}")
    metric = doc.get("metric", "accuracy")
    if metric not in METRICS:
        raise ConfigError(src, "metric", f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    forms: dict = {}
    tables = doc.get("tables", {})  # a paper may report no configurations (only learned weights, say)
    if not isinstance(tables, dict):
        raise ConfigError(src, "tables", "expected a mapping of table names to {caption, rows}")
    captions, rows = {}, []
    default_dataset = dataset if isinstance(dataset, str) else Path(str(dataset.get("path", "?"))).stem
    for t, table in tables.items():
        t = int(t) if isinstance(t, str) and t.isdigit() else t  # a stored record's JSON made `1:` a string
        tkey = f"tables.{t}"
        if not isinstance(table, dict):
            raise ConfigError(src, tkey, "expected {caption, rows}")
        check_keys(table, TABLE_KEYS, src, tkey)
        captions[t] = _str(table.get("caption", ""), src, f"{tkey}.caption")
        t_dataset = _str(table.get("dataset", default_dataset), src, f"{tkey}.dataset")
        raw_rows = table.get("rows")
        if not isinstance(raw_rows, list) or not raw_rows:
            raise ConfigError(src, f"{tkey}.rows", "expected a non-empty list of rows")
        for i, raw in enumerate(raw_rows):
            rows.append(parse_row(raw, src, f"{tkey}.rows[{i}]", t, forms, io, t_dataset))
    protocol = _protocol(doc.get("protocol"), src, captions)
    mix = _mix_weights(doc.get("mix_weights"), src)
    if references is None:
        references = _references(doc.get("references"), src, base, io, seen, forms)
    return Paper(stem, title, src, dataset, tuple(rows), protocol, captions, citation, metric, tuple(references),
                 mix, doc, tuple(io) if io else None)


def parse_row(raw, src: str, key: str, table, forms: dict, io=None, dataset: str = "") -> Row:
    """One row: the space grammar's names (width: [60, 40] sets depth and widths) plus reported, note, name."""
    if not isinstance(raw, dict):
        raise ConfigError(src, key, f"expected a mapping of hyperparameters, reported and note, but got {raw!r}")
    for k in raw:
        if k not in PARAMS and k not in ROW_KEYS:
            raise ConfigError(src, f"{key}.{k}", f"unknown key; a row takes the search space's names "
                                                 f"({', '.join(PARAMS)}) and {', '.join(sorted(ROW_KEYS))}")
    if "reported" not in raw:
        raise ConfigError(src, f"{key}.reported", "missing: the number the paper reports for this row")
    reported = _reported(raw["reported"], src, f"{key}.reported", forms)
    hp = {}
    depth = raw.get("depth")
    for name, value in raw.items():
        if name in ROW_KEYS or name == "depth":
            continue
        param = PARAMS[name]
        if isinstance(value, list):
            if not param.per_layer:
                raise ConfigError(src, f"{key}.{name}",
                                  "a list is only allowed for per-layer names (width, activation)")
            value = tuple(coerce(v, param, src, f"{key}.{name}[{j}]") for j, v in enumerate(value))
        else:
            value = coerce(value, param, src, f"{key}.{name}")
        hp[param.field or name] = value
    if depth is not None:
        depth = coerce(depth, PARAMS["depth"], src, f"{key}.depth")
    widths = hp.get("widths")
    if isinstance(widths, int):
        hp["widths"] = (widths,) * (depth or 1)
    elif widths is not None and depth is not None and len(widths) != depth:
        raise ConfigError(src, f"{key}.depth", f"is {depth}, but width lists {len(widths)} layers")
    elif widths is None:
        raise ConfigError(src, f"{key}.width", "missing: a row names its hidden layers' widths")
    for name in ("activation", "negative_slope"):
        if isinstance(hp.get(name), tuple) and len(hp[name]) != len(hp["widths"]):
            raise ConfigError(src, f"{key}.{name}", f"has {len(hp[name])} entries but width has {len(hp['widths'])}")
    note = _str(raw.get("note", ""), src, f"{key}.note")
    name = _str(raw.get("name", ""), src, f"{key}.name") or row_name(table, hp, io)
    return Row(table, hp, reported, note, name, dataset)


def row_name(table, hp: dict, io=None) -> str:
    act = hp.get("activation", "relu")
    act = "" if act == "relu" else f" {act if isinstance(act, str) else '/'.join(act)}"
    return (f"T{table} {describe_arch(hp['widths'], io, hp.get('model', 'mlp'))}{act} "
            f"{hp.get('optimizer', TrainConfig().optimizer)} lr={hp.get('lr', TrainConfig().lr):g}")


def _reported(value, src: str, key: str, forms: dict) -> float:
    """A fraction (0.9707) or a percent (97.07, "97.07%"), one form per file."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number, form = float(value.strip()[:-1]) / 100, "a percent"
        except ValueError:
            raise ConfigError(src, key, f"expected a number or a percent, but got {value!r}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number, form = (float(value), "a fraction") if value <= 1 else (value / 100, "a percent")
    else:
        raise ConfigError(src, key, f"expected a number or a percent, but got {value!r}")
    if not 0 <= number <= 1:
        raise ConfigError(src, key, f"an accuracy lies between 0 and 100%, but got {value!r}")
    first = forms.setdefault("form", (form, key))
    if first[0] != form:
        raise ConfigError(src, key, f"is {form} ({value!r}), but {first[1]} is {first[0]}; write every `reported` "
                                    f"one way")
    return number


def _protocol(raw, src: str, captions: dict) -> tuple[Assumption, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(src, "protocol", "expected a mapping of settings to {value, reason}")
    out = []
    for k, entry in raw.items():
        key = f"protocol.{k}"
        if not isinstance(entry, dict):
            raise ConfigError(src, key, f"expected {{value: …, reason: …}}, but got {entry!r}")
        check_keys(entry, PROTOCOL_KEYS, src, key)
        for required in ("value", "reason"):
            if required not in entry:
                raise ConfigError(src, f"{key}.{required}", "missing: every assumption says why it is made")
        value = entry["value"]
        if k in TRAIN_FIELDS:
            if k in PARAMS or any(p.field == k for p in PARAMS.values()):
                param = PARAMS.get(k) or next(p for p in PARAMS.values() if p.field == k)
                value = coerce(value, param, src, f"{key}.value")
            try:
                TrainConfig(**{k: value})
            except (TypeError, ValueError) as e:
                raise ConfigError(src, f"{key}.value", str(e)) from None
        tables = entry.get("tables", [])
        if not isinstance(tables, list) or any(t not in captions for t in tables):
            raise ConfigError(src, f"{key}.tables", f"expected a list of this paper's tables "
                                                    f"({', '.join(map(str, captions))}), but got {tables!r}")
        out.append(Assumption(str(k), value, _str(entry["reason"], src, f"{key}.reason"), tuple(tables)))
    return tuple(out)


def _references(raw, src: str, base, io, seen: tuple, forms: dict) -> list[Row]:
    """Other published numbers, re-run beside the paper's rows: another paper's tables, or rows written here."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(src, "references", "expected a list of {paper: NAME, tables: [..]} or rows")
    out = []
    for i, ref in enumerate(raw):
        key = f"references[{i}]"
        if isinstance(ref, dict) and "paper" in ref:
            check_keys(ref, REFERENCE_KEYS, src, key)
            other = load_paper(_str(ref["paper"], src, f"{key}.paper"), src, f"{key}.paper", base, io,
                               _seen=seen + ((Path(src).resolve(),) if Path(src).is_file() else ()))
            tables = ref.get("tables", other.tables)
            if not isinstance(tables, list) or any(t not in other.captions for t in tables):
                raise ConfigError(src, f"{key}.tables", f"expected a list of {other.key}'s tables "
                                                        f"({', '.join(map(str, other.captions))}), but got {tables!r}")
            out += [r for t in tables for r in other.table(t)]
        else:
            out.append(parse_row(ref, src, key, "ref", forms, io))
    return out


def _mix_weights(raw, src: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(src, "mix_weights", "expected a mapping of data sets to one [P1, P2, …] list per layer")
    out = {}
    for ds, layers in raw.items():
        key = f"mix_weights.{ds}"
        if not isinstance(layers, list) or not layers or not all(isinstance(layer, list) and layer for layer in layers):
            raise ConfigError(src, key, "expected one list of weights per layer")
        for j, layer in enumerate(layers):
            if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in layer) \
                    or abs(sum(layer) - 1) > 0.01:
                raise ConfigError(src, f"{key}[{j}]", f"expected weights >= 0 that sum to 1, but got {layer}")
        out[str(ds)] = tuple(tuple(float(p) for p in layer) for layer in layers)
    return out


def _str(value, src: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(src, key, f"expected text, but got {value!r}")
    return value


def study_paper(attrs: dict) -> Paper | None:
    """The paper a study recorded (hpo.trials.study_attrs), rebuilt from the storage; a study recorded before
    papers were files names a shipped one."""
    if attrs.get("paper_record"):
        return Paper.from_record(attrs["paper_record"])
    if attrs.get("paper"):  # the inputs and classes its rows are named with: the recorded data's, not assumed
        shape, n_classes = recorded_shape(attrs.get("split") or {})
        return load_paper(attrs["paper"], "<study>", "paper", io=(math.prod(shape), n_classes))
    return None

"""The search-space grammar and how it becomes Optuna suggestions.

A space file maps hyperparameter names (a closed set, PARAMS) to one of:
  a plain value                      fixed, e.g. `optimizer: adam`; per-layer names also take a list
  {low, high, log?, step?}           an int or float range (the type comes from the hyperparameter)
  {choices: [...]}                   a categorical
and `per_layer: true` on `width` or `activation` draws one value per hidden layer, after `depth`.
A range or categorical may add `when: {PARENT: [VALUE, ...], ...}`: it is drawn only in trials whose PARENT (a
categorical of the same space) took one of those values, for every PARENT listed.
Anything else is an error naming the file and the key.

Define-by-run: a hyperparameter that only matters under another one's value (hpo.training.spec.CONDITIONS:
momentum under sgd_momentum without onecycle, negative_slope where an activation is leaky_relu, mix_lr under the
three-cycle schedule, augment_shift when augment is not none) is drawn only when it matters, whether or not
the file says `when`; otherwise the run takes its TrainConfig default and the trial records no such parameter.
With per-layer activations, negative_slope is drawn per leaky_relu layer (negative_slope_2, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import optuna

from hpo.errors import ConfigError, check_keys, check_type
from hpo.training.spec import (
    ACTIVATION_NAMES,
    AUGMENTS,
    CNN_MAX_DEPTH,
    CONDITIONS,
    INITS,
    MAX_SHIFT,
    MODELS,
    OPTIMIZER_NAMES,
    SCHEDULES,
    Condition,
    TrainConfig,
    check_builder_args,
    is_plugin,
    load_builder,
)


@dataclass(frozen=True)
class Param:
    """What a hyperparameter is: its type, whether it is per layer, which values are legal."""

    kind: type
    per_layer: bool = False
    choices: Callable[[], Iterable] | None = None  # read live: later modules may extend a registry
    check: Callable[[object], str | None] | None = None  # returns the violated condition, or None
    field: str | None = None  # TrainConfig field, when it differs from the name


def _at_least(lo):
    return lambda v: None if v >= lo else f"`>= {lo}`"


def _unit_interval(v):
    return None if 0 <= v < 1 else "`0 <= value < 1`"


PARAMS: dict[str, Param] = {
    # A built-in (mlp, cnn) or a user's builder, FILE.py:FUNCTION or package.module:FUNCTION (hpo.training.models),
    # whose own arguments the space declares under `model_args:`.
    "model": Param(str, check=lambda v: None if v in MODELS or is_plugin(v) else
                   f"`model` is {', '.join(MODELS)} or FILE.py:FUNCTION"),
    "depth": Param(int, check=lambda v: None if 1 <= v <= 16 else "`1 <= depth <= 16`"),
    "width": Param(int, per_layer=True, check=_at_least(1), field="widths"),
    "activation": Param(str, per_layer=True, choices=lambda: ACTIVATION_NAMES),
    "negative_slope": Param(float, check=_at_least(0)),
    "dropout": Param(float, check=_unit_interval),
    "init": Param(str, choices=lambda: INITS),
    "optimizer": Param(str, choices=lambda: OPTIMIZER_NAMES),
    "lr": Param(float, check=lambda v: None if v > 0 else "`lr > 0`"),
    "momentum": Param(float, check=_unit_interval),
    "weight_decay": Param(float, check=_at_least(0)),
    "batch_size": Param(int, check=_at_least(1)),
    "epochs": Param(int, check=_at_least(1)),
    "schedule": Param(str, choices=lambda: SCHEDULES),
    "label_smoothing": Param(float, check=_unit_interval),
    # Bansal 2022's three-cycle schedule (hpo/training/cycles.py): epochs per cycle (0: off) and the mixing weights' lr.
    "cycle_epochs": Param(int, check=_at_least(0)),
    "mix_lr": Param(float, check=lambda v: None if v > 0 else "`mix_lr > 0`"),
    # A replicate factor: with the grid sampler, `seed: {choices: [0, 1, 2]}` trains every configuration under
    # each seed (spread over seeds in one study). Absent, every trial uses the study's seed.
    "seed": Param(int, check=_at_least(0)),
    # Batch augmentation (hpo/training/augment.py): none | shift | shift_flip, and the largest shift in pixels.
    "augment": Param(str, choices=lambda: AUGMENTS),
    "augment_shift": Param(int, check=lambda v: (None if 0 <= v <= MAX_SHIFT
                                                 else f"`0 <= augment_shift <= {MAX_SHIFT}`")),
}

SPEC_KEYS = {"low", "high", "log", "step", "choices", "per_layer", "type", "when"}
ARG_KEYS = {"low", "high", "log", "step", "choices"}  # a model argument's range or choices

_OFF = object()  # an inactive hyperparameter's value while a configuration is walked (Space._walk)


@dataclass(frozen=True)
class Dist:
    name: str
    kind: str  # "fixed" | "int" | "float" | "categorical"
    value: object = None  # fixed: a scalar, or a tuple for a per-layer list
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    per_layer: bool = False
    when: tuple = ()  # ((parent, (value, ...)), ...): the file's conditions, all of which must hold

    def __repr__(self) -> str:  # without an empty `when`: a study's recorded space reads as before conditions
        shown = [f.name for f in fields(self) if f.name != "when" or self.when]
        return f"Dist({', '.join(f'{k}={getattr(self, k)!r}' for k in shown)})"

    def optuna(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        raise ValueError("a fixed value has no distribution")

    def contains(self, v) -> bool:
        """Whether one scalar value lies in this distribution."""
        if self.kind == "fixed":
            return v == self.value
        if self.kind == "categorical":
            return v in self.choices
        return self.low <= v <= self.high

    def suggest(self, trial: optuna.Trial, name: str):
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        return self.value


# --- parsing ------------------------------------------------------------------------------------


def coerce(value, param: Param, source: str, key: str):
    """Check a scalar's type against the hyperparameter's (ints are fine where floats are wanted)."""
    if param.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    check_type(value, param.kind, source, key)
    if param.choices is not None:
        legal = list(param.choices())
        if value not in legal:
            raise ConfigError(source, key, f"unknown value {value!r}; choose from {', '.join(map(str, legal))}")
    if param.check is not None:
        problem = param.check(value)
        if problem:
            raise ConfigError(source, key, f"{problem} must hold, but got {value!r}")
    return value


def parse_param(name: str, spec, source: str) -> Dist:
    dist = _parse_param(name, spec, source)
    if isinstance(spec, dict) and "when" in spec:
        dist = replace(dist, when=_parse_when(name, spec["when"], source))
    return dist


def _parse_when(name: str, when, source: str) -> tuple:
    """`when: {PARENT: [VALUE, ...]}`, each value checked as PARENT's; whether PARENT is a categorical of the
    space is Space.parse's to check."""
    key = f"{name}.when"
    if name == "depth":
        raise ConfigError(source, key,
                          "depth is drawn first (the per-layer names depend on it); it cannot be conditional")
    if not isinstance(when, dict) or not when:
        raise ConfigError(source, key, f"expected a mapping of hyperparameters to lists of values, e.g. "
                                       f"`when: {{optimizer: [sgd_momentum]}}`, but got {when!r}")
    out = []
    for parent, values in when.items():
        pkey = f"{key}.{parent}"
        if parent not in PARAMS:
            raise ConfigError(source, pkey, f"unknown hyperparameter; known: {', '.join(PARAMS)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(source, pkey, f"expected a non-empty list of {parent}'s values, but got {values!r}")
        out.append((parent, tuple(coerce(v, PARAMS[parent], source, f"{pkey}[{i}]") for i, v in enumerate(values))))
    return tuple(out)


def _parse_param(name: str, spec, source: str, param: Param | None = None) -> Dist:
    """One entry of the grammar; `param` (a model argument's type) where the name is not a hyperparameter."""
    if param is None and name not in PARAMS:
        raise ConfigError(source, name, f"unknown hyperparameter; known: {', '.join(PARAMS)}")
    param = param or PARAMS[name]
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            if not param.per_layer:
                raise ConfigError(source, name,
                                  "a list is only allowed for per-layer hyperparameters (width, activation)")
            if not spec:
                raise ConfigError(source, name, "a per-layer list must not be empty")
            values = tuple(coerce(v, param, source, f"{name}[{i}]") for i, v in enumerate(spec))
            return Dist(name, "fixed", value=values, per_layer=True)
        return Dist(name, "fixed", value=coerce(spec, param, source, name))
    check_keys(spec, SPEC_KEYS, source, name)
    per_layer = spec.get("per_layer", False)
    if not isinstance(per_layer, bool):
        raise ConfigError(source, f"{name}.per_layer", f"expected true or false, but got {per_layer!r}")
    if per_layer and not param.per_layer:
        raise ConfigError(source, f"{name}.per_layer", "only width and activation can be drawn per layer")
    if "type" in spec and spec["type"] not in ("int", "float", "categorical"):
        raise ConfigError(source, f"{name}.type", f"expected int, float or categorical, but got {spec['type']!r}")
    if "choices" in spec:
        extra = {"low", "high", "log", "step"} & set(spec)
        if extra:
            raise ConfigError(source, f"{name}.{sorted(extra)[0]}", "a categorical takes `choices` only, not a range")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(source, f"{name}.choices", f"expected a non-empty list, but got {choices!r}")
        values = tuple(coerce(v, param, source, f"{name}.choices[{i}]") for i, v in enumerate(choices))
        if len(set(values)) != len(values):
            raise ConfigError(source, f"{name}.choices", f"duplicate choices in {list(values)}")
        return Dist(name, "categorical", choices=values, per_layer=per_layer)
    if param.kind is str:
        raise ConfigError(source, name,
                          "a categorical hyperparameter takes `choices: [...]` or a fixed value, not a range")
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(source, f"{name}.{bound}", "missing: a range needs both `low` and `high`")
    low = coerce(spec["low"], param, source, f"{name}.low")
    high = coerce(spec["high"], param, source, f"{name}.high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(source, f"{name}.log", f"expected true or false, but got {log!r}")
    if low > high:
        raise ConfigError(source, f"{name}.low", f"`low <= high` must hold, but got low={low}, high={high}")
    if log and low <= 0:
        raise ConfigError(source, f"{name}.low", f"`low > 0` must hold for a log range, but got low={low}")
    step = spec.get("step")
    if step is not None:
        step = coerce(step, Param(param.kind), source, f"{name}.step")
        if step <= 0:
            raise ConfigError(source, f"{name}.step", f"`step > 0` must hold, but got step={step}")
        if log:
            raise ConfigError(source, f"{name}.step", "a log range cannot have a step (Optuna does not support both)")
    kind = "int" if param.kind is int else "float"
    return Dist(name, kind, low=low, high=high, log=log, step=step, per_layer=per_layer)


def _plugin(params: dict[str, Dist], raw_args, source: str, base) -> tuple[dict[str, Dist], dict[str, Dist]]:
    """A user's model: its FILE.py resolved against the space file's folder, the builder imported and its
    signature checked against `model_args`; the built-ins' own hyperparameters refused beside it."""
    model = params.get("model")
    plugin = model is not None and (model.kind == "fixed" and is_plugin(model.value)
                                    or model.kind == "categorical" and any(map(is_plugin, model.choices)))
    if not plugin:
        if raw_args is not None:
            raise ConfigError(source, "model_args", "only for a user's model (`model: FILE.py:FUNCTION`)")
        return params, {}
    if model.kind != "fixed":
        raise ConfigError(source, "model", "a user's model is fixed (`model: FILE.py:FUNCTION`), not one of choices")
    module, _, fn = model.value.rpartition(":")
    folder = Path(base) if base is not None else Path.cwd()
    if module.isidentifier() and (folder / f"{module}.py").is_file():  # nets:build is nets.py beside the space
        module += ".py"
    if module.endswith(".py") and not Path(module).is_absolute():
        module = str((folder / module).resolve()) if (folder / module).is_file() else str(Path(module).resolve())
    spec = f"{module}:{fn}"
    builder = load_builder(spec, source, "model")
    if raw_args is not None and not isinstance(raw_args, dict):
        raise ConfigError(source, "model_args", f"expected a mapping of argument names to values or ranges, but got "
                                                f"{raw_args!r}")
    args = {str(k): _parse_arg(str(k), v, source) for k, v in (raw_args or {}).items()}
    check_builder_args(builder, list(args), source)
    for name in BUILT_IN_ONLY:
        if name in params:
            raise ConfigError(source, name, f"{fn} builds its own network: its settings go under model_args; "
                                            f"leave {name} out")
    return {**params, "model": Dist("model", "fixed", value=spec)}, args


# --- the space ----------------------------------------------------------------------------------


# Hyperparameters a user's model does not read: its own arguments (model_args) take their place.
BUILT_IN_ONLY = ("depth", "width", "activation", "negative_slope", "dropout", "init", "cycle_epochs", "mix_lr")


def _parse_arg(name: str, spec, source: str) -> Dist:
    """One of a user's model's arguments, in the grammar's forms; its type is what the file writes."""
    key = f"model_args.{name}"
    if name in PARAMS:
        raise ConfigError(source, key, f"{name!r} is a hyperparameter of the space itself; give the argument "
                                       f"another name")
    if isinstance(spec, dict):
        check_keys(spec, ARG_KEYS, source, key)
        if "choices" in spec:
            values = spec["choices"]
            if not isinstance(values, list) or not values:
                raise ConfigError(source, f"{key}.choices", f"expected a non-empty list, but got {values!r}")
            return Dist(key, "categorical", choices=tuple(values))
        for bound in ("low", "high"):
            if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
                raise ConfigError(source, f"{key}.{bound}", f"expected a number, but got {spec.get(bound)!r}")
        kind = int if all(isinstance(spec[b], int) for b in ("low", "high")) else float
        return replace(_parse_param(key, spec, source, Param(kind)), name=key)
    if isinstance(spec, list):
        return Dist(key, "fixed", value=tuple(spec))
    return Dist(key, "fixed", value=spec)


@dataclass(frozen=True)
class Space:
    params: dict[str, Dist]
    source: str = "<space>"
    description: str = ""
    model_args: dict = field(default_factory=dict)  # a user's model's arguments: name -> Dist

    @classmethod
    def parse(cls, raw, source: str, description: str = "", base=None) -> "Space":
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(source, "", "a search space is a mapping of hyperparameter names to values or ranges")
        raw = dict(raw)
        raw_args = raw.pop("model_args", None)
        params = {name: parse_param(str(name), spec, source) for name, spec in raw.items()}
        params, model_args = _plugin(params, raw_args, source, base)
        activation = params.get("activation")
        slope = params.get("negative_slope")
        if slope is not None and slope.kind != "fixed" and activation is not None and (
                activation.per_layer or isinstance(activation.value, tuple)):
            params["negative_slope"] = replace(slope, per_layer=True)  # one per leaky_relu layer
        space = cls(params, source, description, model_args)
        space._check_depth_consistency()
        space._check_model_and_cycles()
        space._check_conditions()
        return space

    def _check_conditions(self) -> None:
        """A file's `when` names a categorical of this space and values among its choices; conditions form no
        cycle; and a hyperparameter that only matters under another's value (CONDITIONS) can matter here."""
        for name, dist in self.params.items():
            for parent, values in dist.when:
                key, p = f"{name}.when.{parent}", self.params.get(parent)
                if p is None:
                    raise ConfigError(self.source, key, f"{parent} is not in this space; a condition needs a "
                                                        f"hyperparameter drawn from `choices` here")
                if p.kind != "categorical":
                    what = f"fixed to {p.value!r}" if p.kind == "fixed" else "a range"
                    raise ConfigError(self.source, key, f"{parent} is {what} in this space; a condition needs a "
                                                        f"hyperparameter drawn from `choices`")
                if p.per_layer:
                    raise ConfigError(self.source, key, f"{parent} is drawn per layer; a condition needs one value "
                                                        f"per trial")
                for j, v in enumerate(values):
                    if v not in p.choices:
                        raise ConfigError(self.source, f"{key}[{j}]", f"{v!r} is not among {parent}'s choices "
                                                                      f"({', '.join(map(str, p.choices))})")
        for name in self.params:
            self._check_cycle(name, [name])
        for name, dist in self.params.items():
            for cond in CONDITIONS.get(PARAMS[name].field or name, ()):
                allowed = self._possible_flat(cond.parent)
                for parent, values in dist.when:
                    if parent == cond.parent:
                        allowed = [v for v in allowed if v in values]
                if not any(cond.holds(v) for v in allowed):
                    raise ConfigError(self.source, name, f"only matters when {cond.text}, which no trial of this "
                                                         f"space has; leave {name} out")

    def conditional(self) -> list[str]:
        """The hyperparameters that some trials of this space may not draw (a `when`, or a CONDITION that can
        fail here), in file order."""
        out = []
        for name, dist in self.params.items():
            conds = CONDITIONS.get(PARAMS[name].field or name, ())
            if dist.kind != "fixed" and (dist.when or any(not all(c.holds(v) for v in self._possible_flat(c.parent))
                                                           for c in conds)):
                out.append(name)
        return out

    def _parents(self, name: str) -> list[str]:
        """What decides whether `name` is drawn: its `when` and, when this space sets them, its CONDITIONS."""
        own = [parent for parent, _ in self.params[name].when]
        return own + [c.parent for c in CONDITIONS.get(PARAMS[name].field or name, ()) if c.parent in self.params]

    def _check_cycle(self, name: str, path: list[str]) -> None:
        for parent in self._parents(name):
            if parent in path:
                cycle = [*path[path.index(parent):], parent]
                key = next(n for n in cycle if self.params[n].when)  # CONDITIONS alone form no cycle
                raise ConfigError(self.source, f"{key}.when", f"conditions form a cycle: {' -> '.join(cycle)}")
            self._check_cycle(parent, [*path, parent])

    def _possible_flat(self, name: str) -> list:
        default = getattr(TrainConfig(), PARAMS[name].field or name)
        out = []
        for v in self.possible(name, default):
            out += list(v) if isinstance(v, tuple) else [v]
        return out

    def possible(self, name: str, default) -> tuple:
        """The values a hyperparameter can take here: a fixed value, the choices, or a range's two ends."""
        d = self.params.get(name)
        if d is None:
            return (default,)
        if d.kind == "fixed":
            return (d.value,)
        return d.choices if d.kind == "categorical" else (d.low, d.high)

    def _check_model_and_cycles(self) -> None:
        if "cnn" in self.possible("model", "mlp"):
            depths = self.possible("depth", len(TrainConfig().widths))
            if min(depths) < 2 or max(depths) > CNN_MAX_DEPTH:
                raise ConfigError(self.source, "depth" if "depth" in self.params else "model",
                                  f"model cnn needs depth 2-{CNN_MAX_DEPTH} (conv layers, then one hidden fully "
                                  f"connected layer; the paper's network is depth 3), but depth can be {min(depths)}"
                                  + (f"-{max(depths)}" if max(depths) != min(depths) else ""))
        if any(v != 0 for v in self.possible("cycle_epochs", 0)):
            act = self.params.get("activation")
            ok = act is not None and (
                (act.kind == "fixed" and "mix" in (act.value if isinstance(act.value, tuple) else (act.value,)))
                or (act.kind == "categorical" and set(act.choices) == {"mix"}))
            if not ok:
                raise ConfigError(self.source, "cycle_epochs", "the three-cycle schedule trains only the mixing "
                                  "weights in cycle 2, so every trial needs a `mix` activation layer; fix "
                                  "`activation: mix` (or a per-layer list that contains mix)")
            if "epochs" in self.params and 0 not in self.possible("cycle_epochs", 0):
                raise ConfigError(self.source, "epochs", "under the three-cycle schedule a run is 3 x cycle_epochs "
                                  "epochs; leave `epochs` out")

    def _check_depth_consistency(self) -> None:
        depth = self.params.get("depth")
        for name in ("width", "activation"):
            d = self.params.get(name)
            if d is None or d.kind != "fixed" or not isinstance(d.value, tuple):
                continue
            if depth is None or depth.kind != "fixed":
                raise ConfigError(self.source, name,
                                  "a fixed per-layer list needs a fixed `depth`; use per_layer: true to search")
            if len(d.value) != depth.value:
                raise ConfigError(self.source, name, f"has {len(d.value)} entries but depth is {depth.value}")

    # The names Optuna sees: per-layer values become width_1, width_2, …
    def _layer_names(self, name: str, depth: int) -> list[str]:
        return [f"{name}_{i}" for i in range(1, depth + 1)]

    def _walk(self, depth: int, pick: Callable[[str, Dist, int | None], object]) -> dict[str, object]:
        """name -> value (a per-layer one as a tuple) of every hyperparameter active in one configuration, in
        file order, a condition's parent before its child. `pick(optuna_name, dist, layer)` gives one value:
        drawn from a trial, or read from a configuration (_OFF where it has none)."""
        values: dict[str, object] = {}

        def get(name: str):  # what a condition reads: this space's value, else the TrainConfig default
            if name == "depth":
                return depth
            if name not in self.params:
                return _default(name)
            if name not in values:
                values[name] = _OFF  # conditions form no cycle (Space.parse), so nothing reads this
                values[name] = self._value(name, depth, pick, get)
            return values[name]

        for name in self.params:
            if name != "depth":
                get(name)
        return {k: v for k, v in values.items() if v is not _OFF}

    def _value(self, name: str, depth: int, pick, get):
        dist = self.params[name]
        for parent, allowed in dist.when:  # the file's: drawn only where its parent was drawn to one of these
            if get(parent) not in allowed:
                return _OFF
        for cond in CONDITIONS.get(PARAMS[name].field or name, ()):  # what training reads
            if name == "negative_slope":
                continue  # per layer, below
            v = get(cond.parent)
            if not _holds(cond, _default(cond.parent) if v is _OFF else v):
                return _OFF
        if name == "negative_slope":
            return self._slopes(dist, depth, pick, get)
        if dist.per_layer and dist.kind != "fixed":
            layers = tuple(pick(n, dist, i) for i, n in enumerate(self._layer_names(name, depth)))
            return _OFF if _OFF in layers else layers
        v = pick(name, dist, None)
        return (v,) * depth if name == "width" and v is not _OFF and not isinstance(v, tuple) else v

    def _slopes(self, dist: Dist, depth: int, pick, get):
        """leaky_relu's slope: one for a shared activation, one per leaky_relu layer for per-layer ones."""
        acts = get("activation")
        acts = _default("activation") if acts is _OFF else acts
        if not isinstance(acts, tuple) and not dist.per_layer:
            return pick("negative_slope", dist, None) if acts == "leaky_relu" else _OFF
        layers = acts if isinstance(acts, tuple) else (acts,) * depth
        leaky = [i for i, a in enumerate(layers) if a == "leaky_relu"]
        if not leaky:
            return _OFF
        if dist.kind == "fixed":
            return dist.value
        drawn = {i: pick(f"negative_slope_{i + 1}", dist, i) for i in leaky}
        if _OFF in drawn.values():
            return _OFF
        return tuple(drawn.get(i, _default("negative_slope")) for i in range(depth))

    def _depth(self, trial: optuna.Trial | None = None, hp: dict | None = None) -> int:
        if hp is not None:
            return len(hp.get("widths", TrainConfig().widths))
        depth_dist = self.params.get("depth")
        return depth_dist.suggest(trial, "depth") if depth_dist else len(TrainConfig().widths)

    def suggest(self, trial: optuna.Trial) -> dict:
        """Draw one configuration; returns TrainConfig keyword arguments (inactive hyperparameters left out)."""
        depth = self._depth(trial)
        values = self._walk(depth, lambda n, dist, layer: dist.suggest(trial, n))
        hp = {PARAMS[name].field or name: v for name, v in values.items()}
        if "widths" not in hp:
            hp["widths"] = (TrainConfig().widths[0],) * depth
        if self.model_args:
            hp["model_args"] = {d.name.split(".", 1)[1]: d.suggest(trial, d.name) for d in self.model_args.values()}
        return hp

    def _read(self, hp: dict, record: dict | None = None):
        """A `pick` that reads a configuration's values (a fixed one is the space's), recording the Optuna
        parameters it reads in `record`."""
        def pick(optuna_name: str, dist: Dist, layer: int | None):
            if dist.kind == "fixed":
                return dist.value
            value = hp.get(PARAMS[dist.name].field or dist.name, _OFF)
            if isinstance(value, (tuple, list)):
                value = value[layer if layer is not None else 0]
            if record is not None and value is not _OFF:
                record[optuna_name] = value
            return value
        return pick

    def trial_params(self, hp: dict) -> dict:
        """The Optuna parameters that make `suggest` return `hp` (for enqueuing baselines): the active ones only.
        One that `hp` leaves out (e.g. a seed replicate) is left to the sampler."""
        depth = self._depth(hp=hp)
        out = {"depth": depth} if "depth" in self.params and self.params["depth"].kind != "fixed" else {}
        self._walk(depth, self._read(hp, out))
        given = dict(hp.get("model_args") or {})
        for name, d in self.model_args.items():
            if d.kind != "fixed" and name in given:
                out[d.name] = given[name]
        return out

    def problems(self, hp: dict) -> list[str]:
        """Where a configuration lies outside this space (empty when it is inside); inactive values are not
        checked (momentum under adam may be anything)."""
        probs = []
        depth = self._depth(hp=hp)
        active = self._walk(depth, self._read(hp))
        for name, dist in self.params.items():
            field_name = PARAMS[name].field or name
            value = depth if name == "depth" else hp.get(field_name)
            if value is None or (name != "depth" and name not in active):
                continue
            if PARAMS[name].per_layer:
                layers = tuple(value) if isinstance(value, (tuple, list)) else (value,) * depth
                if dist.kind == "fixed" and isinstance(dist.value, tuple):
                    ok = layers == dist.value
                elif not dist.per_layer and len(set(layers)) > 1:
                    ok = False
                else:
                    ok = all(dist.contains(v) for v in layers)
                shown = list(layers)
            elif isinstance(value, (tuple, list)):  # per-layer slopes: those of leaky_relu layers
                acts = active.get("activation", _default("activation"))
                acts = acts if isinstance(acts, tuple) else (acts,) * len(value)
                shown = [v for v, a in zip(value, acts) if a == "leaky_relu"]
                ok = all(dist.contains(v) for v in shown)
            else:
                ok, shown = dist.contains(value), value
            if not ok:
                probs.append(f"{name}={shown!r} is outside {describe_dist(dist)}")
        given = dict(hp.get("model_args") or {})
        for name, d in self.model_args.items():
            if name in given and not d.contains(tuple(given[name]) if isinstance(given[name], list) else given[name]):
                probs.append(f"{d.name}={given[name]!r} is outside {describe_dist(d)}")
        return probs

    def with_fixed(self, **values) -> "Space":
        params = dict(self.params)
        for name, value in values.items():
            params[name] = Dist(name, "fixed", value=value)
        return replace(self, params=params)

    def distributions(self, max_depth: int | None = None) -> dict[str, optuna.distributions.BaseDistribution]:
        """Every Optuna parameter this space can produce (per-layer ones up to the largest depth)."""
        depth_dist = self.params.get("depth")
        if max_depth is None:
            max_depth = int(depth_dist.high if depth_dist and depth_dist.kind == "int" else
                            max(depth_dist.choices) if depth_dist and depth_dist.kind == "categorical" else
                            depth_dist.value if depth_dist else 1)
        out = {}
        for name, dist in self.params.items():
            if dist.kind == "fixed":
                continue
            if dist.per_layer:
                for n in self._layer_names(name, max_depth):
                    out[n] = dist.optuna()
            else:
                out[name] = dist.optuna()
        out.update({d.name: d.optuna() for d in self.model_args.values() if d.kind != "fixed"})
        return out

    def dist_for(self, optuna_name: str) -> Dist | None:
        if optuna_name.startswith("model_args."):
            return self.model_args.get(optuna_name.split(".", 1)[1])
        base = optuna_name.rsplit("_", 1)[0] if optuna_name.rsplit("_", 1)[-1].isdigit() else optuna_name
        d = self.params.get(base) or self.params.get(optuna_name)
        return d


def _default(name: str):
    """The TrainConfig default of a hyperparameter the space leaves out (or leaves inactive)."""
    return getattr(TrainConfig(), PARAMS[name].field or name)


def _holds(cond: Condition, value) -> bool:
    return any(map(cond.holds, value)) if isinstance(value, tuple) else cond.holds(value)


def describe_dist(d: Dist) -> str:
    if d.kind == "fixed":
        return f"the fixed value {d.value!r}"
    if d.kind == "categorical":
        return f"choices {list(d.choices)}"
    return f"[{d.low}, {d.high}]" + (" (log)" if d.log else "")


def on_boundary(d: Dist, value, rel: float = 0.02) -> str | None:
    """'low'/'high' when a numeric value sits at (within 2% of, on the sampling scale) an edge of its range.
    An int one step inside a short range (depth 2 of 1..3) is not at its edge."""
    if d.kind not in ("int", "float"):
        return None
    lo, hi, v = d.low, d.high, value
    if d.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    span = hi - lo
    if span <= 0:
        return None
    tol = rel * span
    if v - lo <= tol:
        return "low"
    if hi - v <= tol:
        return "high"
    return None

"""What defines one training run, as plain values (TrainConfig), and the names a config may use: optimizers,
schedules, activations, augmentations, initialisations and built-in models. Nothing here imports torch, so that
`hpo check` validates study, space and paper files without loading it; the training modules that build those
names (hpo.training.runtime, activations, augment, models) check at import that their registries match.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hpo.errors import ConfigError, HpoError

DEVICES = ("cpu", "cuda")
# The keys of hpo.training.runtime.OPTIMIZERS and hpo.training.activations.ACTIVATIONS.
OPTIMIZER_NAMES = ("sgd", "sgd_momentum", "adam", "adamw")
ACTIVATION_NAMES = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "tanh", "sigmoid", "sin", "mix")
AUGMENTS = ("none", "shift", "shift_flip")
MAX_SHIFT = 8  # pixels each way; the index table holds (2 * shift + 1)^2 * 2 rows of side*side entries
INITS = ("default", "kaiming", "xavier")
MODELS = ("mlp", "cnn")  # hpo.training.models.BUILDERS
CNN_MAX_DEPTH = 5  # cnn: conv layers + 1 fc; four 2x2 poolings take 28x28 down to 1x1
_LOADED: dict[str, Callable] = {}


MAX_THREADS_ENV = "HPO_MAX_THREADS"


def thread_cap() -> int | None:
    """$HPO_MAX_THREADS as a number (None when unset): a cap on torch's threads in every hpo process, for a
    machine shared with other processes. HpoError (one line) when it is not a positive whole number; `hpo` checks
    it before any command runs."""
    cap = os.environ.get(MAX_THREADS_ENV)
    if not cap:
        return None
    if not cap.isdigit() or int(cap) < 1:
        raise HpoError(f"{MAX_THREADS_ENV}: expected a positive whole number of threads, but got {cap!r}")
    return int(cap)


def check_device(device, source, key: str = "") -> str:
    """`device` when it is one of DEVICES; ConfigError naming where it was written (a file and key, or a flag)
    otherwise. Whether torch can use it here is hpo.training.runtime.resolve_device's to say."""
    if device not in DEVICES:
        raise ConfigError(source, key, f"expected {' or '.join(DEVICES)}, but got {device!r}")
    return device


def is_plugin(model: str) -> bool:
    """A user's builder (FILE.py:FUNCTION or package.module:FUNCTION), not a built-in name."""
    return ":" in model


def load_builder(spec: str, source: str = "<model>", key: str = "model") -> Callable:
    """The user's builder `spec` names: FILE.py:FUNCTION (an absolute path) or package.module:FUNCTION (the
    built-ins are hpo.training.models.BUILDERS). ConfigError naming `source` and `key` when it cannot be found or
    imported. Importing it imports what the user's file imports (torch, for a model)."""
    if spec in _LOADED:
        return _LOADED[spec]
    module_name, _, fn_name = spec.rpartition(":")
    if not module_name or not fn_name.isidentifier():
        raise ConfigError(source, key,
                          f"expected mlp, cnn, FILE.py:FUNCTION or package.module:FUNCTION, but got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(source, key, f"no such file: {path}")
            name = f"hpo_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # pickling and dataclasses look a module up by name
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as e:  # the user's module failed to import: say so in one line
        raise ConfigError(source, key, f"cannot import {module_name}: {type(e).__name__}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(source, key, f"{module_name} has no function {fn_name!r}")
    _LOADED[spec] = fn
    return fn


def check_builder_args(fn: Callable, args: Sequence[str], source: str, key: str = "model_args") -> None:
    """`args` must be keyword arguments `fn(input_shape, n_classes, **args)` takes, and cover its required ones."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2 or any(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params[:2]):
        raise ConfigError(source, "model", f"{fn.__name__} must take (input_shape, n_classes, **args)")
    rest = params[2:]
    if any(p.kind is p.VAR_KEYWORD for p in rest):
        return
    named = {p.name for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for a in args:
        if a not in named:
            raise ConfigError(source, f"{key}.{a}", f"{fn.__name__} takes no argument {a!r}; it takes "
                                                   f"{', '.join(sorted(named)) or 'none'}")
    for p in rest:
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in args:
            raise ConfigError(source, key, f"missing {p.name!r}, which {fn.__name__} requires")


SCHEDULES = ("constant", "cosine", "onecycle")


def cycles_momentum(cfg) -> bool:
    """Whether one-cycle cycles this run's momentum (beta1 for Adam/AdamW): plain SGD has none to cycle, and
    cycling it would make it sgd_momentum (torch's OneCycleLR would set 0.85-0.95)."""
    return cfg.optimizer != "sgd"


@dataclass(frozen=True)
class Condition:
    """A field matters only when `parent`'s value passes `holds` (for a per-layer value: any layer's)."""

    parent: str
    holds: Callable[[object], bool]
    text: str  # for messages: "optimizer is sgd_momentum"


# Fields that matter only under other fields' values (all of a field's conditions must hold): what the training
# code reads, so the search space draws such a hyperparameter only then, and records show it only then.
CONDITIONS: dict[str, tuple[Condition, ...]] = {
    # torch's OneCycleLR replaces the optimizer's momentum with its own cycle (0.95 -> 0.85 -> 0.95).
    "momentum": (Condition("optimizer", lambda v: v == "sgd_momentum", "optimizer is sgd_momentum"),
                 Condition("schedule", lambda v: v != "onecycle", "schedule is not onecycle")),
    # Per layer: one slope per leaky_relu layer (hpo.search.space draws negative_slope_i for those only).
    "negative_slope": (Condition("activation", lambda v: v == "leaky_relu", "activation is leaky_relu"),),
    "mix_lr": (Condition("cycle_epochs", lambda v: v > 0, "cycle_epochs > 0"),),  # cycle 2 only
    "augment_shift": (Condition("augment", lambda v: v != "none", "augment is not none"),),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run, as plain values."""

    model: str = "mlp"
    widths: tuple[int, ...] = (64,)
    activation: str | tuple[str, ...] = "relu"
    negative_slope: float | tuple[float, ...] = 0.01  # leaky_relu's; a tuple: one per hidden layer
    dropout: float = 0.0
    init: str = "default"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # used by sgd_momentum only
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    schedule: str = "constant"
    label_smoothing: float = 0.0
    seed: int = 0
    # Bansal 2022's three-cycle schedule (hpo/training/cycles.py): when > 0, training is three cycles of this many
    # epochs each (network only at `lr`, then mixing weights only at `mix_lr`, then network only); `epochs` is then
    # set to the total, 3 x cycle_epochs, so that records show what was trained.
    cycle_epochs: int = 0
    mix_lr: float = 1e-2
    # Augmentation of each training batch (hpo/training/augment.py): none | shift (a random translation by up to
    # augment_shift pixels each way) | shift_flip (and a horizontal flip, half the time). Never on eval data.
    augment: str = "none"
    augment_shift: int = 2
    # A user's model (`model: FILE.py:FUNCTION`, hpo.training.models): its own arguments, as sorted (name, value)
    # pairs so that a config stays hashable; `to_dict` shows them as a mapping.
    model_args: tuple = ()

    def __post_init__(self):
        if isinstance(self.model_args, dict):
            object.__setattr__(self, "model_args", tuple(sorted(self.model_args.items())))
        if self.cycle_epochs > 0:
            object.__setattr__(self, "epochs", 3 * self.cycle_epochs)

    def active(self, name: str) -> bool:
        """Whether field `name` affects this run (CONDITIONS); momentum under adam, for one, does not."""
        for c in CONDITIONS.get(name, ()):
            value = getattr(self, c.parent)
            if not (any(map(c.holds, value)) if isinstance(value, tuple) else c.holds(value)):
                return False
        return True

    def to_dict(self, active_only: bool = False) -> dict:
        """Every field, or with active_only=True only those that affect this run (the rest take their defaults
        when the dict is read back): what trial records and exported configs show."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["model_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_args}
        if active_only:
            d = {k: v for k, v in d.items() if self.active(k) and (k != "model_args" or v)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        for k in ("activation", "negative_slope"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if isinstance(d.get("model_args"), dict):
            d["model_args"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["model_args"].items()}
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

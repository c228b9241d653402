"""What defines one training run, as plain values (TrainConfig), and what a run returns (TrainResult);
the optimizers and schedules a config can name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from hpo.errors import HpoError

DEVICES = ("cpu", "cuda")

def _kernel(params: list) -> dict:
    """Fused optimizer kernels where torch has them (CPU and CUDA): one kernel per parameter for the whole
    update instead of a dozen small ops. Measured for 784-60-40-10 on one CPU thread: an Adam step takes
    120 us fused, 330 us foreach, 420 us for-loop; SGD with momentum 60, 125, 110 us. Elsewhere: foreach.
    `params` must be a list (a generator would be used up here)."""
    return {"fused": True} if all(p.device.type in ("cpu", "cuda") for p in params) else {"foreach": True}


OPTIMIZERS: dict[str, Callable[[list, "TrainConfig"], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=0.0, weight_decay=c.weight_decay, **_kernel(p)),
    "sgd_momentum": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=False,
                                                 weight_decay=c.weight_decay, **_kernel(p)),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay, **_kernel(p)),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay, **_kernel(p)),
}

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
    # Bansal 2022's three-cycle schedule (hpo/training/cycles.py): when > 0, training is three cycles of this many epochs
    # each (network only at `lr`, then mixing weights only at `mix_lr`, then network only); `epochs` is then
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


@dataclass
class TrainResult:
    model: nn.Module
    status: str  # "complete" | "diverged" | "time_cap"
    reason: str
    n_params: int
    epochs: int  # epochs fully trained
    eval_curve: list[float] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    samples: int = 0
    stopped_by: Exception | None = None  # a pack member stopped by its on_epoch callback (hpo.training.pack)

    @property
    def eval_acc(self) -> float:
        return self.eval_curve[-1] if self.eval_curve else float("nan")

    @property
    def samples_per_sec(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0




def resolve_device(asked: str | None, default: str = "cpu", flag: str = "--device") -> str:
    """The device a command trains on: the one asked for, else `default` (a study's budget.device, or cpu);
    HpoError when it is not one of DEVICES or torch cannot use it here."""
    device = asked or default
    if device not in DEVICES:
        raise HpoError(f"{flag}: expected {' or '.join(DEVICES)}, but got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise HpoError(f"{flag}: cuda was asked for{'' if asked else ' (the study trained there)'}, "
                       f"but torch sees no CUDA device")
    return device

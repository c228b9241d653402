"""The torch side of a run whose plain values (TrainConfig) live in the torch-free hpo.training.spec: the
optimizer its config names, the device it trains on, and what it returns (TrainResult)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hpo.errors import HpoError
from hpo.training.spec import OPTIMIZER_NAMES, TrainConfig, check_device, thread_cap


def _kernel(params: list) -> dict:
    """Fused optimizer kernels where torch has them (CPU and CUDA): one kernel per parameter for the whole
    update instead of a dozen small ops; for the small MLPs searched here the fused step is the fastest of the
    three on CPU, for Adam and SGD alike. Elsewhere: foreach. `params` must be a list (a generator would be used
    up here)."""
    return {"fused": True} if all(p.device.type in ("cpu", "cuda") for p in params) else {"foreach": True}


OPTIMIZERS: dict[str, Callable[[list, "TrainConfig"], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=0.0, weight_decay=c.weight_decay, **_kernel(p)),
    "sgd_momentum": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=False,
                                                 weight_decay=c.weight_decay, **_kernel(p)),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay, **_kernel(p)),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay, **_kernel(p)),
}
assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES, "hpo.training.spec.OPTIMIZER_NAMES must name OPTIMIZERS' keys"

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




def set_threads(threads: int | None) -> None:
    """torch's threads for this process: `threads` (a study's budget.threads, --threads; None: torch's own), at most
    $HPO_MAX_THREADS when that is set (`thread_cap`): a cap for a machine shared with other processes, where OpenMP
    threads that spin while they wait would slow every process (the test suite sets 1: it runs on 2 processes)."""
    cap = thread_cap()
    if not threads and not cap:
        return  # torch's own default
    torch.set_num_threads(min(threads or torch.get_num_threads(), cap) if cap else threads)


def resolve_device(asked: str | None, default: str = "cpu", where: str = "--device") -> str:
    """The device a run trains on: the one asked for, else `default` (a study's budget.device, or cpu);
    HpoError naming `where` it was asked for (a flag, or a study file's budget.device) when it is not one of
    DEVICES or torch cannot use it here. Every command and the study runner ask here."""
    device = check_device(asked or default, where)
    if device == "cuda" and not torch.cuda.is_available():
        raise HpoError(f"{where}: cuda was asked for{'' if asked else ' (the study trained there)'}, "
                       f"but torch sees no CUDA device")
    return device

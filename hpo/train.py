"""The training loop. It knows nothing of Optuna: plain values in, a TrainResult out.

Data is held as tensors; a batch is a slice of a permutation (no Dataset, no DataLoader).
An optional `on_epoch(epoch, eval_acc)` callback may raise to stop training (the objective
uses it for pruning); a wall-time cap and a divergence check end training with a status.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from hpo.data import Splits
from hpo.fastmlp import fast_step
from hpo.models import accuracy, cnn, count_params, mlp


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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run, as plain values."""

    model: str = "mlp"
    widths: tuple[int, ...] = (64,)
    activation: str | tuple[str, ...] = "relu"
    negative_slope: float = 0.01
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
    # Bansal 2022's three-cycle schedule (hpo/cycles.py): when > 0, training is three cycles of this many epochs
    # each (network only at `lr`, then mixing weights only at `mix_lr`, then network only); `epochs` is then
    # set to the total, 3 x cycle_epochs, so that records show what was trained.
    cycle_epochs: int = 0
    mix_lr: float = 1e-2

    def __post_init__(self):
        if self.cycle_epochs > 0:
            object.__setattr__(self, "epochs", 3 * self.cycle_epochs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        if not isinstance(self.activation, str):
            d["activation"] = list(self.activation)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        if isinstance(d.get("activation"), list):
            d["activation"] = tuple(d["activation"])
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

    @property
    def eval_acc(self) -> float:
        return self.eval_curve[-1] if self.eval_curve else float("nan")

    @property
    def samples_per_sec(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


def build_model(cfg: TrainConfig, in_features: int = 784, n_classes: int = 10) -> nn.Module:
    torch.manual_seed(cfg.seed)
    if cfg.model == "mlp":
        return mlp(in_features, cfg.widths, n_classes, cfg.activation, cfg.dropout, cfg.init, cfg.negative_slope)
    if cfg.model == "cnn":
        return cnn(in_features, cfg.widths, n_classes, cfg.activation, cfg.dropout, cfg.init, cfg.negative_slope)
    raise ValueError(f"unknown model {cfg.model!r}")


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def train(cfg: TrainConfig, data: Splits, *, threads: int | None = None, max_seconds: float | None = None,
          on_epoch: Callable[[int, float], None] | None = None, check_every: int = 50,
          model: nn.Module | None = None) -> TrainResult:
    """Train `cfg` on data.train_*, evaluating on data.eval_* after every epoch."""
    if cfg.cycle_epochs:  # three calls back into train() with the right parameters frozen
        from hpo.cycles import train_cycles  # imported here: cycles.py imports this module

        return train_cycles(cfg, data, threads=threads, max_seconds=max_seconds, on_epoch=on_epoch,
                            check_every=check_every, model=model)
    if threads:
        torch.set_num_threads(threads)
    model = model if model is not None else build_model(cfg, data.train_x.shape[1], int(data.train_y.max()) + 1)
    model = model.to(data.train_x.device)
    n_params = count_params(model)
    opt = OPTIMIZERS[cfg.optimizer]([p for p in model.parameters() if p.requires_grad], cfg)
    n = len(data.train_x)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    sched = _scheduler(opt, cfg, steps_per_epoch * cfg.epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    # A plain ReLU MLP gets a hand-written forward/backward (hpo/fastmlp.py): the same computation without
    # autograd's per-operation overhead, which dominates at these sizes. None for any other model.
    fast = fast_step(model, loss_fn)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(model, "complete", "", n_params, 0)
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds else math.inf
    eval_seconds = 0.0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(data.train_x.device)
        loss_sum = torch.zeros((), device=data.train_x.device)
        for step, i in enumerate(range(0, n, bs), 1):
            idx = perm[i:i + bs]
            # index_select on the contiguous data: one gather, cheaper than advanced indexing's x[idx].
            xb, yb = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
            if fast is not None:
                loss = fast(xb, yb)  # writes every parameter's .grad
            else:
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.detach()
            result.samples += len(idx)
            # Checked every `check_every` steps, not every step: isfinite().item() is a sync point.
            if step % check_every == 0 and not torch.isfinite(loss_sum).item():
                result.status, result.reason = "diverged", f"loss became {loss_sum.item()} in epoch {epoch}, step {step}"
                break
            if time.perf_counter() > deadline:
                result.status, result.reason = "time_cap", f"stopped at the {max_seconds:g}s time cap in epoch {epoch}"
                break
        if result.status == "complete" and not torch.isfinite(loss_sum).item():
            result.status, result.reason = "diverged", f"loss became {loss_sum.item()} in epoch {epoch}"
        if result.status != "complete":
            break
        t0 = time.perf_counter()
        acc = accuracy(model, data.eval_x, data.eval_y)
        eval_seconds += time.perf_counter() - t0
        result.epochs = epoch
        result.eval_curve.append(acc)
        result.loss_curve.append(loss_sum.item() / steps_per_epoch)
        if on_epoch is not None:
            result.train_seconds = time.perf_counter() - start - eval_seconds
            on_epoch(epoch, acc)
    result.train_seconds = time.perf_counter() - start - eval_seconds
    return result

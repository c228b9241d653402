"""The training loop. It knows nothing of Optuna: plain values in, a TrainResult out.

Data is held as tensors; a batch is a slice of a permutation (no Dataset, no DataLoader), augmented as a whole
when cfg.augment asks (hpo/training/augment.py); evaluation data are never augmented.
An optional `on_epoch(epoch, eval_acc)` callback may raise to stop training (the objective
uses it for pruning); a wall-time cap and a divergence check end training with a status.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from hpo.data import Splits
from hpo.training.augment import BatchAugment
from hpo.training.cycles import train_cycles
from hpo.training.fastmlp import fast_step
from hpo.training.models import accuracy, build_model, count_params
from hpo.training.pack import packable, train_pack
from hpo.training.runtime import OPTIMIZERS, TrainResult, set_threads
from hpo.training.spec import TrainConfig, cycles_momentum


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                                   cycle_momentum=cycles_momentum(cfg))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def augmenter(cfg: TrainConfig, data: Splits) -> BatchAugment:
    """cfg's batch augmentation on data's device; shifted-in pixels take the training inputs' smallest value,
    a black pixel once normalised (one sync, once per run)."""
    return BatchAugment(cfg.augment, cfg.augment_shift, cfg.seed, data.input_shape,
                        data.train_x.min().item(), data.train_x.device)


def train(cfg: TrainConfig, data: Splits, *, threads: int | None = None, max_seconds: float | None = None,
          on_epoch: Callable[[int, float], None] | None = None, check_every: int = 50,
          model: nn.Module | None = None, fast: bool = True) -> TrainResult:
    """Train `cfg` on data.train_*, evaluating on data.eval_* after every epoch, on the data's device.

    A plain MLP with an activation a pack can take (hpo.training.pack.packable) and no model given trains as a
    pack of one (`train_pack([cfg])`): the same floats alone as in any pack. `fast=False` trains a ReLU MLP through
    autograd instead of the hand-written step (the benchmark measures both)."""
    if model is None and packable(cfg):  # a plain MLP: the pack's loop at K = 1, the same floats as in a pack
        return _train_alone_as_pack(cfg, data, threads=threads, max_seconds=max_seconds, on_epoch=on_epoch,
                                    check_every=check_every, fast=fast)
    if cfg.cycle_epochs:  # three runs of the plain loop with the right parameters frozen
        return train_cycles(cfg, data, run=_train_run, threads=threads, max_seconds=max_seconds, on_epoch=on_epoch,
                            check_every=check_every, model=model, fast=fast)
    return _train_run(cfg, data, threads=threads, max_seconds=max_seconds, on_epoch=on_epoch,
                      check_every=check_every, model=model, fast=fast)


def _train_alone_as_pack(cfg: TrainConfig, data: Splits, *, threads: int | None, max_seconds: float | None,
                         on_epoch: Callable[[int, float], None] | None, check_every: int, fast: bool) -> TrainResult:
    """`cfg` trained as a pack of one: one hand-written step, one optimizer and one loop for a member alone and in
    any pack, so that a member's result does not depend on whether (or with whom) it trained in a pack. An
    exception from on_epoch ends training and propagates, as in the plain loop."""
    member_epoch = None if on_epoch is None else (lambda _member, epoch, acc: on_epoch(epoch, acc))
    result = train_pack([cfg], data, threads=threads, max_seconds=max_seconds, on_epoch=member_epoch,
                        check_every=check_every, fast=fast)[0]
    if result.stopped_by is not None:
        raise result.stopped_by
    return result


def _train_run(cfg: TrainConfig, data: Splits, *, threads: int | None, max_seconds: float | None,
               on_epoch: Callable[[int, float], None] | None, check_every: int, model: nn.Module | None,
               fast: bool) -> TrainResult:
    """One run of the loop: a fresh optimizer and schedule over the model's trainable parameters."""
    set_threads(threads)
    model = model if model is not None else build_model(cfg, data.input_shape, data.n_classes)
    device = data.train_x.device
    model = model.to(device)
    n_params = count_params(model)
    opt = OPTIMIZERS[cfg.optimizer]([p for p in model.parameters() if p.requires_grad], cfg)
    n = len(data.train_x)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    sched = _scheduler(opt, cfg, steps_per_epoch * cfg.epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    # A plain ReLU MLP gets a hand-written forward/backward (hpo/training/fastmlp.py): the same computation without
    # autograd's per-operation overhead, which dominates at these sizes. None for any other model.
    step_fn = fast_step(model, loss_fn) if fast else None
    gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: the same batch order on any device
    # Augmentation draws from its own generator: without it, a run draws exactly what it always drew.
    aug = None if cfg.augment == "none" else augmenter(cfg, data)
    result = TrainResult(model, "complete", "", n_params, 0)
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds else math.inf
    eval_seconds = 0.0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen, device="cpu").to(device)
        if aug is not None:
            aug.epoch(n)
        loss_sum = torch.zeros((), device=device)
        for step, i in enumerate(range(0, n, bs), 1):
            idx = perm[i:i + bs]
            # index_select on the contiguous data: one gather, cheaper than advanced indexing's x[idx].
            xb, yb = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
            if aug is not None:
                xb = aug.batch(xb, i)
            if step_fn is not None:
                loss = step_fn(xb, yb)  # writes every parameter's .grad
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
                result.status = "diverged"
                result.reason = f"loss became {loss_sum.item()} in epoch {epoch}, step {step}"
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

"""Bansal 2022's three-cycle schedule, on top of the ordinary training loop.

  cycle 1  network weights trained, mixing weights frozen     lr = cfg.lr      (paper: Adam, 1e-3, 10 epochs)
  cycle 2  mixing weights trained, network weights frozen     lr = cfg.mix_lr  (paper: Adam, 1e-2, 10 epochs)
  cycle 3  as cycle 1                                         lr = cfg.lr      (paper: Adam, 1e-3, 10 epochs)

Each cycle is one run of the plain loop (`run`, passed in by hpo.training.loop.train, which calls this
module for a config with cycle_epochs > 0) on the same model: it builds its optimizer over the parameters
with requires_grad=True only, so a frozen parameter is not even handed to the optimizer and stays
bit-identical (no weight decay or momentum can touch it). Each cycle starts a fresh optimizer and learning
rate schedule, as three separate runs would. Curves, epochs, samples and the `on_epoch` step numbers are
stitched into one run: steps 1..3n.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch import nn

from hpo.data import Splits
from hpo.training.activations import mixing_parameters
from hpo.training.models import build_model, count_params
from hpo.training.runtime import TrainResult
from hpo.training.spec import TrainConfig

# One run of the plain training loop (hpo.training.loop's), called once per cycle.
RunFn = Callable[..., TrainResult]

CYCLES = ("network", "mixing", "network")  # what each cycle trains


def train_cycles(cfg: TrainConfig, data: Splits, *, run: RunFn, threads: int | None = None,
                 max_seconds: float | None = None, on_epoch: Callable[[int, float], None] | None = None,
                 check_every: int = 50, model: nn.Module | None = None, fast: bool = True) -> TrainResult:
    """Three cycles of cfg.cycle_epochs epochs each; the time cap (if any) covers all three together."""
    n = cfg.cycle_epochs
    if n <= 0:
        raise ValueError(f"cycle_epochs must be > 0 for the three-cycle schedule, but got {n}")
    model = model if model is not None else build_model(cfg, data.input_shape, data.n_classes)
    mixing = mixing_parameters(model)
    if not mixing:
        raise ValueError("the three-cycle schedule needs at least one `mix` activation layer: cycle 2 trains "
                         "only the mixing weights")
    mixing_ids = {id(p) for p in mixing}
    network = [p for p in model.parameters() if id(p) not in mixing_ids]
    before = {id(p): p.requires_grad for p in model.parameters()}

    result = TrainResult(model, "complete", "", count_params(model), 0)
    start = time.perf_counter()
    try:
        for k, trains in enumerate(CYCLES):
            for p in network:
                p.requires_grad_(trains == "network")
            for p in mixing:
                p.requires_grad_(trains == "mixing")
            # The mixing weights are not regularised in the paper; weight decay would pull them to equal P.
            sub = cfg.replace(cycle_epochs=0, epochs=n, seed=cfg.seed + k,
                              **({"lr": cfg.mix_lr, "weight_decay": 0.0} if trains == "mixing" else {}))
            offset = k * n
            step = None if on_epoch is None else (lambda epoch, acc, offset=offset: on_epoch(offset + epoch, acc))
            left = None if not max_seconds else max(max_seconds - (time.perf_counter() - start), 1e-3)
            r = run(sub, data, threads=threads, max_seconds=left, on_epoch=step, check_every=check_every,
                    model=model, fast=fast)
            result.epochs += r.epochs
            result.eval_curve += r.eval_curve
            result.loss_curve += r.loss_curve
            result.samples += r.samples
            result.train_seconds += r.train_seconds
            if r.status != "complete":
                result.status, result.reason = r.status, f"cycle {k + 1} ({trains} weights): {r.reason}"
                break
    finally:  # leave the model as it came: everything trainable that was trainable
        for p in model.parameters():
            p.requires_grad_(before[id(p)])
    return result

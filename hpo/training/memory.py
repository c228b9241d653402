"""A trial's memory: estimated before training, measured while it trains.

`budget.memory_mb` caps what one trial adds to its worker process. The objective checks it twice:
  - before training, against `estimate_bytes` (parameters, gradients, optimizer state, the activations
    of one batch and the augmentation's buffers), so that a configuration that cannot fit is refused
    without running;
  - after every epoch, against `PeakMemory.growth()`, the peak resident memory (CPU) or peak allocated
    memory (CUDA) above where the trial started, which catches what the estimate leaves out.
Both know nothing of Optuna.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch
from torch import nn

# Optimizer state per parameter, in parameter-sized buffers (Adam keeps two moments, momentum SGD one).
OPTIMIZER_STATE = {"sgd": 0, "sgd_momentum": 1, "adam": 2, "adamw": 2}
EVAL_CHUNK = 8192  # hpo.training.models.accuracy evaluates in chunks of this many samples

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def activation_sizes(model: nn.Module, in_features: int, device="cpu") -> list[int]:
    """Elements each leaf module outputs for one sample (a batch-1 forward pass with hooks)."""
    sizes: list[int] = []

    def record(_module, _inputs, out):
        t = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(t, torch.Tensor):
            sizes.append(t.numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, in_features, device=device))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return sizes


def augment_bytes(kind: str, shift: int, *, batch_size: int, in_features: int, n_train: int) -> int:
    """Bytes a run's batch augmentation holds (hpo.training.augment): the int64 index table of every
    (dy, dx, flip), the epoch's draws and table rows, and the reused per-batch buffers (the padded batch, its
    gather index, the result). 0 without augmentation."""
    if kind == "none":
        return 0
    table = (2 * shift + 1) ** 2 * 2 * in_features * 8
    draws = n_train * (3 + 1) * 8  # (n, 3) draws and (n,) table rows, int64
    buffers = batch_size * ((in_features + 1) * 4 + in_features * 8 + in_features * 4)
    return table + draws + buffers


def estimate_bytes(model: nn.Module, *, optimizer: str, batch_size: int, in_features: int, n_train: int,
                   n_eval: int, augment: str = "none", augment_shift: int = 0) -> int:
    """Bytes one trial needs beyond the data it shares with every other trial.

    Parameters, their gradients, the optimizer's state and the temporaries of its foreach update, plus
    the larger of: a training batch (its inputs, every layer's output kept for backward and the
    gradient of each), or an evaluation chunk (inference keeps about two layers' outputs at a time), plus
    the augmentation's buffers (`augment_bytes`). A deliberate upper-side estimate: allocator slack and library
    buffers are not in it.
    """
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    state = OPTIMIZER_STATE.get(optimizer, 2)
    device = next(model.parameters()).device if param_bytes else "cpu"
    sizes = activation_sizes(model, in_features, device) or [0]
    bs = min(batch_size, max(n_train, 1))
    train_act = bs * (in_features + 2 * sum(sizes)) * 4
    eval_act = min(EVAL_CHUNK, max(n_eval, 1)) * 2 * max(sizes) * 4
    perm = n_train * 8  # the int64 permutation drawn every epoch
    aug = augment_bytes(augment, augment_shift, batch_size=bs, in_features=in_features, n_train=n_train)
    return param_bytes * (3 + state) + max(train_act, eval_act) + perm + aug


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory growth since `start()`.

    CPU: Linux lets a process reset its own peak resident set (VmHWM) by writing 5 to
    /proc/self/clear_refs, so the peak is the trial's own and not an earlier trial's. Elsewhere the
    process-lifetime peak (ru_maxrss) is used: growth then shows only once a trial beats every earlier one.
    CUDA: torch's peak allocated memory, reset at start.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.baseline = 0
        self._hwm = False

    def start(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
            return self
        try:
            _CLEAR_REFS.write_text("5")
            self._hwm = _status_kib("VmHWM") is not None
        except OSError:
            self._hwm = False
        rss = _status_kib("VmRSS")
        self.baseline = rss * 1024 if self._hwm and rss is not None else _maxrss_bytes()
        return self

    def peak(self) -> int:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        if self._hwm:
            return (_status_kib("VmHWM") or 0) * 1024
        return _maxrss_bytes()

    def growth(self) -> int:
        """Bytes the peak rose above the start (never negative)."""
        return max(0, self.peak() - self.baseline)


def current_rss() -> int:
    """Resident memory of this process now, in bytes (for tests and reports)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else _maxrss_bytes()

"""A hand-written training step for the plain ReLU MLP, the model of every paper table.

At these sizes (784-60-40-10, batch 64) a training step is dominated by per-operation overhead, not by
arithmetic: autograd's graph, its engine and the loss module cost about as much as the matrix products. For
an `nn.Sequential` of Linear → ReLU (→ Dropout) … → Linear trained with `nn.CrossEntropyLoss`, the
forward and backward passes are short enough to write down: three matrix products per layer, a ReLU mask, and
softmax minus the (smoothed) one-hot target. This module does that, writing the gradients into each parameter's
`.grad` for the usual optimizer to consume, so that `train()` is unchanged in everything but speed.

It is the same computation: dropout draws its noise exactly as `nn.Dropout` does on CPU (same generator calls,
same order), and tests/test_fastmlp.py holds losses and gradients against autograd's. Anything else (other
activations, frozen parameters, hooks, other losses) returns None from `fast_step` and trains through autograd;
`train(..., fast=False)` trains through autograd anyway (the benchmark measures both). It runs on whatever device
the model and the batch are on, and writes a gradient that is missing (None, e.g. after
`zero_grad(set_to_none=True)`) or of the wrong shape, layout or device afresh.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_threshold_backward = torch.ops.aten.threshold_backward


def _grad(p: nn.Parameter) -> torch.Tensor:
    """p's gradient buffer, to be written in place with out=: it must exist and be plain (p's shape, contiguous,
    on p's device); anything else is replaced by zeros."""
    g = p.grad
    if g is None or g.shape != p.shape or g.device != p.device or not g.is_contiguous():
        g = p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
    return g


class FastMLPStep:
    """Forward, loss and backward of a plain ReLU MLP in one call; returns the (detached) mean loss."""

    def __init__(self, linears: list[nn.Linear], dropouts: list[float], label_smoothing: float,
                 is_training: Callable[[], bool]):
        self.linears, self.dropouts, self.eps = linears, dropouts, label_smoothing
        self.is_training = is_training
        for lin in linears:
            _grad(lin.weight)
            _grad(lin.bias)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inputs, h, last = [], x, len(self.linears) - 1
        training = self.is_training()
        for i, lin in enumerate(self.linears):
            inputs.append(h)
            h = torch.addmm(lin.bias, h, lin.weight.t())
            if i < last:
                h.relu_()
                p = self.dropouts[i]
                if training and p > 0:  # as aten's CPU dropout: bernoulli_(1 - p), div_(1 - p), multiply
                    noise = torch.empty_like(h).bernoulli_(1 - p)
                    noise.div_(1 - p)
                    h = h * noise
        logp = torch.log_softmax(h, dim=1)
        loss = F.nll_loss(logp, y)
        if self.eps:  # nn.CrossEntropyLoss's label smoothing: (1 - eps) nll + eps (mean over classes of -log p)
            loss = (1 - self.eps) * loss - self.eps * logp.mean()
        # d(mean loss)/d(logits) = (softmax - target) / batch, target = (1 - eps) one-hot + eps / classes
        g = logp.exp_()  # the loss is computed already: logp may become the softmax in place
        if self.eps:
            g.sub_(self.eps / g.shape[1])
        g.scatter_add_(1, y.unsqueeze(1), torch.full((len(y), 1), self.eps - 1.0, dtype=g.dtype, device=g.device))
        g.div_(len(y))
        for i in range(last, -1, -1):
            lin = self.linears[i]
            torch.mm(g.t(), inputs[i], out=_grad(lin.weight))
            torch.sum(g, 0, out=_grad(lin.bias))
            if i > 0:
                g = torch.mm(g, lin.weight)
                # The layer below's output is relu(a) * noise: nonzero exactly where gradient flows through both.
                g = _threshold_backward(g, inputs[i], 0)
                p = self.dropouts[i - 1]
                if training and p > 0:
                    g.mul_(1.0 / (1 - p))
        return loss


def _no_hooks(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def fast_step(model: nn.Module, loss_fn: nn.Module) -> FastMLPStep | None:
    """The hand-written step for `model` and `loss_fn`, or None when they are anything but a plain ReLU MLP
    (exact module types, biases, every parameter trainable, float32, no hooks) and a plain cross-entropy."""
    if type(model) is not nn.Sequential or type(loss_fn) is not nn.CrossEntropyLoss:
        return None
    if loss_fn.weight is not None or loss_fn.reduction != "mean":
        return None
    linears, dropouts = [], []
    expect = "linear"
    for m in model:
        if not _no_hooks(m):
            return None
        if expect == "linear" and type(m) is nn.Linear and m.bias is not None:
            linears.append(m)
            expect = "relu"
        elif expect == "relu" and type(m) is nn.ReLU:
            dropouts.append(0.0)
            expect = "dropout_or_linear"
        elif expect == "dropout_or_linear" and type(m) is nn.Dropout and 0 <= m.p < 1:
            dropouts[-1] = float(m.p)
            expect = "linear"
        elif expect == "dropout_or_linear" and type(m) is nn.Linear and m.bias is not None:
            linears.append(m)
            expect = "relu"
        else:
            return None
    if expect != "relu" or not _no_hooks(model):  # must end on a Linear
        return None
    params = list(model.parameters())
    if not all(p.requires_grad and p.dtype == torch.float32 and p.device == params[0].device for p in params):
        return None
    return FastMLPStep(linears, dropouts, float(loss_fn.label_smoothing), lambda: model.training)

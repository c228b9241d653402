"""A hand-written training step for the plain ReLU MLP, the model of every paper table.

At these sizes (784-60-40-10, batch 64) a training step is dominated by per-operation overhead, not by
arithmetic: autograd's graph, its engine and the loss module cost about as much as the matrix products. For
an `nn.Sequential` of Linear → ReLU (→ Dropout) … → Linear trained with `nn.CrossEntropyLoss`, the
forward and backward passes are short enough to write down: three matrix products per layer, a ReLU mask, and
softmax minus the (smoothed) one-hot target. This module does that once, for K stacked models
(`relu_mlp_step`: a trial pack, hpo/training/pack.py, and a model alone, which trains as a pack of one), and
`FastMLPStep` applies it at K = 1 to an nn.Sequential given from outside, writing the gradients into each
parameter's `.grad` for the usual optimizer to consume.

It is the same computation: `FastMLPStep`'s dropout draws its noise exactly as `nn.Dropout` does on CPU (same
generator calls, same order; a pack draws each member's from its own generator), and tests/test_fastmlp.py
holds losses and gradients against autograd's. Anything else (other activations, frozen parameters, hooks,
other losses) returns None from `fast_step` and trains through autograd;
`train(..., fast=False)` trains through autograd anyway (the benchmark measures both). It runs on whatever device
the model and the batch are on, and writes a gradient that is missing (None, e.g. after
`zero_grad(set_to_none=True)`) or of the wrong shape, layout or device afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

_threshold_backward = torch.ops.aten.threshold_backward


def _grad(p: nn.Parameter) -> torch.Tensor:
    """p's gradient buffer, to be written in place with out=: it must exist and be plain (p's shape, contiguous,
    on p's device); anything else is replaced by zeros."""
    g = p.grad
    if g is None or g.shape != p.shape or g.device != p.device or not g.is_contiguous():
        g = p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
    return g


@torch.no_grad()
def relu_mlp_step(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], weight_grads: Sequence[torch.Tensor],
                  bias_grads: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor,
                  noise: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None) -> torch.Tensor:
    """Forward, loss and backward of K stacked ReLU MLPs, the one hand-written step of the project (a lone model
    is K = 1). weights[i] (K, in, out), biases[i] (K, 1, out); their gradients are written in place (out=) into
    weight_grads[i], bias_grads[i] of the same shapes. x (K, B, in), y (K, B), smoothing (K,): each member's
    label smoothing. `noise(i, h)`: hidden layer i's dropout multiplier (0 or 1/keep, broadcastable to h) or None.
    Returns each member's mean loss (K,), as nn.CrossEntropyLoss computes it.

    Every operation acts on each member's slice alone (batched matrix products, per-row reductions, elementwise
    ops), so a member's floats do not depend on K or on its pack-mates (tests/test_pack.py holds that)."""
    inputs, scales, h, last = [], [], x, len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        inputs.append(h)
        h = torch.baddbmm(b, h, w)
        if i < last:
            h.relu_()
            m = noise(i, h) if noise is not None else None
            if m is not None:
                h = h * m
            scales.append(m)
    k, batch, classes = h.shape
    logp = torch.log_softmax(h, dim=-1)
    eps = smoothing.view(k, 1, 1)
    # nn.CrossEntropyLoss's label smoothing: (1 - eps) nll + eps (mean over classes of -log p)
    losses = (1 - smoothing) * -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1) \
        + smoothing * -logp.mean(-1).mean(-1)
    # d(mean loss)/d(logits) = (softmax - target) / batch, target = (1 - eps) one-hot + eps / classes
    g = logp.exp_()  # the losses are computed already: logp may become the softmax in place
    g.sub_(eps / classes)
    g.scatter_add_(-1, y.unsqueeze(-1), (eps - 1).expand(k, batch, 1))
    g.div_(batch)
    for i in range(last, -1, -1):
        torch.bmm(inputs[i].transpose(1, 2), g, out=weight_grads[i])
        torch.sum(g, 1, keepdim=True, out=bias_grads[i])
        if i > 0:
            g = torch.bmm(g, weights[i].transpose(1, 2))
            # The layer below's output is relu(a) * noise: nonzero exactly where gradient flows through both.
            g = _threshold_backward(g, inputs[i], 0)
            if scales[i - 1] is not None:
                g = g * scales[i - 1]
    return losses


class FastMLPStep:
    """Forward, loss and backward of one plain ReLU MLP in one call (`relu_mlp_step` at K = 1 over views of its
    parameters and gradients); returns the (detached) mean loss."""

    def __init__(self, linears: list[nn.Linear], dropouts: list[float], label_smoothing: float,
                 is_training: Callable[[], bool]):
        self.linears, self.dropouts = linears, dropouts
        self.smoothing = torch.tensor([label_smoothing], dtype=torch.float32, device=linears[0].weight.device)
        self.is_training = is_training
        for lin in linears:
            _grad(lin.weight)
            _grad(lin.bias)

    def _noise(self, i: int, h: torch.Tensor) -> torch.Tensor | None:
        p = self.dropouts[i]
        if not (self.training and p > 0):
            return None
        # as aten's CPU dropout draws: bernoulli_(1 - p), div_(1 - p)
        return torch.empty_like(h).bernoulli_(1 - p).div_(1 - p)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.training = self.is_training()
        lins = self.linears
        losses = relu_mlp_step([lin.weight.t().unsqueeze(0) for lin in lins], [lin.bias.view(1, 1, -1) for lin in lins],
                               [_grad(lin.weight).t().unsqueeze(0) for lin in lins],
                               [_grad(lin.bias).view(1, 1, -1) for lin in lins],
                               x.unsqueeze(0), y.unsqueeze(0), self.smoothing, self._noise)
        return losses[0]


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

"""Model builders: plain PyTorch modules from plain values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hpo.activations import make_activation

MODELS = ("mlp",)
INITS = ("default", "kaiming", "xavier")


def _per_layer(value: str | Sequence[str], depth: int) -> list[str]:
    return [value] * depth if isinstance(value, str) else list(value)


def mlp(in_features: int, widths: Sequence[int], n_classes: int = 10, activation: str | Sequence[str] = "relu",
        dropout: float = 0.0, init: str = "default", negative_slope: float = 0.01) -> nn.Sequential:
    """in → widths[0] → … → widths[-1] → n_classes, activation (and dropout) after every hidden layer."""
    acts = _per_layer(activation, len(widths))
    layers: list[nn.Module] = []
    prev = in_features
    for width, act in zip(widths, acts):
        layers.append(nn.Linear(prev, width))
        layers.append(make_activation(act, width, negative_slope=negative_slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    layers.append(nn.Linear(prev, n_classes))
    model = nn.Sequential(*layers)
    _initialise(model, init)
    return model


def _initialise(model: nn.Module, init: str) -> None:
    if init == "default":  # PyTorch's own: kaiming-uniform(a=sqrt(5)) weights, uniform biases
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"unknown init {init!r}")
            nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp_param_count(in_features: int, widths: Sequence[int], n_classes: int = 10) -> int:
    """Parameter count of an MLP without building it (for caps and reports)."""
    dims = [in_features, *widths, n_classes]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def describe(widths: Sequence[int], in_features: int = 784, n_classes: int = 10) -> str:
    """The paper's way of writing an architecture, input side first: 784-60-40-10."""
    return "-".join(str(d) for d in (in_features, *widths, n_classes))


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long)
    for i in range(0, len(x), chunk):
        correct += (model(x[i:i + chunk]).argmax(1) == y[i:i + chunk]).sum()
    model.train(was_training)
    return correct.item() / max(len(x), 1)

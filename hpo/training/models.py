"""Model builders: plain PyTorch modules from plain values, and what a model scores."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hpo.training.activations import make_activation
from hpo.training.config import TrainConfig

MODELS = ("mlp", "cnn")
INITS = ("default", "kaiming", "xavier")
CNN_MAX_DEPTH = 5  # cnn: conv layers + 1 fc; four 2x2 poolings take 28x28 down to 1x1


def _per_layer(value, depth: int) -> list:
    """One value per hidden layer: a scalar (an activation's name, a slope) stands for every layer."""
    return list(value) if isinstance(value, (tuple, list)) else [value] * depth


def mlp(in_features: int, widths: Sequence[int], n_classes: int = 10, activation: str | Sequence[str] = "relu",
        dropout: float = 0.0, init: str = "default", negative_slope: float | Sequence[float] = 0.01) -> nn.Sequential:
    """in → widths[0] → … → widths[-1] → n_classes, activation (and dropout) after every hidden layer."""
    acts = _per_layer(activation, len(widths))
    slopes = _per_layer(negative_slope, len(widths))
    layers: list[nn.Module] = []
    prev = in_features
    for width, act, slope in zip(widths, acts, slopes):
        layers.append(nn.Linear(prev, width))
        layers.append(make_activation(act, width, negative_slope=slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    layers.append(nn.Linear(prev, n_classes))
    model = nn.Sequential(*layers)
    _initialise(model, init)
    return model


class CNN(nn.Sequential):
    """A Sequential that evaluates in smaller chunks: a conv layer's output is ~16x its input per channel."""

    eval_chunk = 1024


def cnn(in_features: int, widths: Sequence[int], n_classes: int = 10, activation: str | Sequence[str] = "relu",
        dropout: float = 0.0, init: str = "default", negative_slope: float | Sequence[float] = 0.01) -> nn.Sequential:
    """Bansal 2022's network: conv layers, then one hidden fully connected layer and the output layer.

    widths = (conv channels ..., fc hidden units): the paper's two conv + two fc layers are widths of length 3,
    with one activation per entry (three activation layers). Each conv is 3x3 (padding 1), then 2x2 max
    pooling, then its activation: the paper does not give the order, and pooling first feeds the activation
    a quarter of the values (for ReLU the two orders give the same output; for mix, which computes three
    functions, it is ~4x less work). Dropout (if any) follows the hidden fc layer. Input is the flat
    normalised (N, in_features) tensor, reshaped here to (N, 1, side, side).
    """
    side = math.isqrt(in_features)
    if side * side != in_features:
        raise ValueError(f"cnn needs square images, but in_features={in_features}")
    if not 2 <= len(widths) <= CNN_MAX_DEPTH:
        raise ValueError(f"cnn needs 2 to {CNN_MAX_DEPTH} widths (conv channels, then fc units), got {list(widths)}")
    acts = _per_layer(activation, len(widths))
    slopes = _per_layer(negative_slope, len(widths))
    layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
    channels, size = 1, side
    for width, act, slope in zip(widths[:-1], acts[:-1], slopes[:-1]):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.MaxPool2d(2),
                   make_activation(act, width, negative_slope=slope)]
        channels, size = width, size // 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, widths[-1]),
               make_activation(acts[-1], widths[-1], negative_slope=slopes[-1])]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], n_classes))
    model = CNN(*layers)
    _initialise(model, init)
    return model


def _initialise(model: nn.Module, init: str) -> None:
    if init == "default":  # PyTorch's own: kaiming-uniform(a=sqrt(5)) weights, uniform biases
        return
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
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


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)  # summed where the data is: no sync per chunk
    chunk = min(chunk, getattr(model, "eval_chunk", chunk))
    for i in range(0, len(x), chunk):
        correct += (model(x[i:i + chunk]).argmax(1) == y[i:i + chunk]).sum()
    model.train(was_training)
    return correct.item() / max(len(x), 1)


def build_model(cfg: TrainConfig, in_features: int = 784, n_classes: int = 10) -> nn.Module:
    """The network `cfg` names, initialised from cfg.seed on the CPU (whatever the default device): a seed then
    gives the same initial weights on any device; training moves the model to its data's device."""
    torch.manual_seed(cfg.seed)
    with torch.device("cpu"):
        if cfg.model == "mlp":
            return mlp(in_features, cfg.widths, n_classes, cfg.activation, cfg.dropout, cfg.init, cfg.negative_slope)
        if cfg.model == "cnn":
            return cnn(in_features, cfg.widths, n_classes, cfg.activation, cfg.dropout, cfg.init, cfg.negative_slope)
    raise ValueError(f"unknown model {cfg.model!r}")

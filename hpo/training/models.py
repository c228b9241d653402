"""Model builders: plain PyTorch modules from plain values, and what a model scores.

Every builder has one signature, `FUNCTION(input_shape, n_classes, **args) -> torch.nn.Module`: the built-ins
`mlp` and `cnn` (BUILDERS, a plain registry) and a user's own, named in a search space as `model: FILE.py:FUNCTION`
or `model: package.module:FUNCTION` with its arguments under `model_args:`. `input_shape` is (C, H, W) for images
and (F,) for tabular data; a model receives each batch flat, (B, F) with F the product of `input_shape`
(`nn.Unflatten(1, input_shape)` gives images back their shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hpo.training.activations import make_activation
from hpo.training.spec import (  # noqa: F401  (re-exported)
    CNN_MAX_DEPTH,
    INITS,
    MODELS,
    TrainConfig,
    check_builder_args,
    is_plugin,
    load_builder,
)


def n_features(input_shape) -> int:
    """The flat size of one sample: an int is one already, a shape is its product."""
    return int(input_shape) if isinstance(input_shape, int) else math.prod(input_shape)


def _per_layer(value, depth: int) -> list:
    """One value per hidden layer: a scalar (an activation's name, a slope) stands for every layer."""
    return list(value) if isinstance(value, (tuple, list)) else [value] * depth


def mlp(input_shape, widths: Sequence[int], n_classes: int, activation: str | Sequence[str] = "relu",
        dropout: float = 0.0, init: str = "default", negative_slope: float | Sequence[float] = 0.01) -> nn.Sequential:
    """in → widths[0] → … → widths[-1] → n_classes, activation (and dropout) after every hidden layer; `input_shape`
    is a shape or the flat input size."""
    acts = _per_layer(activation, len(widths))
    slopes = _per_layer(negative_slope, len(widths))
    layers: list[nn.Module] = []
    prev = n_features(input_shape)
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


def cnn(input_shape, widths: Sequence[int], n_classes: int, activation: str | Sequence[str] = "relu",
        dropout: float = 0.0, init: str = "default", negative_slope: float | Sequence[float] = 0.01) -> nn.Sequential:
    """Bansal 2022's network: conv layers, then one hidden fully connected layer and the output layer.

    widths = (conv channels ..., fc hidden units): the paper's two conv + two fc layers are widths of length 3,
    with one activation per entry (three activation layers). Each conv is 3x3 (padding 1), then 2x2 max
    pooling, then its activation: the paper does not give the order, and pooling first feeds the activation
    a quarter of the values (for ReLU the two orders give the same output; for mix, which computes three
    functions, it is ~4x less work). Dropout (if any) follows the hidden fc layer. Input is the flat
    normalised (N, C*H*W) tensor, reshaped here to (N, C, H, W); a flat int size is read as one square channel.
    """
    if isinstance(input_shape, int):
        side = math.isqrt(input_shape)
        if side * side != input_shape:
            raise ValueError(f"cnn needs images, but got {input_shape} features")
        input_shape = (1, side, side)
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs images (C, H, W), but the data's samples have shape {list(input_shape)}")
    if not 2 <= len(widths) <= CNN_MAX_DEPTH:
        raise ValueError(f"cnn needs 2 to {CNN_MAX_DEPTH} widths (conv channels, then fc units), got {list(widths)}")
    channels, height, width_px = input_shape
    if min(height, width_px) < 2 ** (len(widths) - 1):
        raise ValueError(f"cnn with {len(widths) - 1} conv layers halves {height}x{width_px} images "
                         f"{len(widths) - 1} times; use fewer conv layers")
    acts = _per_layer(activation, len(widths))
    slopes = _per_layer(negative_slope, len(widths))
    layers: list[nn.Module] = [nn.Unflatten(1, tuple(input_shape))]
    for width, act, slope in zip(widths[:-1], acts[:-1], slopes[:-1]):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.MaxPool2d(2),
                   make_activation(act, width, negative_slope=slope)]
        channels, height, width_px = width, height // 2, width_px // 2
    layers += [nn.Flatten(), nn.Linear(channels * height * width_px, widths[-1]),
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


def mlp_param_count(input_shape, widths: Sequence[int], n_classes: int) -> int:
    """Parameter count of an MLP without building it (for caps and reports)."""
    dims = [n_features(input_shape), *widths, n_classes]
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


def _builtin(fn):
    """A built-in with the builders' one signature: its TrainConfig fields become keyword arguments."""
    def build(input_shape, n_classes, *, widths, activation="relu", dropout=0.0, init="default", negative_slope=0.01):
        return fn(input_shape, widths, n_classes, activation, dropout, init, negative_slope)
    build.__name__ = fn.__name__
    return build


BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": _builtin(mlp), "cnn": _builtin(cnn)}
assert tuple(BUILDERS) == MODELS, "hpo.training.spec.MODELS must name BUILDERS' keys"


def build_model(cfg: TrainConfig, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """The network `cfg` names, initialised from cfg.seed on the CPU (whatever the default device): a seed then
    gives the same initial weights on any device; training moves the model to its data's device."""
    torch.manual_seed(cfg.seed)
    input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)  # a flat size, or a shape
    with torch.device("cpu"):
        if cfg.model in BUILDERS:
            model = BUILDERS[cfg.model](input_shape, n_classes, widths=cfg.widths, activation=cfg.activation,
                                        dropout=cfg.dropout, init=cfg.init, negative_slope=cfg.negative_slope)
            return model
        model = load_builder(cfg.model)(tuple(input_shape), n_classes, **dict(cfg.model_args))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{cfg.model} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def param_count(hp: dict, input_shape: Sequence[int], n_classes: int) -> int:
    """Parameters of the model a config (TrainConfig keyword arguments) builds for this data, built to count."""
    return count_params(build_model(TrainConfig.from_dict(hp), input_shape, n_classes))

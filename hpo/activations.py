"""Activation functions by name: a plain registry of constructors.

Each entry takes the activation options (a dict of plain values, e.g. {"negative_slope": 0.01})
and the layer width, and returns an nn.Module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Sin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


ACTIVATIONS: dict[str, Callable[[dict, int], nn.Module]] = {
    "relu": lambda opts, width: nn.ReLU(),
    "leaky_relu": lambda opts, width: nn.LeakyReLU(opts.get("negative_slope", 0.01)),
    "prelu": lambda opts, width: nn.PReLU(num_parameters=1, init=0.25),
    "elu": lambda opts, width: nn.ELU(),
    "gelu": lambda opts, width: nn.GELU(),
    "silu": lambda opts, width: nn.SiLU(),
    "tanh": lambda opts, width: nn.Tanh(),
    "sigmoid": lambda opts, width: nn.Sigmoid(),
    "sin": lambda opts, width: Sin(),
}


def make_activation(name: str, width: int, **opts) -> nn.Module:
    return ACTIVATIONS[name](opts, width)

"""Activation functions by name: a plain registry of constructors and the learnable mixture.

Each registry entry takes the activation options (a dict of plain values, e.g. {"negative_slope": 0.01})
and the layer width, and returns an nn.Module.

`mix` is Bansal 2022's learnable activation: per layer, A(x) = P1 relu(x) + P2 tanh(x) + P3 sin(x) with
P_i = w_i / sum_j w_j and w_i >= 0 (one set of w per activation layer, shared by its units).

The models build from this registry; `hpo activations` (hpo/tools/activation_properties.py) plots and measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hpo.training.spec import ACTIVATION_NAMES


class Sin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


class Mix(nn.Module):
    """A(x) = sum_i P_i f_i(x) over f = (relu, tanh, sin), P_i = w_i / sum_j w_j, w_i = softplus(v_i).

    Why softplus of a free parameter v rather than w itself clamped after each step: w >= 0 then holds by
    construction for any optimizer, update size or weight decay, with no hook in the training loop (which
    knows nothing of mixtures); clamping would need one, can pin a weight at exactly 0 where its gradient
    vanishes for good, and can zero all three (0/0). softplus is smooth, its gradient never vanishes for
    finite v, and it is close to the identity for w >~ 2, so Adam's steps on v act much like steps on w.
    A weight can get arbitrarily close to 0 (the paper's smallest P is 0.0091: v ~ -4.7) but not reach it.
    """

    BASIS = ("relu", "tanh", "sin")

    def __init__(self, p: Sequence[float] | None = None):
        super().__init__()
        # Equal weights w_i = 1 unless told otherwise (the paper does not say how it starts); P is scale-free,
        # so a given P is stored as w = P / max(P), i.e. the largest weight is 1.
        w = torch.ones(3) if p is None else torch.as_tensor(p, dtype=torch.float32)
        if w.shape != (3,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mix weights must be three non-negative numbers, not all 0, but got {p!r}")
        w = (w / w.max()).clamp_min(1e-6)
        self.v = nn.Parameter(torch.log(torch.expm1(w)))  # softplus^-1(w)

    @property
    def w(self) -> torch.Tensor:
        return F.softplus(self.v)

    def p(self) -> torch.Tensor:
        w = self.w
        return w / w.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p()
        return p[0] * torch.relu(x) + p[1] * torch.tanh(x) + p[2] * torch.sin(x)

    def extra_repr(self) -> str:
        return "P=(" + ", ".join(f"{v:.4f}" for v in self.p().tolist()) + ")"


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
    "mix": lambda opts, width: Mix(opts.get("mix_p")),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "hpo.training.spec.ACTIVATION_NAMES must name ACTIVATIONS' keys"


# The module type each registry entry builds, found once by building each (on the CPU, at import).
ACTIVATION_TYPES = tuple({type(build({}, 1)) for build in ACTIVATIONS.values()})


def make_activation(name: str, width: int, **opts) -> nn.Module:
    return ACTIVATIONS[name](opts, width)


def activation_layers(model: nn.Module) -> list[nn.Module]:
    """The model's activation modules in forward order (for Sequential models: registration order)."""
    return [m for m in model.modules() if isinstance(m, ACTIVATION_TYPES)]


def mixing_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The mixing weights of every `mix` layer (what the paper's second cycle trains alone)."""
    return [m.v for m in model.modules() if isinstance(m, Mix)]


@torch.no_grad()
def mix_p(model: nn.Module) -> list[list[float] | None]:
    """Per activation layer: [P_relu, P_tanh, P_sin] for a mix layer, None for any other activation."""
    return [[round(v, 6) for v in m.p().tolist()] if isinstance(m, Mix) else None for m in activation_layers(model)]

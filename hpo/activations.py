"""Activation functions by name: a plain registry of constructors, the learnable mixture, and what they do.

Each registry entry takes the activation options (a dict of plain values, e.g. {"negative_slope": 0.01})
and the layer width, and returns an nn.Module.

`mix` is Bansal 2022's learnable activation: per layer, A(x) = P1 relu(x) + P2 tanh(x) + P3 sin(x) with
P_i = w_i / sum_j w_j and w_i >= 0 (one set of w per activation layer, shared by its units).

`properties()` and `plot()` back `hpo activations`: each function with its derivative (torch.autograd on a
grid) and the properties the seed texts argue about, measured numerically on a wide grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


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


def make_activation(name: str, width: int, **opts) -> nn.Module:
    return ACTIVATIONS[name](opts, width)


def activation_layers(model: nn.Module) -> list[nn.Module]:
    """The model's activation modules in forward order (for Sequential models: registration order)."""
    types = tuple({type(build({}, 1)) for build in ACTIVATIONS.values()})
    return [m for m in model.modules() if isinstance(m, types)]


def mixing_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The mixing weights of every `mix` layer (what the paper's second cycle trains alone)."""
    return [m.v for m in model.modules() if isinstance(m, Mix)]


@torch.no_grad()
def mix_p(model: nn.Module) -> list[list[float] | None]:
    """Per activation layer: [P_relu, P_tanh, P_sin] for a mix layer, None for any other activation."""
    return [[round(v, 6) for v in m.p().tolist()] if isinstance(m, Mix) else None for m in activation_layers(model)]


# --- what each activation does: `hpo activations` --------------------------------------------------

# Bansal 2022, Table 1, Fashion-MNIST: learned (P_relu, P_tanh, P_sin) per activation layer of its CNN.
PAPER_MIX_FMNIST = ((0.5178, 0.1470, 0.3352), (0.2907, 0.7001, 0.0091), (0.1221, 0.0410, 0.8369))

FORMULAS = {
    "relu": "max(0, x)",
    "leaky_relu": "x if x >= 0 else a x  (a = 0.01)",
    "prelu": "x if x >= 0 else a x  (a learned; 0.25 at init)",
    "elu": "x if x > 0 else exp(x) - 1",
    "gelu": "x Phi(x)",
    "silu": "x sigmoid(x)",
    "tanh": "tanh(x)",
    "sigmoid": "1 / (1 + exp(-x))",
    "sin": "sin(x)",
    "mix": "P1 relu(x) + P2 tanh(x) + P3 sin(x)",
}


def showcase() -> dict[str, nn.Module]:
    """Every registered activation as shown by `hpo activations`; mix with stated P (equal, and the paper's)."""
    out = {name: make_activation(name, 1) for name in ACTIVATIONS if name != "mix"}
    out["mix (P equal, 1/3 each)"] = Mix()
    for i, p in enumerate(PAPER_MIX_FMNIST, 1):
        out[f"mix (P of Bansal FMNIST layer {i})"] = Mix(p)
    return out


def value_and_grad(fn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and f'(x) elementwise, by torch.autograd (float64: the checks below compare at 1e-9)."""
    fn = fn.double()
    x = x.detach().double().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g.detach()


@dataclass(frozen=True)
class Properties:
    name: str
    monotonic: bool  # non-decreasing on the grid
    bounded: bool  # |f| stops growing between the moderate and the wide grid
    smooth: bool  # continuously differentiable (C1): f' has no jump on a fine grid
    unit_slope: bool  # 0 <= f'(x) <= 1 on the whole grid (Urenda, Kreinovich & Kosheleva's condition)
    extremal: bool  # f'(x) in {0, 1} on the whole grid: their optimum, ReLU up to a linear change
    low: float  # min f on the wide grid (-inf when it keeps falling)
    high: float  # max f on the wide grid (+inf when it keeps growing)
    dmin: float
    dmax: float


WIDE, MODERATE, STEP = 1000.0, 50.0, 5e-4
TOL = 1e-9


def properties(name: str, fn: nn.Module) -> Properties:
    """Measured numerically: f and f' on [-1000, 1000] (coarse) and [-50, 50] (step 5e-4).

    Monotonic: f non-decreasing and f' >= 0 on both grids. Bounded: max |f| on the wide grid is no larger
    than on the moderate one (a growing function keeps growing). Smooth (C1): no jump in f' larger than 1e-2
    between neighbouring points 5e-4 apart (a C1 function's f' changes by about |f''| * 5e-4 there).
    A grid cannot prove a property for all x; the grids are wide and fine enough for these functions.
    """
    fine = torch.arange(-MODERATE, MODERATE + STEP / 2, STEP, dtype=torch.float64)
    wide = torch.linspace(-WIDE, WIDE, 400001, dtype=torch.float64)
    yf, gf = value_and_grad(fn, fine)
    yw, gw = value_and_grad(fn, wide)
    g = torch.cat([gf, gw])
    monotonic = bool((yf.diff() >= -TOL).all() and (yw.diff() >= -TOL).all() and (g >= -TOL).all())
    grow_lo = yw.min() < yf.min() - 1e-6 * (1 + yf.min().abs())
    grow_hi = yw.max() > yf.max() + 1e-6 * (1 + yf.max().abs())
    jumps = gf.diff().abs().max().item()
    return Properties(
        name=name,
        monotonic=monotonic,
        bounded=not (grow_lo or grow_hi),
        smooth=jumps < 1e-2,
        unit_slope=bool((g >= -TOL).all() and (g <= 1 + TOL).all()),
        extremal=bool(((g.abs() <= TOL) | ((g - 1).abs() <= TOL)).all()),
        low=-math.inf if grow_lo else yw.min().item(),
        high=math.inf if grow_hi else yw.max().item(),
        dmin=g.min().item(),
        dmax=g.max().item(),
    )


def properties_table(props: list[Properties]):
    """A rich table of the properties, one row per activation."""
    from rich.markup import escape
    from rich.table import Table

    def yes(b: bool) -> str:
        return "[green]yes[/]" if b else "[red]no[/]"

    table = Table(title="Activation functions: properties measured on a grid (x in [-1000, 1000])",
                  title_justify="left", caption="smooth = continuously differentiable (C1); 0<=s'<=1 is the "
                  "fuzzy-logic condition; s' in {0,1} is where its argument says the optimum lies (ReLU-like)",
                  caption_justify="left")
    for col in ("activation", "range", "monotonic", "bounded", "smooth", "0<=s'<=1", "s' in {0,1}", "s' range"):
        table.add_column(col)
    for p in props:
        table.add_row(escape(p.name), escape(_interval(p.low, p.high)), yes(p.monotonic), yes(p.bounded),
                      yes(p.smooth), yes(p.unit_slope), yes(p.extremal), escape(_interval(p.dmin, p.dmax)))
    return table


def properties_markdown(props: list[Properties]) -> str:
    def yn(b: bool) -> str:
        return "yes" if b else "no"

    lines = ["| activation | range | monotonic | bounded | smooth (C1) | 0 <= s' <= 1 | s' in {0,1} | s' range |",
             "|---|---|---|---|---|---|---|---|"]
    for p in props:
        lines.append(f"| {p.name} | {_interval(p.low, p.high)} | {yn(p.monotonic)} | {yn(p.bounded)} | "
                     f"{yn(p.smooth)} | {yn(p.unit_slope)} | {yn(p.extremal)} | {_interval(p.dmin, p.dmax)} |")
    return "\n".join(lines)


def _interval(lo: float, hi: float) -> str:
    """[min, max] on the grid; an end that keeps growing with the grid is shown as an open infinity."""
    left = "(-∞" if lo == -math.inf else f"[{lo:.3g}"
    right = "∞)" if hi == math.inf else f"{hi:.3g}]"
    return f"{left}, {right}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").replace("__", "_")


def plot(fns: dict[str, nn.Module], outdir: Path, lo: float = -5.0, hi: float = 5.0) -> list[Path]:
    """One PNG per activation (f and f' on [lo, hi]) and an overview of all; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    x = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    curves = {name: value_and_grad(fn, x) for name, fn in fns.items()}
    written = []
    for name, (y, g) in curves.items():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        _draw(ax, name, x, y, g)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path = outdir / f"{_slug(name)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    cols = 4
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.9 * rows), squeeze=False)
    for ax, (name, (y, g)) in zip(axes.flat, curves.items()):
        _draw(ax, name, x, y, g)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = outdir / "activations.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def _draw(ax, name, x, y, g) -> None:
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.axhspan(0, 1, color="tab:green", alpha=0.07, lw=0, label="0 <= s' <= 1")
    ax.plot(x, y, label="s(x)", color="tab:blue")
    ax.plot(x, g, label="s'(x)", color="tab:orange", ls="--")
    ax.set_title(name, fontsize=9)
    ax.set_ylim(-2.0, 3.0)

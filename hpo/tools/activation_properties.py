"""`hpo activations`: what each registered activation does.

Each function with its derivative (torch.autograd on a grid), plotted, and the properties the seed texts
argue about (monotonic, bounded, smooth, 0 <= s' <= 1, s' in {0, 1}), measured numerically on a wide grid.
The registry itself lives beside the models (hpo/training/activations.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table
from torch import nn

from hpo.plotting import plt, save
from hpo.results.activation_report import MIX_PAPER
from hpo.search.papers import load_paper
from hpo.training.activations import ACTIVATIONS, Mix, make_activation

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
    for i, p in enumerate(load_paper(MIX_PAPER).mix_weights["fashion_mnist"], 1):
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
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    x = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    curves = {name: value_and_grad(fn, x) for name, fn in fns.items()}
    written = []
    for name, (y, g) in curves.items():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        _draw(ax, name, x, y, g)
        ax.legend(loc="upper left", fontsize=8)
        written.append(save(fig, outdir / f"{_slug(name)}.png"))
    cols = 4
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.9 * rows), squeeze=False)
    for ax, (name, (y, g)) in zip(axes.flat, curves.items()):
        _draw(ax, name, x, y, g)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    written.append(save(fig, outdir / "activations.png", dpi=100))
    return written


def _draw(ax, name, x, y, g) -> None:
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.axhspan(0, 1, color="tab:green", alpha=0.07, lw=0, label="0 <= s' <= 1")
    ax.plot(x, y, label="s(x)", color="tab:blue")
    ax.plot(x, g, label="s'(x)", color="tab:orange", ls="--")
    ax.set_title(name, fontsize=9)
    ax.set_ylim(-2.0, 3.0)

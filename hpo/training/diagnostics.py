"""What a trained network's activations did: dead units and learned mixing weights, recorded on every trial.

Dead units (the dying-ReLU problem): per activation layer, the fraction of units whose output is exactly zero
for every validation sample. A unit is a feature of a fully connected layer and a channel (over all positions)
of a conv layer. Only rectifiers produce exact zeros; smooth activations are essentially never dead.

Learned mixing weights: per `mix` layer, P = (P_relu, P_tanh, P_sin) (hpo/training/activations.py's mix_p);
hpo/results/activation_report.py compares them with Bansal 2022 over seeds.
"""

from __future__ import annotations

import torch
from torch import nn

from hpo.training.activations import activation_layers, mix_p


@torch.inference_mode()
def dead_units(model: nn.Module, x: torch.Tensor, chunk: int = 1024) -> list[float]:
    """Per activation layer, in forward order: the fraction of units that output 0 for every row of x."""
    layers = activation_layers(model)
    alive: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i: int):
        def record(module, inputs, out):
            # units: features of (N, F); channels of (N, C, H, W), over every position
            nonzero = out.transpose(0, 1).reshape(out.shape[1], -1).ne(0).any(1)
            alive[i] = nonzero if alive[i] is None else alive[i] | nonzero
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [round(1.0 - a.float().mean().item(), 5) if a is not None else 0.0 for a in alive]


def trial_attrs(model: nn.Module, x: torch.Tensor) -> dict:
    """What the objective records on every trial: dead_units, and mix_p when any layer is a mix."""
    attrs: dict = {"dead_units": dead_units(model, x)}
    p = mix_p(model)
    if any(v is not None for v in p):
        attrs["mix_p"] = p
    return attrs

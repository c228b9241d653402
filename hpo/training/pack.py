"""Trial packs: K same-shape MLPs trained at once as one stacked computation (batched matrix products).

At this project's sizes (784-64-64-10, batches of 32-256) a training step is mostly per-operation overhead, not
arithmetic; stacking K models into (K, in, out) weights and `torch.baddbmm` pays that overhead once for K.
HFTA (Wang et al., MLSys 2021) fuses trials the same way, partitioned by what changes shapes.

What a pack shares (`pack_key`): the model kind (plain MLPs only), the depth, the batch size, the optimizer and
the activation(s). Everything else is each member's own: widths (padded to the largest and masked, so that a
member computes exactly its own network: padded units output 0 and receive no gradient), learning rate and
schedule (constant, cosine, one-cycle: computed as torch's schedulers compute them), weight decay, momentum,
negative slopes (per layer), dropout, label smoothing, augmentation, epochs (a member that is done leaves the
pack, which is compacted), and seed: each member is initialised by `build_model` from its own seed, exactly as
it would be alone, and draws its own batch order (and augmentation) from its own generators. Its optimizer is torch's update rule written for stacked
tensors, with one learning rate (and beta1 or momentum) per member.

Like `train()`, this knows nothing of Optuna: `on_epoch(member, epoch, acc)` may raise to stop one member (the
exception is kept on its result as `stopped_by`); divergence stops a member alone. Results are ordinary
TrainResults whose `model` is the member's own nn.Sequential with its trained weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hpo.data import Splits
from hpo.training.augment import Shifter, draw, generator
from hpo.training.config import TrainConfig, TrainResult, _kernel, cycles_momentum
from hpo.training.models import build_model, count_params

# Activations without parameters of their own, as functions of (x, negative_slope per member).
PACKABLE_ACTIVATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda x, slope: torch.relu(x),
    "leaky_relu": lambda x, slope: torch.where(x >= 0, x, x * slope),
    "elu": lambda x, slope: F.elu(x),
    "gelu": lambda x, slope: F.gelu(x),
    "silu": lambda x, slope: F.silu(x),
    "tanh": lambda x, slope: torch.tanh(x),
    "sigmoid": lambda x, slope: torch.sigmoid(x),
    "sin": lambda x, slope: torch.sin(x),
}
_threshold_backward = torch.ops.aten.threshold_backward
ZERO_AT_ZERO = {"relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sin"}  # f(0) = 0 and f'(0) finite
STACKED_OPTIMIZERS = ("sgd", "sgd_momentum", "adam", "adamw")
ONECYCLE = {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4, "base_momentum": 0.85,
            "max_momentum": 0.95}  # torch.optim.lr_scheduler.OneCycleLR's defaults


def _acts(cfg: TrainConfig) -> tuple[str, ...]:
    return (cfg.activation,) * len(cfg.widths) if isinstance(cfg.activation, str) else tuple(cfg.activation)


def _slopes(cfg: TrainConfig) -> tuple[float, ...]:
    s = cfg.negative_slope
    return tuple(s) if isinstance(s, tuple) else (s,) * len(cfg.widths)


def packable(cfg: TrainConfig) -> bool:
    """Whether `cfg` can train in a pack: a plain MLP with parameter-free activations, no three-cycle schedule."""
    return (cfg.model == "mlp" and not cfg.cycle_epochs and cfg.optimizer in STACKED_OPTIMIZERS
            and all(a in PACKABLE_ACTIVATIONS for a in _acts(cfg)))


def pack_key(cfg: TrainConfig) -> tuple | None:
    """What members of one pack must share; None when `cfg` trains alone."""
    if not packable(cfg):
        return None
    return (cfg.model, len(cfg.widths), cfg.batch_size, cfg.optimizer, _acts(cfg))


# --- schedules ----------------------------------------------------------------------------------


def _annealing_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def schedule(cfg: TrainConfig, total_steps: int) -> tuple[list[float], list[float] | None]:
    """Per step: the learning rate and (one-cycle only) the cycled momentum / beta1, as torch's schedulers
    (CosineAnnealingLR, OneCycleLR with their defaults) give them to the optimizer for steps 0..total-1."""
    T = max(total_steps, 1)
    if cfg.schedule == "constant":
        return [cfg.lr] * T, None
    if cfg.schedule == "cosine":
        return [cfg.lr * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)], None
    if cfg.schedule == "onecycle":
        c = ONECYCLE
        initial = cfg.lr / c["div_factor"]
        phases = ((float(c["pct_start"] * T) - 1, initial, cfg.lr, c["max_momentum"], c["base_momentum"]),
                  (float(T - 1), cfg.lr, initial / c["final_div_factor"], c["base_momentum"], c["max_momentum"]))
        lrs, moms = [], []
        for t in range(T):
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
                if t <= end or i == len(phases) - 1:
                    pct = (t - start) / (end - start)
                    lrs.append(_annealing_cos(lr0, lr1, pct))
                    moms.append(_annealing_cos(m0, m1, pct))
                    break
                start = end
        return lrs, (moms if cycles_momentum(cfg) else None)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


# --- the stacked network ------------------------------------------------------------------------


class StackedMLP:
    """K plain MLPs as padded (K, in, out) weights, (K, 1, out) biases and (K, 1, out) masks per layer."""

    def __init__(self, models: Sequence[nn.Sequential], cfgs: Sequence[TrainConfig], device):
        self.cfgs = list(cfgs)
        layers = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
        depth = len(layers[0])
        dims = [[lin.in_features for lin in ls[:1]] + [lin.out_features for lin in ls] for ls in layers]
        self.dims = [max(d[i] for d in dims) for i in range(depth + 1)]
        k = len(models)
        self.weights, self.biases, self.masks = [], [], []
        for i in range(depth):
            w = torch.zeros(k, self.dims[i], self.dims[i + 1])
            b = torch.zeros(k, 1, self.dims[i + 1])
            mask = torch.zeros(k, 1, self.dims[i + 1])
            for j, ls in enumerate(layers):
                lin = ls[i]
                w[j, :lin.in_features, :lin.out_features] = lin.weight.detach().t()
                b[j, 0, :lin.out_features] = lin.bias.detach()
                mask[j, 0, :lin.out_features] = 1.0
            self.weights.append(w.to(device).requires_grad_(True))
            self.biases.append(b.to(device).requires_grad_(True))
            self.masks.append(mask.to(device))
        self.acts = [PACKABLE_ACTIVATIONS[a] for a in _acts(cfgs[0])]
        # A padded unit has zero weights and bias, so its pre-activation is 0: only an activation that is not 0
        # at 0 (sigmoid) needs the mask to keep it silent.
        self.masked = [a not in ZERO_AT_ZERO for a in _acts(cfgs[0])]
        self.slopes = [self._column([_slopes(c)[i] for c in cfgs], device) for i in range(depth - 1)]  # per layer
        self.keep = self._column([1.0 - c.dropout for c in cfgs], device)
        self.any_dropout = any(c.dropout > 0 for c in cfgs)

    @staticmethod
    def _column(values, device) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)

    def parameters(self) -> list[torch.Tensor]:
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """x: (K, B, in) → logits (K, B, out). A padded unit outputs 0 (masked where the activation is not 0 at 0:
        sigmoid(0) = 0.5), so it feeds nothing forward and its weights get no gradient back."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = self.acts[i](h, self.slopes[i])
                if self.masked[i]:
                    h = h * self.masks[i]
                if training and self.any_dropout:  # each member its own rate; keep = 1 is a no-op for it
                    h = h * torch.bernoulli(self.keep.expand_as(h)) / self.keep
        return h

    @property
    def relu(self) -> bool:
        """Every hidden activation is ReLU: the hand-written step (`fast_step`) applies."""
        return all(a is PACKABLE_ACTIVATIONS["relu"] for a in self.acts)

    @torch.no_grad()
    def fast_step(self, x: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
        """Forward, loss and backward of a ReLU pack without autograd, as hpo.training.fastmlp does for one model:
        every weight's and bias's .grad is written in place (out=), for the optimizer to consume. Returns each
        member's mean loss (K,). Dropout draws as `forward` does; smoothing is each member's label smoothing."""
        inputs, h, last = [], x, len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            inputs.append(h)
            h = torch.baddbmm(b, h, w)
            if i < last:
                h.relu_()
                if self.any_dropout:
                    h = h * (torch.bernoulli(self.keep.expand_as(h)) / self.keep)
        k, batch, classes = h.shape
        logp = torch.log_softmax(h, dim=-1)
        eps = smoothing.view(k, 1, 1)
        losses = (1 - smoothing) * -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1) \
            + smoothing * -logp.mean(-1).mean(-1)
        # d(mean loss)/d(logits) = (softmax - target) / batch, target = (1 - eps) one-hot + eps / classes
        g = logp.exp_()  # the losses are computed already: logp may become the softmax in place
        g.sub_(eps / classes)
        g.scatter_add_(-1, y.unsqueeze(-1), (eps - 1).expand(k, batch, 1))
        g.div_(batch)
        for i in range(last, -1, -1):
            w, b = self.weights[i], self.biases[i]
            torch.bmm(inputs[i].transpose(1, 2), g, out=w.grad)
            torch.sum(g, 1, keepdim=True, out=b.grad)
            if i > 0:
                g = torch.bmm(g, w.transpose(1, 2))
                # The layer below's output is relu(a) * noise: nonzero exactly where gradient flows through both.
                g = _threshold_backward(g, inputs[i], 0)
                if self.any_dropout:
                    g.div_(self.keep)
        return losses

    def keep_members(self, rows: list[int]) -> None:
        """Compact the pack to `rows` (indices into the current members)."""
        idx = torch.tensor(rows, device=self.weights[0].device)
        with torch.no_grad():
            self.weights = [w.index_select(0, idx).requires_grad_(True) for w in self.weights]
            self.biases = [b.index_select(0, idx).requires_grad_(True) for b in self.biases]
        self.masks = [m.index_select(0, idx) for m in self.masks]
        self.slopes = [s.index_select(0, idx) for s in self.slopes]
        self.keep = self.keep.index_select(0, idx)
        self.cfgs = [self.cfgs[r] for r in rows]
        self.any_dropout = any(c.dropout > 0 for c in self.cfgs)

    @torch.no_grad()
    def write_back(self, row: int, model: nn.Sequential) -> nn.Sequential:
        """Copy member `row`'s trained weights (unpadded) into its own network."""
        for i, lin in enumerate(m for m in model if isinstance(m, nn.Linear)):
            lin.weight.copy_(self.weights[i][row, :lin.in_features, :lin.out_features].t())
            lin.bias.copy_(self.biases[i][row, 0, :lin.out_features])
        return model

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Each member's accuracy on (x, y), shared by all: a (K,) tensor."""
        k = self.weights[0].shape[0]
        correct = torch.zeros(k, dtype=torch.long, device=x.device)
        for i in range(0, len(x), chunk):
            xs = x[i:i + chunk]
            logits = self.forward(xs.unsqueeze(0).expand(k, *xs.shape), training=False)
            correct += (logits.argmax(-1) == y[i:i + chunk]).sum(-1)
        return correct.double() / max(len(x), 1)


def member_losses(logits: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor,
                  shared: float | None = None) -> torch.Tensor:
    """Each member's mean cross-entropy with its own label smoothing, as nn.CrossEntropyLoss computes it:
    (1 - eps) nll + eps mean over classes of -log p. logits (K, B, C), y (K, B), smoothing (K,) → (K,).
    `shared`: the one smoothing every member has, if so (then one fused cross-entropy does it)."""
    k, b, c = logits.shape
    if shared is not None:
        return F.cross_entropy(logits.reshape(k * b, c), y.reshape(k * b), label_smoothing=shared,
                               reduction="none").view(k, b).mean(-1)
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
    smooth = -logp.mean(-1).mean(-1)
    return (1 - smoothing) * nll + smoothing * smooth


class MemberOptimizer:
    """torch's own optimizer (its fused kernels, its exact update rule) over per-member views of the stacked
    parameters: one param group per member, with that member's learning rate, weight decay and momentum (beta1
    for Adam), set before every step from its schedule. The stacked parameters keep one gradient buffer each,
    zeroed in place, so that every member's views stay valid."""

    def __init__(self, kind: str, stacked: list[torch.Tensor], cfgs: Sequence[TrainConfig],
                 state: list[list[dict]] | None = None):
        self.kind, self.stacked = kind, stacked
        for p in stacked:
            p.grad = torch.zeros_like(p)
        self.views = [[p.detach()[k] for p in stacked] for k in range(len(cfgs))]
        for k, vs in enumerate(self.views):
            for v, p in zip(vs, stacked):
                v.grad = p.grad[k]
        groups = [{"params": vs, "lr": c.lr, "weight_decay": c.weight_decay} for vs, c in zip(self.views, cfgs)]
        kernel = _kernel(stacked)
        if kind in ("sgd", "sgd_momentum"):
            for g, c in zip(groups, cfgs):
                g["momentum"] = c.momentum if kind == "sgd_momentum" else 0.0
            self.opt = torch.optim.SGD(groups, lr=cfgs[0].lr, nesterov=False, **kernel)
        else:
            self.opt = (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(groups, lr=cfgs[0].lr, **kernel)
        for vs, saved in zip(self.views, state or []):
            for v, st in zip(vs, saved):
                if st:
                    self.opt.state[v] = st

    def zero_grad(self) -> None:
        for p in self.stacked:
            p.grad.zero_()

    def step(self, lrs: Sequence[float], moms: Sequence[float] | None) -> None:
        for k, g in enumerate(self.opt.param_groups):
            g["lr"] = lrs[k]
            if moms is not None:  # one-cycle cycles momentum (beta1), as OneCycleLR does
                if "betas" in g:
                    g["betas"] = (moms[k], g["betas"][1])
                else:
                    g["momentum"] = moms[k]
        self.opt.step()

    def member_state(self, k: int) -> list[dict]:
        return [self.opt.state.get(v, {}) for v in self.views[k]]


# --- the loop -----------------------------------------------------------------------------------


def _base_momentum(cfg: TrainConfig) -> float:
    """The momentum (beta1 for Adam and AdamW) a config trains with when no schedule cycles it."""
    if cfg.optimizer in ("adam", "adamw"):
        return 0.9  # torch.optim.Adam's default beta1, which hpo's optimizers keep
    return cfg.momentum if cfg.optimizer == "sgd_momentum" else 0.0


def _check(cfgs: Sequence[TrainConfig]) -> None:
    keys = {pack_key(c) for c in cfgs}
    if None in keys:
        bad = next(c for c in cfgs if pack_key(c) is None)
        raise ValueError(f"cannot pack {bad.model} {bad.optimizer} {bad.activation!r} (cycle_epochs "
                         f"{bad.cycle_epochs}): packs take plain MLPs with parameter-free activations")
    if len(keys) > 1:
        raise ValueError(f"a pack's members must share model, depth, batch size, optimizer and activations, "
                         f"but got {sorted(map(str, keys))}")


def train_pack(cfgs: Sequence[TrainConfig], data: Splits, *, threads: int | None = None,
               max_seconds: float | None = None, on_epoch: Callable[[int, int, float], None] | None = None,
               check_every: int = 50, models: Sequence[nn.Module] | None = None,
               fast: bool = True) -> list[TrainResult]:
    """Train every config in `cfgs` at once on data.train_*, evaluating each on data.eval_* after every epoch.
    A ReLU pack trains through the hand-written step (`StackedMLP.fast_step`) unless fast=False; any other
    activation through autograd over the same stacked computation.

    Returns one TrainResult per config, in order; a member stopped by `on_epoch` has status "stopped" and the
    exception in `stopped_by`. A time cap (`max_seconds`) covers the pack: every member still training is
    stopped by it."""
    _check(cfgs)
    if threads:
        torch.set_num_threads(threads)
    device = data.train_x.device
    models = list(models) if models is not None else [build_model(c, data.input_shape, data.n_classes) for c in cfgs]
    net = StackedMLP(models, cfgs, device)
    opt = MemberOptimizer(cfgs[0].optimizer, net.parameters(), cfgs)
    n = len(data.train_x)
    bs = min(cfgs[0].batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    # Per member and step: learning rate and (one-cycle) momentum, as python floats, as torch's schedulers give.
    plans = [schedule(c, steps_per_epoch * c.epochs) for c in cfgs]
    cycled = any(m is not None for _, m in plans)
    if cycled:  # members without one-cycle keep their own momentum (beta1) at every step
        plans = [(lrs, moms if moms is not None else [_base_momentum(c)] * len(lrs)) for (lrs, moms), c in zip(plans, cfgs)]
    eps_all = [c.label_smoothing for c in cfgs]
    eps = torch.tensor(eps_all, dtype=torch.float32, device=device)
    shared_eps = eps_all[0] if len(set(eps_all)) == 1 else None
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]  # on the CPU: the batch order of a lone run
    # Augmentation (hpo.training.augment): each augmenting member draws from its own generator, as it would
    # alone; one index table for the largest shift serves all (a member without augmentation keeps its images).
    augmenting = [c.augment != "none" for c in cfgs]
    shifter = (Shifter(data.input_shape, max(c.augment_shift for c, a in zip(cfgs, augmenting) if a), data.train_x.min().item(),
                       device) if any(augmenting) else None)
    aug_gens = [generator(c.seed) if a else None for c, a in zip(cfgs, augmenting)]
    results = [TrainResult(m, "complete", "", count_params(m), 0) for m in models]
    members = list(range(len(cfgs)))  # original indices of the members still training, in stacked order
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds else math.inf
    eval_seconds, t = 0.0, 0
    for epoch in range(1, max(c.epochs for c in cfgs) + 1):
        perms = torch.stack([torch.randperm(n, generator=gens[j], device="cpu") for j in members]).to(device)
        if shifter is not None:
            codes = torch.stack([shifter.codes(draw(cfgs[j].augment, cfgs[j].augment_shift, n, aug_gens[j])
                                               if augmenting[j] else torch.zeros(n, 3, dtype=torch.long))
                                 for j in members])
        loss_sum = torch.zeros(len(members), device=device)
        stopped: dict[int, tuple[str, str]] = {}  # stacked row -> (status, reason)
        seen = 0
        for step, i in enumerate(range(0, n, bs), 1):
            idx = perms[:, i:i + bs]
            xb = data.train_x.index_select(0, idx.reshape(-1))
            if shifter is not None:
                xb = shifter(xb, codes[:, i:i + bs].reshape(-1))
            xb = xb.view(len(members), idx.shape[1], -1)
            yb = data.train_y.index_select(0, idx.reshape(-1)).view(len(members), idx.shape[1])
            if fast and net.relu:
                losses = net.fast_step(xb, yb, eps)  # writes every .grad
            else:
                losses = member_losses(net.forward(xb, training=True), yb, eps, shared_eps)
                opt.zero_grad()
                losses.sum().backward()  # each member's gradient is that of its own mean loss
            opt.step([plans[j][0][t] for j in members], [plans[j][1][t] for j in members] if cycled else None)
            t += 1
            loss_sum += losses.detach()
            seen += idx.shape[1]
            if step % check_every == 0 or step == steps_per_epoch:  # tolist() is a sync point
                for r, ok in enumerate(torch.isfinite(loss_sum).tolist()):
                    if not ok and r not in stopped:
                        stopped[r] = ("diverged", f"loss became {loss_sum[r].item()} in epoch {epoch}, step {step}")
            if time.perf_counter() > deadline:
                for r in range(len(members)):
                    stopped.setdefault(r, ("time_cap", f"stopped at the {max_seconds:g}s time cap in epoch {epoch}"))
            if len(stopped) == len(members):
                break
        t += steps_per_epoch - step  # a pack that stopped early keeps its schedule rows aligned
        t0 = time.perf_counter()
        live = [r for r in range(len(members)) if r not in stopped]
        accs = net.accuracy(data.eval_x, data.eval_y).tolist() if live else []
        mean_loss = (loss_sum / steps_per_epoch).tolist()
        eval_seconds += time.perf_counter() - t0
        leaving = set(stopped)
        for r in range(len(members)):
            results[members[r]].samples += seen
        for r, (status, reason) in stopped.items():
            results[members[r]].status, results[members[r]].reason = status, reason
        for r in live:
            j = members[r]
            res = results[j]
            res.epochs = epoch
            res.eval_curve.append(accs[r])
            res.loss_curve.append(mean_loss[r])
            res.train_seconds = time.perf_counter() - start - eval_seconds
            if on_epoch is not None:
                try:
                    on_epoch(j, epoch, accs[r])
                except Exception as e:  # the caller's word: this member stops here, the others go on
                    res.status, res.reason, res.stopped_by = "stopped", str(e), e
                    leaving.add(r)
                    continue
            if epoch >= cfgs[j].epochs:
                leaving.add(r)
        for r in leaving:
            j = members[r]
            results[j].model = net.write_back(r, models[j]).to(device)
            results[j].train_seconds = time.perf_counter() - start - eval_seconds
        keep = [r for r in range(len(members)) if r not in leaving]
        if not keep:
            break
        if leaving:  # compact: the stacked tensors, the optimizer (with each kept member's state), the tables
            state = [opt.member_state(r) for r in keep]
            net.keep_members(keep)
            members = [members[r] for r in keep]
            opt = MemberOptimizer(cfgs[0].optimizer, net.parameters(), [cfgs[j] for j in members], state)
            eps = eps.index_select(0, torch.tensor(keep, device=device))
    return results

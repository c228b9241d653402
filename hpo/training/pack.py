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
it would be alone, and draws its own batch order (and augmentation) from its own generators. Its optimizer is
torch's update rule written for stacked tensors, with one learning rate (and beta1 or momentum) per member.

Like `train()`, this knows nothing of Optuna: `on_epoch(member, epoch, acc)` may raise to stop one member (the
exception is kept on its result as `stopped_by`); divergence stops a member alone. Results are ordinary
TrainResults whose `model` is the member's own nn.Sequential with its trained weights.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hpo.data import Splits
from hpo.training.augment import Shifter, draw, generator
from hpo.training.fastmlp import relu_mlp_step
from hpo.training.models import build_model, count_params
from hpo.training.runtime import TrainResult, set_threads
from hpo.training.spec import TrainConfig, cycles_momentum

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
ZERO_AT_ZERO = {"relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sin"}  # f(0) = 0 and f'(0) finite
STACKED_OPTIMIZERS = ("sgd", "sgd_momentum", "adam", "adamw")
ONECYCLE = {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4, "base_momentum": 0.85,
            "max_momentum": 0.95}  # torch.optim.lr_scheduler.OneCycleLR's defaults


_DROPOUT_SEED_OFFSET = 0x5EED_D0  # a member's dropout generator: its own seed, apart from its batch order's


def dropout_generator(seed: int, device) -> torch.Generator:
    """The generator a member with this seed draws its dropout noise from, alone or in any pack."""
    return torch.Generator(device=device).manual_seed(seed + _DROPOUT_SEED_OFFSET)


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
        src = layers[0][0].weight.device  # assembled where the members' weights are, then moved to `device`
        for i in range(depth):
            w = torch.zeros(k, self.dims[i], self.dims[i + 1], device=src)
            b = torch.zeros(k, 1, self.dims[i + 1], device=src)
            mask = torch.zeros(k, 1, self.dims[i + 1], device=src)
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
        self.slopes = [_column([_slopes(c)[i] for c in cfgs], device) for i in range(depth - 1)]  # per layer
        self.keep = _column([1.0 - c.dropout for c in cfgs], device)
        self.any_dropout = any(c.dropout > 0 for c in cfgs)
        # Each member draws its dropout noise from its own generator, seeded from its own seed: what it draws does
        # not depend on its pack-mates (the global generator would interleave their draws).
        self.drop_gens = [dropout_generator(c.seed, device) if c.dropout > 0 else None for c in cfgs]

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
                    h = h * self.noise(i, h)
        return h

    def noise(self, i: int, h: torch.Tensor) -> torch.Tensor | None:
        """Hidden layer i's dropout multipliers for h (K, B, width): 0 or 1 / keep, each member drawing from its own
        generator (ones for a member without dropout); None when no member drops out."""
        if not self.any_dropout:
            return None
        m = torch.empty_like(h)
        for r, gen in enumerate(self.drop_gens):
            if gen is None:
                m[r].fill_(1.0)
            else:
                m[r].bernoulli_(1.0 - self.cfgs[r].dropout, generator=gen)
        return m.div_(self.keep)

    @property
    def relu(self) -> bool:
        """Every hidden activation is ReLU: the hand-written step (`fast_step`) applies."""
        return all(a is PACKABLE_ACTIVATIONS["relu"] for a in self.acts)

    def fast_step(self, x: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
        """Forward, loss and backward of a ReLU pack without autograd (`relu_mlp_step`, the project's one
        hand-written step): every weight's and bias's .grad is written in place. Returns each member's mean loss
        (K,). Dropout draws as `forward` does; smoothing is each member's label smoothing."""
        params = self.weights, self.biases
        return relu_mlp_step(*params, [w.grad for w in self.weights], [b.grad for b in self.biases], x, y, smoothing,
                             self.noise)

    def keep_members(self, rows: list[int]) -> None:
        """Compact the pack to `rows` (indices into the current members)."""
        idx = torch.tensor(rows, device=self.weights[0].device)
        with torch.no_grad():
            self.weights = [w.index_select(0, idx).requires_grad_(True) for w in self.weights]
            self.biases = [b.index_select(0, idx).requires_grad_(True) for b in self.biases]
        self.masks = [m.index_select(0, idx) for m in self.masks]
        self.slopes = [s.index_select(0, idx) for s in self.slopes]
        self.keep = self.keep.index_select(0, idx)
        self.drop_gens = [self.drop_gens[r] for r in rows]
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


class StackedOptimizer:
    """torch's update rules (Adam, AdamW, SGD with or without momentum, as torch.optim computes them) for stacked
    (K, ...) parameters, one update for the whole pack, as HFTA's fused optimizers do: each member's learning rate,
    momentum (beta1 for Adam and AdamW) and weight decay are (K, 1, 1) tensors broadcast over its slice. Every
    operation is elementwise, so a member's update does not depend on its pack-mates. Each parameter keeps one
    gradient buffer (`.grad`), which the hand-written step writes in place and autograd accumulates into."""

    BETA2, EPS = 0.999, 1e-8  # torch.optim.Adam's defaults, which hpo's optimizers keep

    def __init__(self, kind: str, params: list[torch.Tensor], cfgs: Sequence[TrainConfig]):
        if kind not in STACKED_OPTIMIZERS:
            raise ValueError(f"no stacked optimizer {kind!r}; known: {', '.join(STACKED_OPTIMIZERS)}")
        device = params[0].device
        self.kind, self.steps = kind, 0
        self._scratch: dict[tuple, torch.Tensor] = {}
        self.weight_decay = _column([c.weight_decay for c in cfgs], device)
        self.decays = any(c.weight_decay for c in cfgs)
        self.momentum = _column([_base_momentum(c) for c in cfgs], device)
        n_state = {"sgd": 0, "sgd_momentum": 1}.get(kind, 2)  # momentum buffer; Adam's exp_avg, exp_avg_sq
        self.state = [[torch.zeros_like(p) for _ in range(n_state)] for p in params]
        self.attach(params)

    def attach(self, params: list[torch.Tensor]) -> None:
        self.params = params
        for p in params:
            p.grad = torch.zeros_like(p)

    def _buffer(self, p: torch.Tensor, i: int) -> torch.Tensor:
        """Scratch tensor i of p's shape, reused across steps (remade when a compaction changes the shape)."""
        key = (p.shape, i)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = torch.empty_like(p)
        return buf

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.zero_()

    def keep(self, rows: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Keep members `rows` (their state, hyperparameters and step count) over the compacted `params`."""
        self.weight_decay = self.weight_decay.index_select(0, rows)
        self.momentum = self.momentum.index_select(0, rows)
        self.state = [[s.index_select(0, rows) for s in st] for st in self.state]
        self.attach(params)

    @torch.no_grad()
    def step(self, lr: torch.Tensor, momentum: torch.Tensor | None = None) -> None:
        """One update of every member: lr (K,) this step's learning rates; momentum (K,) this step's momentum or
        beta1 where a schedule cycles it, else each member's own."""
        self.steps += 1
        lr = lr.view(-1, 1, 1)
        mom = momentum.view(-1, 1, 1) if momentum is not None else self.momentum
        wd = self.weight_decay
        if self.kind in ("adam", "adamw"):
            step_size = lr / (1 - mom ** self.steps)
            bias2_sqrt = math.sqrt(1 - self.BETA2 ** self.steps)
            for p, (avg, avg_sq) in zip(self.params, self.state):
                g = p.grad
                if self.kind == "adamw":
                    if self.decays:
                        p.mul_(1 - lr * wd)
                elif self.decays:
                    g = g + wd * p
                avg.lerp_(g, 1 - mom)
                avg_sq.mul_(self.BETA2).addcmul_(g, g, value=1 - self.BETA2)
                # torch's sqrt(v) / bias2_sqrt + eps and step_size * m / denom, in place: the same floats, without
                # allocating three parameter-sized tensors per parameter and step
                denom = torch.sqrt(avg_sq, out=self._buffer(p, 0)).div_(bias2_sqrt).add_(self.EPS)
                p.sub_(torch.mul(avg, step_size, out=self._buffer(p, 1)).div_(denom))
        else:
            for p, st in zip(self.params, self.state):
                d = p.grad + wd * p if self.decays else p.grad
                if st:  # torch's first step sets the buffer to d: 0 * momentum + d is d
                    d = st[0].mul_(mom).add_(d)
                p.sub_(lr * d)


def _column(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def schedule_table(cfgs: Sequence[TrainConfig], steps_per_epoch: int,
                   device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every member's learning rate and (where any member's one-cycle cycles it) momentum / beta1 at every step,
    as (K, steps) tensors, one column per step; a member with fewer epochs keeps its last value (it has left by
    then). Members that do not cycle momentum keep their own at every step."""
    plans = [schedule(c, steps_per_epoch * c.epochs) for c in cfgs]
    total = max(len(lrs) for lrs, _ in plans)

    def table(rows):
        return torch.tensor([r + [r[-1]] * (total - len(r)) for r in rows], dtype=torch.float32, device=device)
    lrs = table([lrs for lrs, _ in plans])
    if all(m is None for _, m in plans):
        return lrs, None
    return lrs, table([m if m is not None else [_base_momentum(c)] * len(lrs_) for (lrs_, m), c in zip(plans, cfgs)])


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
    set_threads(threads)
    device = data.train_x.device
    models = list(models) if models is not None else [build_model(c, data.input_shape, data.n_classes) for c in cfgs]
    net = StackedMLP(models, cfgs, device)
    opt = StackedOptimizer(cfgs[0].optimizer, net.parameters(), cfgs)
    n = len(data.train_x)
    bs = min(cfgs[0].batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    # Per member and step: learning rate and (one-cycle) momentum, as torch's schedulers give them, in two tables.
    lr_table, mom_table = schedule_table(cfgs, steps_per_epoch, device)
    eps_all = [c.label_smoothing for c in cfgs]
    eps = torch.tensor(eps_all, dtype=torch.float32, device=device)
    shared_eps = eps_all[0] if len(set(eps_all)) == 1 else None
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]  # on the CPU: the batch order of a lone run
    # Augmentation (hpo.training.augment): each augmenting member draws from its own generator, as it would
    # alone; one index table for the largest shift serves all (a member without augmentation keeps its images).
    augmenting = [c.augment != "none" for c in cfgs]
    widest = max((c.augment_shift for c, a in zip(cfgs, augmenting) if a), default=0)
    shifter = Shifter(data.input_shape, widest, data.train_x.min().item(), device) if any(augmenting) else None
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
            opt.step(lr_table[:, t], mom_table[:, t] if mom_table is not None else None)
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
            rows = torch.tensor(keep, device=device)
            net.keep_members(keep)
            members = [members[r] for r in keep]
            opt.keep(rows, net.parameters())
            eps = eps.index_select(0, rows)
            lr_table = lr_table.index_select(0, rows)
            mom_table = mom_table.index_select(0, rows) if mom_table is not None else None
    return results


# --- choosing K -----------------------------------------------------------------------------------

AUTO_CANDIDATES = (1, 2, 4, 8, 16)


def _step_rate(cfg: TrainConfig, k: int, n_in: int, n_out: int, device, steps: int) -> float:
    """Model-samples per second of K copies of cfg's network at its batch size: the batch gather, the stacked step
    and the optimizer update, as train_pack runs them, on random data. From the median step time, so that a step
    the scheduler pre-empted on a busy machine does not decide."""
    cfgs = [cfg.replace(seed=cfg.seed + j) for j in range(k)]
    net = StackedMLP([build_model(c, n_in, n_out) for c in cfgs], cfgs, device)
    opt = StackedOptimizer(cfg.optimizer, net.parameters(), cfgs)
    bs = cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    pool_x = torch.randn(4 * bs, n_in, generator=gen).to(device)
    pool_y = torch.randint(0, n_out, (4 * bs,), generator=gen).to(device)
    idx = torch.randint(0, 4 * bs, (k, bs), generator=gen).to(device)
    lr, eps = torch.full((k,), cfg.lr, device=device), torch.zeros(k, device=device)
    times = []
    for s in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        xb = pool_x.index_select(0, idx.view(-1)).view(k, bs, n_in)
        yb = pool_y.index_select(0, idx.view(-1)).view(k, bs)
        if net.relu:
            net.fast_step(xb, yb, eps)
        else:
            opt.zero_grad()
            member_losses(net.forward(xb, training=True), yb, eps).sum().backward()
        opt.step(lr * 1e-3)  # small steps: the timing must not meet a diverged network
        if device != "cpu" and torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        if s >= 2:
            times.append(time.perf_counter() - t0)
    return k * bs / max(statistics.median(times), 1e-9)


def calibrate_pack(cfg: TrainConfig, n_in: int, n_out: int, device="cpu", *, threads: int | None = None,
                   candidates: Sequence[int] = AUTO_CANDIDATES, steps: int = 20, margin: float = 1.1) -> int:
    """`--pack auto`'s K for cfg's shape and batch size: the candidate with the most model-samples per second in
    a short timing of the real step (well under a second at these sizes), where a larger K must beat the best
    smaller one by `margin` to be taken: a pack that is not clearly faster than K = 1 is not chosen."""
    set_threads(threads)
    best_k, best = 1, 0.0
    for k in candidates:
        rate = _step_rate(cfg, k, n_in, n_out, device, steps)
        if k == 1 or rate > best * margin:
            best_k, best = k, rate
    return best_k

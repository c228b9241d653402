"""Augmentation of training batches: random translations (and horizontal flips) of whole batch tensors.

A batch is the flat (B, C*H*W) tensor training sees, one image per row. Each image is moved by
(dy, dx) pixels, both drawn uniformly from -shift..shift, the pixels shifted in from outside taking the
background value (`fill`); with shift_flip it is also mirrored left to right half the time (Fashion-MNIST's
classes are left-right symmetric). All of it is one `gather` per batch: every possible (dy, dx, flip) is a
row of a precomputed index table, the batch's rows pick theirs, and an extra input column holds the fill for
pixels that come from outside the image. No per-sample code, no PIL.

The draws come from the run's own generator (`generator(seed)`), on the CPU so that a seed gives the same
augmentation on any device, one (dy, dx, flip) per position of the epoch, drawn when the epoch starts. It is not
the generator of the batch order: a run without augmentation draws exactly what it drew before this existed.
Validation and test data are never augmented (the training loop calls this on training batches only).
"""

from __future__ import annotations

import math

import torch

from hpo.training.spec import AUGMENTS, MAX_SHIFT  # noqa: F401  (re-exported)

_SEED_OFFSET = 0x6175676D  # "augm": keeps this stream apart from the batch order's generator on the same seed


def generator(seed: int) -> torch.Generator:
    """The augmentation's generator for a run with this seed (on the CPU)."""
    return torch.Generator().manual_seed(seed + _SEED_OFFSET)


def draw(kind: str, shift: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3) int64 on the CPU: dy, dx, flip (0 or 1) for n images; one randint call per epoch."""
    if kind not in AUGMENTS or kind == "none":
        raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTS[1:])}")
    span = 2 * shift + 1
    flips = 2 if kind == "shift_flip" else 1
    code = torch.randint(0, span * span * flips, (n,), generator=gen, device="cpu")
    return torch.stack((code // span % span - shift, code % span - shift, code // (span * span)), dim=1)


def image_shape(shape) -> tuple[int, int, int]:
    """(C, H, W) of the images a batch row holds: a shape as it is, a flat size as one square channel."""
    if isinstance(shape, int):
        side = math.isqrt(shape)
        if side * side != shape:
            raise ValueError(f"augmentation needs images, but a row has {shape} values")
        return 1, side, side
    if len(shape) != 3:
        raise ValueError(f"augmentation shifts and flips images, but the samples have shape {list(shape)}")
    return tuple(shape)


class Shifter:
    """The index table for shifts up to `max_shift` (and flips) of (C, H, W) images, on `device`."""

    def __init__(self, shape, max_shift: int, fill: float, device: torch.device | str):
        channels, height, width = image_shape(shape)
        n_features = channels * height * width
        if not 0 <= max_shift <= MAX_SHIFT:
            raise ValueError(f"augment_shift must lie in 0..{MAX_SHIFT}, but got {max_shift}")
        self.max_shift, self.fill, self.n = max_shift, float(fill), n_features
        s = max_shift
        dy, dx, flip = torch.meshgrid(torch.arange(-s, s + 1), torch.arange(-s, s + 1), torch.arange(2), indexing="ij")
        dy, dx, flip = (t.reshape(-1, 1) for t in (dy, dx, flip))
        pos = torch.arange(n_features)
        ch, r, c = pos // (height * width), pos // width % height, pos % width
        src_r, src_c = r - dy, c - dx  # output pixel (r, c) comes from input pixel (r - dy, c - dx) ...
        inside = (src_r >= 0) & (src_r < height) & (src_c >= 0) & (src_c < width)
        src_c = torch.where(flip.bool(), width - 1 - src_c, src_c)  # ... of the mirrored image when flipped
        index = torch.where(inside, (ch * height + src_r) * width + src_c, n_features)  # column n_features: fill
        self.table = index.to(device)  # row (dy + s) * (2s + 1) * 2 + (dx + s) * 2 + flip
        self._buffers: tuple[torch.Tensor, ...] | None = None

    def codes(self, draws: torch.Tensor) -> torch.Tensor:
        """Table rows for (n, 3) draws (each within this table's max_shift), on the table's device."""
        s, span = self.max_shift, 2 * self.max_shift + 1
        return ((draws[:, 0] + s) * span * 2 + (draws[:, 1] + s) * 2 + draws[:, 2]).to(self.table.device)

    def __call__(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """x (B, C*H*W) shifted (and flipped) row by row as codes (B,) say; x is unchanged.

        Hazard: the result lives in a buffer that the next call overwrites (a training step uses its batch up
        before the next one is made). Fresh tensors each step cost more than the gather itself at batch 256 on
        the CPU (several times the gather itself: large allocations are returned to the system and
        faulted in again every time)."""
        b = len(x)
        buf = self._buffers
        if buf is None or buf[0].shape[0] < b or buf[0].dtype != x.dtype or buf[0].device != x.device:
            padded = torch.full((b, self.n + 1), self.fill, dtype=x.dtype, device=x.device)  # last column: fill
            buf = self._buffers = (padded, torch.empty(b, self.n, dtype=torch.long, device=x.device),
                                   torch.empty(b, self.n, dtype=x.dtype, device=x.device))
        padded, index, out = (t[:b] for t in buf)
        padded[:, :self.n].copy_(x)
        torch.index_select(self.table, 0, codes, out=index)
        return torch.gather(padded, 1, index, out=out)


class BatchAugment:
    """One run's augmentation: `epoch(n)` draws for the epoch's n positions, `batch(x, start)` applies them to
    the batch at positions start..start+len(x). `fill`: the background value, e.g. the data's minimum (the
    normalised value of a black pixel)."""

    def __init__(self, kind: str, shift: int, seed: int, shape, fill: float, device):
        self.kind, self.shift = kind, shift
        self.gen = generator(seed)
        self.shifter = Shifter(shape, shift, fill, device)
        self.codes = torch.empty(0, dtype=torch.long)

    def epoch(self, n: int) -> None:
        self.codes = self.shifter.codes(draw(self.kind, self.shift, n, self.gen))

    def batch(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return self.shifter(x, self.codes[start:start + len(x)])

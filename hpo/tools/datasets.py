"""Real data sets that install with the package registries and need no download at run time, written in a form
`dataset: {path: …}` reads: `python -m hpo.tools.datasets digits data/digits.npz` (what `make data` runs).

digits: scikit-learn's bundled copy of the UCI optical digits, 1,797 8x8 images of 0-9, pixel values 0-16. It has
no test split of its own: the .npz holds x_train and y_train only, and hpo carves the test split (`test_size`,
`seed` in the study's dataset mapping).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

WRITERS = {"digits": lambda: (load_digits().images.astype(np.float32), load_digits().target.astype(np.int64))}


def write(name: str, path: str | Path) -> Path:
    x, y = WRITERS[name]()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x_train=x, y_train=y)
    tmp.replace(path)  # a reader never sees half a file
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in WRITERS:
        print(f"usage: python -m hpo.tools.datasets {{{','.join(WRITERS)}}} PATH.npz", file=sys.stderr)
        return 2
    print(f"wrote {write(argv[0], argv[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

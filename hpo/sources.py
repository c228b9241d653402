"""Where a study's data comes from, as plain values: a registered name or a file a user points at.

`dataset:` in a study (or paper) file is either a registered name (`fashion_mnist`, `mnist`, `kmnist`: IDX files
the registry knows where to find and how to verify) or `{path: …}`, whose form is read from the path:

    {path: data.npz}                                      x_train, y_train[, x_test, y_test] (Keras' mnist.npz)
    {path: train.csv, test: test.csv, target: label}      one row a sample, every other column a feature
    {path: train.csv, target: label, shape: [1, 28, 28]}  the same, its rows read as images
    {path: folder}                                        IDX files (train-images-idx3-ubyte[.gz], …) or
                                                          class subfolders of images (train/CLASS/*.png, test/…)

Without a test split one is carved from the training data: `test_size` (a count, or a fraction below 1; default
0.2) with `seed` (default 0), recorded with the study. Relative paths are read from the folder of the file that
names them. This module knows no torch: `hpo check` validates data sources without loading them (hpo.data does).
"""

from __future__ import annotations

import csv
import gzip
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpo.errors import ConfigError, DataError, check_keys, check_type

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SOURCE_KEYS = {"path", "test", "target", "shape", "test_size", "seed"}
FORMS = ".npz, .csv, a folder of IDX files, or a folder of class subfolders of images (train/CLASS/*.png)"


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: where its IDX files are found and how they are verified."""

    name: str
    title: str
    # md5 of the published .gz files (the checksums torchvision pins).
    gz_md5: dict[str, str]
    # sha256 of the decoded payload (images then labels) per split; None where not pinned here.
    payload_sha256: dict[str, str] | None = None
    debian_package: str | None = None
    debian_dir: str | None = None
    torchvision_class: str | None = None
    subdirs: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    n_train: int = 60000
    input_shape: tuple[int, ...] = (1, 28, 28)


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        gz_md5={
            "train_images": "cf8536b0aa1a6ac5fa3f23001093305c",
            "train_labels": "10bea18fdb374794d4bb42e356e600c9",
            "test_images": "f78720b4224f21cce2f2ccf2d7a94c9a",
            "test_labels": "0d30e22e447f3c33dab9ed536400ac01",
        },
        payload_sha256={
            "train": "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157",
            "test": "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4",
        },
        debian_package="dataset-fashion-mnist",
        debian_dir="/usr/share/datasets/fashion-mnist",
        torchvision_class="FashionMNIST",
        subdirs=("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    ),
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        gz_md5={
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        torchvision_class="MNIST",
        subdirs=("mnist", "MNIST/raw"),
        classes=tuple("0123456789"),
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        title="KMNIST",
        gz_md5={
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        torchvision_class="KMNIST",
        subdirs=("kmnist", "KMNIST/raw"),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}

# IDX file names: the published ones; any IDX folder whose files follow these stems is read the same way.
IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", "test-images-idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte", "test-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DataSource:
    """One study's data: a registered name, or a file or folder with how to read it. Paths are absolute."""

    kind: str  # "registered" | "npz" | "csv" | "idx" | "images"
    name: str  # the registered name, or the file's (folder's) stem: how reports and notes name the data
    path: str | None = None
    test: str | None = None  # csv: the test split's file
    target: str = "label"  # csv: the label column
    shape: tuple[int, ...] | None = None  # csv: rows as images of this shape (C, H, W) or (H, W)
    test_size: float | None = None  # carve a test split of this size (a count, or a fraction < 1) when none
    seed: int = 0  # … with this seed
    files: tuple[str, ...] = field(default=(), compare=False)  # idx: the four files found

    def __str__(self) -> str:
        return self.name

    @property
    def title(self) -> str:
        return DATASETS[self.name].title if self.kind == "registered" else self.name

    def spec(self) -> str | dict:
        """What a study, an export or a split records, and `parse_source` reads back: the name, or the mapping
        with absolute paths."""
        if self.kind == "registered":
            return self.name
        out: dict = {"path": self.path}
        if self.kind == "csv":
            out["target"] = self.target
            if self.test:
                out["test"] = self.test
            if self.shape:
                out["shape"] = list(self.shape)
        if self.test_size is not None:
            out["test_size"] = self.test_size
        if self.seed:
            out["seed"] = self.seed
        return out

    def input_files(self) -> list[Path]:
        """Every file the data is read from (what a cache is keyed by)."""
        if self.kind == "idx":
            return [Path(f) for f in self.files]
        if self.kind == "images":
            root = Path(self.path)
            return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return [Path(p) for p in (self.path, self.test) if p]


def _is_registered(value) -> bool:
    return isinstance(value, str) and value in DATASETS


def parse_source(value, source: str, key: str = "dataset", base: Path | None = None) -> DataSource:
    """A `dataset:` value as written in `source` (a file; `base` its folder): checked, paths resolved. Raises
    ConfigError naming the file and the key."""
    if isinstance(value, str):
        if not _is_registered(value):
            hint = " (a file is written `{path: FILE}`)" if "/" in value or "." in value else ""
            raise ConfigError(source, key, f"unknown data set {value!r}; known: {', '.join(sorted(DATASETS))}{hint}")
        return DataSource("registered", value)
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"expected a registered name or {{path: FILE}}, but got {value!r}")
    check_keys(value, SOURCE_KEYS, source, key, required=("path",))
    path = _existing(value["path"], source, f"{key}.path", base)
    test = _existing(value["test"], source, f"{key}.test", base) if "test" in value else None
    target = value.get("target", "label")
    if not isinstance(target, str) or not target:
        raise ConfigError(source, f"{key}.target", f"expected a column name, but got {target!r}")
    shape = value.get("shape")
    if shape is not None:
        if (not isinstance(shape, list) or not 2 <= len(shape) <= 3
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise ConfigError(source, f"{key}.shape",
                              f"expected [C, H, W] or [H, W] of positive ints, but got {shape!r}")
    test_size = value.get("test_size")
    if test_size is not None and (isinstance(test_size, bool) or not isinstance(test_size, (int, float))
                                  or test_size <= 0 or (isinstance(test_size, float) and test_size >= 1)):
        raise ConfigError(source, f"{key}.test_size", f"expected a count, or a fraction between 0 and 1, but got "
                                                      f"{test_size!r}")
    seed = check_type(value.get("seed", 0), int, source, f"{key}.seed")
    kind, files = _kind(path, source, key)
    if kind != "csv":
        for k in ("test", "target", "shape"):
            if k in value:
                raise ConfigError(source, f"{key}.{k}", f"only for CSV files; {path.name} is read as {kind}")
    if test and test.suffix.lower() != ".csv":
        raise ConfigError(source, f"{key}.test", f"expected a .csv file beside {path.name}, but got {test.name}")
    stem = path.name if path.is_dir() else path.stem
    return DataSource(kind, stem, str(path), str(test) if test else None, target,
                      tuple(shape) if shape else None, test_size, seed, files)


def path_candidates(p: Path, base: Path | None) -> list[Path]:
    """Where a relative path written in a file is looked for: beside that file (`base`), then from the working
    directory (for files written before); once when the two are the same folder. An absolute path as it is."""
    if p.is_absolute() or base is None:
        return [p]
    return [base / p] if (base / p).resolve() == p.resolve() else [base / p, p]


def tried_text(tried: list[Path]) -> str:
    """The places a path was looked for, for a one-line error."""
    return " or ".join(str(c) if c.is_absolute() else f"{c} (from {Path.cwd()})" for c in tried)


def _existing(value, source: str, key: str, base: Path | None) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, f"expected a path, but got {value!r}")
    tried = path_candidates(Path(value).expanduser(), base)
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(source, key, f"no such file or folder: {tried_text(tried)}")


def idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files of a folder (plain or .gz), or None when any is missing."""
    found = {}
    for part, stems in IDX_STEMS.items():
        for stem in stems:
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found.setdefault(part, candidate)
    return found if len(found) == len(IDX_STEMS) else None


def _kind(path: Path, source: str, key: str) -> tuple[str, tuple[str, ...]]:
    if path.is_dir():
        files = idx_files(path)
        if files:
            return "idx", tuple(str(files[p]) for p in IDX_STEMS)
        train = path / "train"
        if train.is_dir() and any(d.is_dir() for d in train.iterdir()):
            return "images", ()
        raise ConfigError(source, f"{key}.path", f"{path} holds neither the four IDX files (train-images-idx3-ubyte, "
                                                 f"train-labels-idx1-ubyte, t10k-…) nor train/CLASS/ image folders")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz", ()
    if suffix == ".csv":
        return "csv", ()
    raise ConfigError(source, f"{key}.path", f"{path.name}: not a data file hpo reads; it reads {FORMS}")


# --- sizes, without decoding (hpo check) --------------------------------------------------------


def train_size(src: DataSource) -> int:
    """How many training samples `src` holds (before a carved test split), read from headers only. Raises
    DataError for a file that is not what its extension says."""
    if src.kind == "registered":
        return DATASETS[src.name].n_train
    if src.kind == "npz":
        shapes = _npz_shapes(Path(src.path))
        check_npz_arrays(src.path, shapes)
        n = int(shapes["y_train"][0]) if shapes["y_train"] else 0
    elif src.kind == "csv":
        for path in (src.path, src.test):
            if path and src.target not in csv_header(Path(path)):
                raise DataError(f"{path}: no column {src.target!r} (the label column, `target`)")
        with open(src.path, newline="") as f:
            n = max(sum(1 for _ in f) - 1, 0)
    elif src.kind == "idx":
        with _open_maybe_gz(Path(src.files[1])) as f:
            head = f.read(8)
        n = int.from_bytes(head[4:8], "big") if len(head) == 8 else 0
    else:
        n = sum(1 for d in (Path(src.path) / "train").iterdir() if d.is_dir()
                for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not has_test_split(src):
        n -= carved_test_size(src, n)
    elif src.test_size is not None:
        raise DataError(f"{src.path}: has a test split of its own; `test_size` is for data without one")
    return n


def check_npz_arrays(path, names) -> None:
    """An .npz holds x_train and y_train, and x_test with y_test or neither; DataError naming what is missing."""
    missing = [k for k in ("x_train", "y_train") if k not in names]
    if ("x_test" in names) != ("y_test" in names):
        missing.append("y_test" if "x_test" in names else "x_test")
    if missing:
        raise DataError(f"{path}: missing array {', '.join(missing)} (an .npz holds x_train, y_train and, for a test "
                        f"split, x_test, y_test; it has {', '.join(sorted(names)) or 'none'})")


def has_test_split(src: DataSource) -> bool:
    if src.kind in ("registered", "idx"):
        return True
    if src.kind == "npz":
        return "x_test" in _npz_shapes(Path(src.path))
    if src.kind == "csv":
        return src.test is not None
    return (Path(src.path) / "test").is_dir()


def carved_test_size(src: DataSource, n: int) -> int:
    """The test split carved from `n` samples when the data has none: test_size as a count or a fraction."""
    size = 0.2 if src.test_size is None else src.test_size
    return int(size) if isinstance(size, int) else max(1, round(size * n))


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array name → shape of an .npz, from the arrays' headers (no data read)."""
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
                out[info.filename[:-4]] = shape
            return out
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DataError(f"{path}: not an .npz archive ({e})") from None


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None


def name_of(spec) -> str:
    """How reports name a recorded data set: a registered name as it is, a file by its stem."""
    if isinstance(spec, DataSource):
        return spec.name
    if isinstance(spec, dict) and spec.get("path"):
        p = Path(spec["path"])
        return p.name if p.suffix.lower() not in (".npz", ".csv") else p.stem
    return str(spec)


def recorded_shape(split: dict) -> tuple[tuple[int, ...], int]:
    """(input_shape, n_classes) of the data a study's recorded split describes. Studies recorded before hpo kept
    them ran on the registered 28x28, ten-class data sets, whose image_shape they record."""
    shape = split.get("input_shape") or [1, *split.get("image_shape", [28, 28])]
    return tuple(shape), int(split.get("n_classes") or 10)


def dataset_io(src: DataSource) -> tuple[int, int] | None:
    """(inputs, classes) where known without reading the data (how paper rows are named: 784-60-40-10)."""
    if src.kind == "registered":
        spec = DATASETS[src.name]
        return math.prod(spec.input_shape), len(spec.classes)
    return None

"""Data sets as tensors: find the IDX files, decode them once, verify them, split them.

Sources, in order: the directory named by HPO_DATA_DIR; the Debian package (Fashion-MNIST only);
torchvision's download when that optional extra is installed and the network allows.
Decoded uint8 tensors are cached on disk (HPO_CACHE_DIR, default ~/.cache/hpo) and in the process,
so a study decodes its data once and every trial slices the same tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpo.errors import DataError

PARTS = ("train_images", "train_labels", "test_images", "test_labels")
FILENAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
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
    ),
}


@dataclass
class Dataset:
    """Decoded uint8 images (N, 28, 28) and int64 labels, exactly as published."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    verified: str


@dataclass
class Splits:
    """What training sees: normalised float32 inputs (N, 784) and labels, plus how they were made.

    `eval_*` is the validation split while tuning and the test set only for final evaluation.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    meta: dict = field(default_factory=dict)

    def to(self, device: str | torch.device) -> "Splits":
        """The same splits on `device`: moved once, before training (itself when it is there already)."""
        target = torch.device(device)
        here = self.train_x.device
        if here == target or (target.index is None and here.type == target.type):
            return self
        return Splits(*(t.to(target) for t in (self.train_x, self.train_y, self.eval_x, self.eval_y)), meta=self.meta)


# --- IDX decoding -------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (optionally gzipped) into a numpy array, checking its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES:
        raise DataError(f"{path}: IDX type 0x{dtype_code:02x} is not supported (only unsigned bytes)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count:
        raise DataError(f"{path}: IDX payload has {len(raw) - header} bytes, header says {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz). Used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def payload_sha256(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(images), dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(np.asarray(labels), dtype=np.uint8).tobytes())
    return h.hexdigest()


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()  # integrity, not security


# --- finding files ------------------------------------------------------------------------------


def _files_in(directory: Path) -> dict[str, Path] | None:
    found = {}
    for part, stem in FILENAMES.items():
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[part] = candidate
                break
    return found if len(found) == len(PARTS) else None


def _candidate_dirs(spec: DatasetSpec) -> list[tuple[str, Path]]:
    dirs = []
    data_dir = os.environ.get("HPO_DATA_DIR")
    if data_dir:
        base = Path(data_dir)
        dirs += [("HPO_DATA_DIR", base / sub) for sub in spec.subdirs] + [("HPO_DATA_DIR", base)]
    if spec.debian_dir:
        dirs.append((f"Debian package {spec.debian_package}", Path(spec.debian_dir)))
    dirs.append(("torchvision download", cache_dir() / "torchvision" / (spec.torchvision_class or spec.name) / "raw"))
    return dirs


def _torchvision_download(spec: DatasetSpec) -> None:
    """Download with torchvision when the optional extra is installed; silently absent otherwise."""
    if not spec.torchvision_class:
        return
    try:
        import torchvision.datasets as tvd  # optional extra: only for downloading
    except Exception:  # not installed, or a wheel that does not import beside this torch
        return
    root = cache_dir() / "torchvision"
    try:
        for train in (True, False):
            getattr(tvd, spec.torchvision_class)(root=str(root), train=train, download=True)
    except Exception as e:  # offline, blocked, or a mirror down: report below as "no source"
        print(f"hpo: torchvision could not download {spec.title}: {e}")


def how_to_get(spec: DatasetSpec) -> str:
    ways = [f"put its four IDX files in $HPO_DATA_DIR (or $HPO_DATA_DIR/{spec.subdirs[0]})"]
    if spec.debian_package:
        ways.insert(0, f"run `make data` (apt-get install {spec.debian_package})")
    if spec.torchvision_class:
        ways.append("pip install '.[torchvision]' on a machine that is online")
    return f"{spec.title} not found: " + ", or ".join(ways)


def find_files(spec: DatasetSpec, download: bool = True) -> tuple[str, dict[str, Path]]:
    for label, directory in _candidate_dirs(spec):
        files = _files_in(directory)
        if files:
            return f"{label}: {directory}", files
    if download:
        _torchvision_download(spec)
        return find_files(spec, download=False)
    raise DataError(how_to_get(spec))


# --- loading and verification -------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("HPO_CACHE_DIR", Path.home() / ".cache" / "hpo"))


def _verify(spec: DatasetSpec, files: dict[str, Path], arrays: dict[str, np.ndarray]) -> str:
    """Refuse data that is not what its name says; return how it was verified."""
    n_train, n_test = len(arrays["train_images"]), len(arrays["test_images"])
    for split, n_img, n_lab in (("train", n_train, len(arrays["train_labels"])), ("test", n_test, len(arrays["test_labels"]))):
        if n_img != n_lab:
            raise DataError(f"{spec.title} {split}: {n_img} images but {n_lab} labels ({files[split + '_images'].parent})")
    digests = {
        "train": payload_sha256(arrays["train_images"], arrays["train_labels"]),
        "test": payload_sha256(arrays["test_images"], arrays["test_labels"]),
    }
    # Another registered data set's payload under this name is the known, repeated mistake.
    for other in DATASETS.values():
        if other.name != spec.name and other.payload_sha256 and other.payload_sha256.get("train") == digests["train"]:
            raise DataError(
                f"{files['train_images']}: these files are {other.title}, not {spec.title}; "
                f"point HPO_DATA_DIR at the {spec.title} files"
            )
    if spec.payload_sha256:
        for split, digest in digests.items():
            if digest != spec.payload_sha256[split]:
                raise DataError(
                    f"{files[split + '_images']}: decoded {split} payload does not match the pinned {spec.title} "
                    f"checksum (sha256 {digest[:12]}…, expected {spec.payload_sha256[split][:12]}…): "
                    f"wrong or corrupted files"
                )
        return "payload sha256"
    if all(p.suffix == ".gz" for p in files.values()):
        for part, path in files.items():
            if _md5(path) != spec.gz_md5[part]:
                raise DataError(f"{path}: md5 does not match the published {spec.title} file")
        return "published .gz md5"
    return "unverified (uncompressed files; no pinned payload checksum)"


_LOADED: dict[str, Dataset] = {}


def load(name: str) -> Dataset:
    """Decode (or read from cache) a registered data set; once per process."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    if name in _LOADED:
        return _LOADED[name]
    spec = DATASETS[name]
    source, files = find_files(spec)
    stamp = hashlib.sha256(
        "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files.values()).encode()
    ).hexdigest()[:16]
    cache = cache_dir() / f"{name}-{stamp}.pt"
    if cache.is_file():
        blob = torch.load(cache, mmap=True)
        ds = Dataset(name, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], source, blob["verified"])
    else:
        arrays = {part: read_idx(path) for part, path in files.items()}
        verified = _verify(spec, files, arrays)
        if verified.startswith("unverified"):
            print(f"hpo: warning: {spec.title} from {source} is {verified}")
        t = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        ds = Dataset(name, t["train_images"], t["train_labels"].long(), t["test_images"], t["test_labels"].long(), source, verified)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # one per process: two workers may decode at once
        torch.save({"train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y, "verified": verified}, tmp)
        tmp.replace(cache)  # atomic: parallel workers never read a half-written cache
    _LOADED[name] = ds
    return ds


def _normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return ((x.reshape(len(x), -1).float() / 255.0) - mean) / std


def make_splits(ds: Dataset, *, val_size: int = 10000, seed: int = 0, final: bool = False,
                train_limit: int | None = None, eval_limit: int | None = None) -> Splits:
    """Tuning: a fixed, seeded validation split carved from the training set.
    Final (`final=True`): the whole training set, evaluated on the test set.
    Normalisation statistics come from the training part only."""
    n = len(ds.train_x)
    if final:
        train_idx = torch.arange(n)
        ex, ey = ds.test_x, ds.test_y
    else:
        if not 0 < val_size < n:
            raise DataError(f"validation size {val_size} must lie between 0 and {n}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        train_idx, val_idx = perm[val_size:], perm[:val_size]
        ex, ey = ds.train_x[val_idx], ds.train_y[val_idx]
    if train_limit:
        train_idx = train_idx[:train_limit]
    if eval_limit:
        ex, ey = ex[:eval_limit], ey[:eval_limit]
    tx = ds.train_x[train_idx]
    scaled = tx.float() / 255.0
    mean, std = scaled.mean().item(), scaled.std().item()
    del scaled
    meta = {
        "dataset": ds.name, "source": ds.source, "verified": ds.verified,
        "eval": "test" if final else "validation", "val_size": 0 if final else val_size,
        "split_seed": None if final else seed, "n_train": len(train_idx), "n_eval": len(ex),
        "mean": round(mean, 6), "std": round(std, 6), "image_shape": list(ds.train_x.shape[1:]),
    }
    return Splits(_normalise(tx, mean, std), ds.train_y[train_idx].clone(), _normalise(ex, mean, std), ey.clone(), meta)

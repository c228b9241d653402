"""Data sets as tensors: read them once (registered IDX data sets, or a user's .npz, CSV, IDX or image folder:
hpo.sources), check them, cache them, split and standardise them.

A registered data set's files are found, in order, in the directory named by HPO_DATA_DIR; in the Debian package
(Fashion-MNIST only); through torchvision's download when that optional extra is installed and the network allows.
Decoded tensors are cached on disk (HPO_CACHE_DIR, default ~/.cache/hpo) and in the process, so a study decodes
its data once and every trial slices the same tensors.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpo.errors import DataError
from hpo.sources import (
    DATASETS,
    IMAGE_SUFFIXES,
    DatasetSpec,
    DataSource,
    carved_test_size,
    check_npz_arrays,
    csv_header,
    idx_files,
    parse_source,
)

PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass
class Dataset:
    """Decoded data, exactly as read: images as uint8 (N, H, W) or (N, C, H, W), tabular features as float32
    (N, F); labels int64 0..K-1 with their class names."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    verified: str
    class_names: tuple[str, ...] = ()
    spec: str | dict = ""  # what parse_source reads back (hpo.sources.DataSource.spec)
    title: str = ""
    sha256: str = ""  # of the decoded arrays, train and test: what a study records and checks on resume

    @property
    def images(self) -> bool:
        return self.train_x.dim() >= 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images (an N x H x W array is one channel), (F,) for tabular data."""
        shape = tuple(self.train_x.shape[1:])
        return (1, *shape) if self.images and len(shape) == 2 else shape

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.train_y.max()) + 1


@dataclass
class Splits:
    """What training sees: normalised float32 inputs, flat (N, F), and labels, plus how they were made
    (meta: input_shape, n_classes, class_names, the data set's name and sha256, the split).

    `eval_*` is the validation split while tuning and the test set only for final evaluation.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, (C, H, W) or (F,); the tensors hold it flat."""
        return tuple(self.meta.get("input_shape") or (self.train_x.shape[1],))

    @property
    def n_classes(self) -> int:
        return int(self.meta.get("n_classes") or int(self.train_y.max()) + 1)

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
        files = idx_files(directory)
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
    for split, n_img, n_lab in (("train", n_train, len(arrays["train_labels"])),
                                ("test", n_test, len(arrays["test_labels"]))):
        if n_img != n_lab:
            raise DataError(f"{spec.title} {split}: {n_img} images but {n_lab} labels "
                            f"({files[split + '_images'].parent})")
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


def load(source: str | dict | DataSource) -> Dataset:
    """Decode (or read from cache) a data set: a registered name, a recorded spec, or a DataSource; once per
    process."""
    if isinstance(source, DataSource):
        src = source
    elif isinstance(source, str):
        if source not in DATASETS:
            raise DataError(f"unknown data set {source!r}; known: {', '.join(sorted(DATASETS))}")
        src = DataSource("registered", source)
    else:  # a spec recorded by a study or an export: absolute paths
        src = parse_source(source, "<recorded data set>")
    key = json.dumps(src.spec(), sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = _load_registered(DATASETS[src.name]) if src.kind == "registered" else _load_file(src)
    return _LOADED[key]


def _stamp(files: list[Path], extra: str = "") -> str:
    return hashlib.sha256(("|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
                           + extra).encode()).hexdigest()[:16]


def _cached(cache: Path, decode) -> dict:
    """The decoded tensors from `cache`, or decode() them and write the cache (atomically: parallel workers never
    read a half-written one)."""
    if cache.is_file():
        return torch.load(cache, mmap=True)
    blob = decode()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # one per process: two workers may decode at once
    torch.save(blob, tmp)
    tmp.replace(cache)
    return blob


def data_sha256(train_x, train_y, test_x, test_y) -> str:
    """SHA-256 of the decoded arrays, as they train: what a study records and checks again on resume."""
    h = hashlib.sha256()
    for t in (train_x, train_y, test_x, test_y):
        a = np.ascontiguousarray(t.numpy() if isinstance(t, torch.Tensor) else t)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_registered(spec: DatasetSpec) -> Dataset:
    source, files = find_files(spec)
    cache = cache_dir() / f"{spec.name}-{_stamp(list(files.values()))}.pt"

    def decode() -> dict:
        arrays = {part: read_idx(path) for part, path in files.items()}
        verified = _verify(spec, files, arrays)
        if verified.startswith("unverified"):
            print(f"hpo: warning: {spec.title} from {source} is {verified}")
        t = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        return {"train_x": t["train_images"], "train_y": t["train_labels"].long(), "test_x": t["test_images"],
                "test_y": t["test_labels"].long(), "verified": verified}

    blob = _cached(cache, decode)
    sha = blob.get("sha256") or data_sha256(blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"])
    return Dataset(spec.name, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], source,
                   blob["verified"], spec.classes, spec.name, spec.title, sha)


def _load_file(src: DataSource) -> Dataset:
    files = src.input_files()
    if not files:
        raise DataError(f"{src.path}: no data files found")
    cache = cache_dir() / f"file-{src.name}-{_stamp(files, json.dumps(src.spec(), sort_keys=True))}.pt"

    def decode() -> dict:
        raw = read_source(src)
        return encode(src, **raw)

    blob = _cached(cache, decode)
    return Dataset(src.name, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
                   f"{src.kind}: {src.path}", "sha256 recorded with the study", tuple(blob["class_names"]), src.spec(),
                   src.title, blob["sha256"])


# --- reading files ------------------------------------------------------------------------------


def read_source(src: DataSource) -> dict:
    """x_train, y_train, x_test, y_test (the last two None when the data has no test split) and `where` (what
    to name in messages), as read from the files."""
    if src.kind == "npz":
        return _read_npz(Path(src.path))
    if src.kind == "csv":
        x, y = _read_csv(Path(src.path), src.target, src.shape)
        xt, yt = _read_csv(Path(src.test), src.target, src.shape) if src.test else (None, None)
        return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt, "where": src.path}
    if src.kind == "idx":
        a = [read_idx(Path(f)) for f in src.files]
        return {"x_train": a[0], "y_train": a[1], "x_test": a[2], "y_test": a[3],
                "where": str(Path(src.files[0]).parent)}
    return _read_image_folder(Path(src.path))


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not an .npz archive ({e})") from None
    except ValueError as e:  # object arrays need pickle, which a data file has no business with
        raise DataError(f"{path}: holds an array hpo cannot read without pickle ({e})") from None
    check_npz_arrays(path, arrays)
    return {"x_train": arrays["x_train"], "y_train": arrays["y_train"], "x_test": arrays.get("x_test"),
            "y_test": arrays.get("y_test"), "where": str(path)}


def _read_csv(path: Path, target: str, shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    header = csv_header(path)
    if target not in header:
        raise DataError(f"{path}: no column {target!r} (the label column, `target`); columns: "
                        f"{', '.join(header[:8])}{', …' if len(header) > 8 else ''}")
    col = header.index(target)
    labels, rows = [], []
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for i, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    if not row:
                        continue
                    raise DataError(f"{path}: line {i} has {len(row)} fields, the header {len(header)}")
                labels.append(row[col])
                rows.append(row[:col] + row[col + 1:])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    features = [h for h in header if h != target]
    try:
        x = np.array(rows, dtype=np.float64).reshape(len(rows), len(features))
    except ValueError:
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                try:
                    float(v)
                except ValueError:
                    raise DataError(f"{path}: line {i + 2}, column {features[j]!r}: {v!r} is not a number") from None
        raise
    y = np.array(labels)
    try:  # integer labels stay integers (0..K-1 keep their order); anything else is a class name
        y = y.astype(np.int64)
    except ValueError:
        pass
    if shape is not None:
        if int(np.prod(shape)) != x.shape[1]:
            raise DataError(f"{path}: `shape` {list(shape)} holds {int(np.prod(shape))} values, but each row has "
                            f"{x.shape[1]} features")
        if np.isfinite(x).all() and (x == np.round(x)).all() and x.min() >= 0 and x.max() <= 255:
            x = x.astype(np.uint8)  # pixel values: kept as bytes, scaled to [0, 1] like IDX images
        x = x.reshape(len(x), *shape)
    return x.astype(np.float32) if x.dtype == np.float64 else x, y


def _read_image_folder(root: Path) -> dict:
    out = {"where": str(root)}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            out[f"x_{split}"] = out[f"y_{split}"] = None
            continue
        images, labels, size = [], [], None
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            for p in sorted(class_dir.iterdir()):
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                a = _read_image(p)
                if size is None:
                    size = (a.shape, p)
                elif a.shape != size[0]:
                    raise DataError(f"{p}: image of shape {_shape_words(a.shape)}, but {size[1]} is "
                                    f"{_shape_words(size[0])}; every image must have one size and channel count")
                images.append(a)
                labels.append(class_dir.name)
        if not images:
            raise DataError(f"{folder}: no images in its class folders ({', '.join(IMAGE_SUFFIXES)})")
        out[f"x_{split}"], out[f"y_{split}"] = np.stack(images), np.array(labels)
    return out


def _read_image(p: Path) -> np.ndarray:
    try:
        with Image.open(p) as im:
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB" if len(im.getbands()) > 1 else "L")
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"{p}: not an image file ({e})") from None
    return a if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))  # (C, H, W)


def _shape_words(shape: tuple) -> str:
    return f"{shape[1]}x{shape[0]}" if len(shape) == 2 else f"{shape[2]}x{shape[1]}, {shape[0]} channels"


def encode(src: DataSource, x_train, y_train, x_test, y_test, where: str) -> dict:
    """Check what was read and turn it into the tensors training uses: labels 0..K-1 with class names, a carved
    test split where the data has none, channel-last images turned channel-first."""
    _check_split(where, "train", x_train, y_train)
    if x_test is not None:
        _check_split(where, "test", x_test, y_test)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(f"{where}: test samples have shape {list(x_test.shape[1:])}, training samples "
                            f"{list(x_train.shape[1:])}")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]!r}) in the training labels; a classifier needs two "
                        f"or more")
    if x_test is not None:
        unseen = sorted(set(np.unique(y_test).tolist()) - set(classes.tolist()))
        if unseen:
            raise DataError(f"{where}: test labels {unseen[:5]} never occur in the training labels")
    index = {c: i for i, c in enumerate(classes.tolist())}
    y_train = np.array([index[c] for c in y_train.tolist()], dtype=np.int64)
    y_test = None if y_test is None else np.array([index[c] for c in y_test.tolist()], dtype=np.int64)
    x_train, x_test = _channels_first(x_train), None if x_test is None else _channels_first(x_test)
    if x_test is None:
        n = len(x_train)
        n_test = carved_test_size(src, n)
        if not 0 < n_test < n:
            raise DataError(f"{where}: a test split of {n_test} out of {n} samples leaves nothing to train on")
        perm = np.random.default_rng(src.seed).permutation(n)
        x_test, y_test = x_train[perm[:n_test]], y_train[perm[:n_test]]
        x_train, y_train = x_train[perm[n_test:]], y_train[perm[n_test:]]
    if x_train.dtype != np.uint8:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    t = [torch.from_numpy(np.array(a)) for a in (x_train, y_train, x_test, y_test)]  # owned, writable copies
    return {"train_x": t[0], "train_y": t[1], "test_x": t[2], "test_y": t[3],
            "class_names": [str(c) for c in classes.tolist()], "sha256": data_sha256(*t)}


def _check_split(where: str, split: str, x, y) -> None:
    if y is None or x is None:
        raise DataError(f"{where}: {split} features or labels are missing")
    if y.ndim != 1:
        raise DataError(f"{where}: {split} labels have shape {list(y.shape)}; expected one label per sample")
    if len(x) != len(y):
        raise DataError(f"{where}: {split}: {len(x)} samples but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{where}: {split}: no samples")
    if x.dtype.kind not in "uif" and x.dtype != np.bool_:
        raise DataError(f"{where}: {split} features are {x.dtype} (text?); every feature must be a number")
    if x.ndim < 2:
        raise DataError(f"{where}: {split} features have shape {list(x.shape)}; expected one row per sample")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: {split} features hold NaN or infinite values")


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) with C of 1, 3 or 4 and H not → (N, C, H, W); anything else as it is."""
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


# --- splits -------------------------------------------------------------------------------------


def _standardise(tx: torch.Tensor, images: bool) -> tuple[torch.Tensor | float, torch.Tensor | float, list, list]:
    """Mean and std from the training part: per channel for images (scaled to [0, 1] first when bytes), per
    feature for tabular data."""
    scaled = tx.float() / 255.0 if tx.dtype == torch.uint8 else tx.float()
    if images and tx.dim() == 3:  # one channel: one mean and std over every pixel
        mean, std = scaled.mean().item(), scaled.std().item()
        return mean, std, [round(mean, 6)], [round(std, 6)]
    dims = (0, 2, 3) if images else (0,)
    mean, std = scaled.mean(dim=dims), scaled.std(dim=dims)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays 0 after centring
    shape = (-1, 1, 1) if images else (-1,)
    return mean.reshape(shape), std.reshape(shape), [round(v, 6) for v in mean.tolist()], \
        [round(v, 6) for v in std.tolist()]


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    if x.dtype == torch.uint8 and x.dim() == 3:  # one-channel images: the published recipe, kept to the bit
        return ((x.reshape(len(x), -1).float() / 255.0) - mean) / std
    scaled = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return ((scaled - mean) / std).reshape(len(x), -1)


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
            raise DataError(f"validation size {val_size} must lie between 0 and {n} (the training samples of "
                            f"{ds.title or ds.name})")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        train_idx, val_idx = perm[val_size:], perm[:val_size]
        ex, ey = ds.train_x[val_idx], ds.train_y[val_idx]
    if train_limit:
        train_idx = train_idx[:train_limit]
    if eval_limit:
        ex, ey = ex[:eval_limit], ey[:eval_limit]
    tx = ds.train_x[train_idx]
    mean, std, mean_list, std_list = _standardise(tx, ds.images)
    meta = {
        "dataset": ds.spec or ds.name, "source": ds.source, "verified": ds.verified,
        "eval": "test" if final else "validation", "val_size": 0 if final else val_size,
        "split_seed": None if final else seed, "n_train": len(train_idx), "n_eval": len(ex),
        "mean": mean_list[0] if len(mean_list) == 1 else mean_list,
        "std": std_list[0] if len(std_list) == 1 else std_list,
        "input_shape": list(ds.input_shape), "n_classes": ds.n_classes, "data_name": ds.title or ds.name,
        "data_sha256": ds.sha256,
    }
    if ds.images:
        meta["image_shape"] = list(ds.train_x.shape[1:])
    return Splits(_normalise(tx, mean, std), ds.train_y[train_idx].clone(), _normalise(ex, mean, std), ey.clone(), meta)


def class_names(meta: dict) -> list[str]:
    """The class names of the data a split's meta describes (registered data sets and files alike)."""
    return list(load(meta["dataset"]).class_names)

"""IDX decoding, checksums (the wrong data set under a name is refused), splits and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo import data as data_mod
from hpo.errors import DataError
from tests.conftest import FMNIST, write_tiny_idx


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        data_mod.write_idx(tmp_path / name, a)
        assert np.array_equal(data_mod.read_idx(tmp_path / name), a)


@pytest.mark.parametrize("raw,fragment", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "bad magic"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd", "not supported"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05ab", "header says 5"),
    (b"\x00\x00\x08\x03\x00", "truncated"),
])
def test_malformed_idx_is_refused(tmp_path, raw, fragment):
    p = tmp_path / "bad-idx"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=fragment):
        data_mod.read_idx(p)


def test_tiny_mnist_from_data_dir(tiny_mnist, capsys):
    ds = data_mod.load("mnist")
    assert ds.train_x.shape == (600, 28, 28) and ds.test_x.shape == (200, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.verified.startswith("unverified")  # uncompressed test files: said, not hidden
    assert "warning" in capsys.readouterr().out
    assert data_mod.load("mnist") is ds  # once per process


def test_decoded_cache_is_reused(tiny_mnist):
    ds = data_mod.load("mnist")
    cached = list(data_mod.cache_dir().glob("mnist-*.pt"))
    assert len(cached) == 1
    data_mod._LOADED.clear()
    again = data_mod.load("mnist")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_wrong_gz_files_fail_the_published_md5(tmp_path, monkeypatch):
    write_tiny_idx(tmp_path / "d" / "kmnist", gz=True)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "d"))
    with pytest.raises(DataError, match="md5 does not match the published KMNIST"):
        data_mod.load("kmnist")


def test_other_data_under_the_fashion_mnist_name_is_refused(tmp_path, monkeypatch):
    write_tiny_idx(tmp_path / "d" / "fashion_mnist")
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "d"))
    with pytest.raises(DataError, match="does not match the pinned Fashion-MNIST checksum"):
        data_mod.load("fashion_mnist")


def test_fashion_mnist_under_the_mnist_name_is_refused(tmp_path, monkeypatch, fmnist_available):
    d = tmp_path / "d" / "mnist"
    d.mkdir(parents=True)
    for f in FMNIST.parent.glob("*.gz"):
        (d / f.name).symlink_to(f)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "d"))
    with pytest.raises(DataError, match="these files are Fashion-MNIST, not MNIST"):
        data_mod.load("mnist")


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"KMNIST not found: put its four IDX files in \$HPO_DATA_DIR"):
        data_mod.load("kmnist")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        data_mod.load("cifar")


def test_real_fashion_mnist_is_verified(fmnist_available):
    ds = data_mod.load("fashion_mnist")
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert ds.verified == "payload sha256"


def test_validation_split_is_fixed_disjoint_and_keeps_the_test_set_out(tiny_mnist):
    ds = data_mod.load("mnist")
    a = data_mod.make_splits(ds, val_size=100, seed=3)
    b = data_mod.make_splits(ds, val_size=100, seed=3)
    c = data_mod.make_splits(ds, val_size=100, seed=4)
    assert torch.equal(a.eval_x, b.eval_x) and not torch.equal(a.eval_x, c.eval_x)
    assert len(a.train_x) == 500 and len(a.eval_x) == 100 and a.train_x.shape[1] == 784
    assert a.meta["eval"] == "validation" and a.meta["split_seed"] == 3
    # disjoint: no validation image is also a training image (rows are unique in this data)
    train_rows = {r.numpy().tobytes() for r in a.train_x}
    assert not any(r.numpy().tobytes() in train_rows for r in a.eval_x)
    # normalised with the training part's statistics
    assert abs(a.train_x.mean().item()) < 1e-4 and abs(a.train_x.std().item() - 1) < 1e-3
    final = data_mod.make_splits(ds, final=True)
    assert final.meta["eval"] == "test" and len(final.train_x) == 600 and len(final.eval_x) == 200


def test_bad_validation_size(tiny_mnist):
    with pytest.raises(DataError, match="validation size"):
        data_mod.make_splits(data_mod.load("mnist"), val_size=600)

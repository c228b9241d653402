"""Shared fixtures: small IDX data sets written by the tests, isolated storage and caches."""

from __future__ import annotations

import os
import signal
from pathlib import Path

# `make test` runs on 2 processes (pytest-xdist) on a 2-core machine, each starting worker processes of its own:
# one torch thread each, or OpenMP threads spinning while they wait slow every process many times over. The
# models here are small enough that one thread trains them as fast, to the same floats (the anchor test holds
# that). Set before torch is imported; worker processes inherit it.
os.environ.setdefault("HPO_MAX_THREADS", "1")

# The Ctrl-C tests signal `hpo` as a terminal would, where SIGINT has its default action. A test run started in the
# background of a non-interactive shell (`make test &`, nohup) inherits SIGINT ignored, and so would every `hpo` it
# starts: Python then installs no KeyboardInterrupt handler, and those tests would fail for how they were started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest

from hpo import data as data_mod

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def write_tiny_idx(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, gz: bool = True) -> Path:
    """A learnable 10-class data set in MNIST's IDX layout: class k lights up a block of pixels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r = 2 + (k // 5) * 12
            c = 2 + (k % 5) * 5
            images[i, r:r + 10, c:c + 4] = 200
        data_mod.write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images)
        data_mod.write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache dir and storage; nothing touches runs/ or ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HPO_CACHE_DIR", str(cache))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    monkeypatch.delenv("HPO_MAKE", raising=False)  # `make test` exports it; hints would read `make study NAME=...`
    monkeypatch.setenv("HPO_STORAGE", f"sqlite:///{tmp_path_factory.mktemp('db') / 'hpo.db'}")
    data_mod._LOADED.clear()
    yield
    data_mod._LOADED.clear()


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A small data set registered under the name `mnist` via HPO_DATA_DIR (unverifiable: not the real files)."""
    d = write_tiny_idx(tmp_path / "data" / "mnist", gz=False)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data"))
    return d


@pytest.fixture
def fmnist_available():
    if not FMNIST.exists() and not os.environ.get("HPO_DATA_DIR"):
        pytest.skip("Fashion-MNIST is not installed (make data)")


# Under `make test` (pytest-xdist, --dist loadgroup) these run one after another on one xdist worker while the
# other worker takes the in-process tests: they start worker processes, servers or a browser, kill or signal them,
# and wait on heartbeats, so two of them at once on a small machine would starve each other's heartbeats.
PROCESS_MODULES = {"test_crash", "test_dashboard", "test_load", "test_postgres", "test_proxy", "test_workers"}
PROCESS_TESTS = ("ctrl_c", "two_workers", "kill", "signal")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in PROCESS_MODULES or any(word in item.name for word in PROCESS_TESTS):
            item.add_marker(pytest.mark.xdist_group("processes"))

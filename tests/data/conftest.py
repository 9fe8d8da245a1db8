"""Fixtures for the data tests: the real MNIST t10k bytes from ../shared and IDX writers."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data import read_idx

from .helpers import T10K_IMAGES, T10K_LABELS, encode_idx

MNIST_T10K_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist-t10k"


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """Return ``write(path, array, gz=False)`` that writes ``array`` as an IDX file."""

    def write(path: Path, array: np.ndarray, gz: bool = False) -> Path:
        data = encode_idx(array)
        path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
        return path

    return write


@pytest.fixture(scope="session")
def mnist_t10k_dir() -> Path:
    """Directory with the real MNIST t10k files (gzip) and SHA256SUMS; skips when absent."""
    if not (MNIST_T10K_DIR / f"{T10K_IMAGES}.gz").is_file():
        pytest.skip(
            "../shared/data/mnist-t10k not found: "
            "real MNIST bytes are only in the project workspace"
        )
    return MNIST_T10K_DIR.resolve()


@pytest.fixture(scope="session")
def t10k_arrays(mnist_t10k_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real t10k images (10000, 28, 28) and labels (10000,) as read by read_idx."""
    return read_idx(mnist_t10k_dir / f"{T10K_IMAGES}.gz"), read_idx(
        mnist_t10k_dir / f"{T10K_LABELS}.gz"
    )


@pytest.fixture(scope="session")
def t10k_raw_dir(mnist_t10k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the real t10k files decompressed to raw IDX (no .gz)."""
    out = tmp_path_factory.mktemp("t10k-raw")
    for name in (T10K_IMAGES, T10K_LABELS):
        (out / name).write_bytes(gzip.decompress((mnist_t10k_dir / f"{name}.gz").read_bytes()))
    return out


@pytest.fixture(scope="session")
def mnist_torchvision_root(
    mnist_t10k_dir: Path, t10k_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A root in torchvision's layout ROOT/MNIST/raw/ holding all four MNIST files, real bytes.

    The t10k files are copied as t10k-*.gz and, decompressed, also as the raw train-* files.
    """
    root = tmp_path_factory.mktemp("mnist-root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (T10K_IMAGES, T10K_LABELS):
        shutil.copyfile(mnist_t10k_dir / f"{name}.gz", raw / f"{name}.gz")
        shutil.copyfile(t10k_raw_dir / name, raw / name.replace("t10k", "train"))
    return root

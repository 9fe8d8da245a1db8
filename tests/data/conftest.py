"""Fixtures for the data tests: real MNIST t10k bytes from ../shared, tiny files of every format."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data import read_idx

from .helpers import (
    T10K_IMAGES,
    T10K_LABELS,
    encode_idx,
    svhn_arrays,
    write_cifar_dir,
    write_speech_tree,
    write_svhn_mat,
)

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


# --- tiny files in the real formats of the other datasets --------------------------------------


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root in torchvision's layout ROOT/FashionMNIST/raw/ with 40 train and 12 test images."""
    root = tmp_path_factory.mktemp("fashion-root")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("t10k", 12)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images)))
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a tiny ``cifar-10-batches-py/`` (12 images per batch, Python 2 pickles)."""
    root = tmp_path_factory.mktemp("cifar-root")
    write_cifar_dir(root / "cifar-10-batches-py")
    return root


@pytest.fixture(scope="session")
def svhn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with tiny ``train_32x32.mat`` (30 images) and ``test_32x32.mat`` (10)."""
    root = tmp_path_factory.mktemp("svhn-root")
    for name, n, seed in (("train_32x32.mat", 30, 0), ("test_32x32.mat", 10, 1)):
        write_svhn_mat(root / name, *svhn_arrays(n, seed))
    return root


@pytest.fixture(scope="session")
def speech_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding a tiny Speech Commands tree in SpeechCommands/speech_commands_v0.02/."""
    pytest.importorskip("soundfile", reason="speech_commands needs the 'speech' extra")
    root = tmp_path_factory.mktemp("speech-template")
    write_speech_tree(root / "SpeechCommands" / "speech_commands_v0.02")
    return root


@pytest.fixture
def speech_root(speech_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny Speech Commands root (tests may change or cache into it)."""
    root = tmp_path / "speech-root"
    shutil.copytree(speech_template, root)
    return root


@pytest.fixture
def speech_dir(speech_root: Path) -> Path:
    """The extracted dataset directory inside :func:`speech_root`."""
    return speech_root / "SpeechCommands" / "speech_commands_v0.02"

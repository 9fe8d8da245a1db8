"""MNIST loaders reading the published IDX files (raw or ``.gz``) from disk.

``mnist`` is the full dataset (60k train, 10k t10k test); ``mnist-t10k`` uses only the 10k t10k
files, split into a training pool and a test part, for machines that have only the test set.
Files are found directly in ``root`` or in torchvision's layout ``root/MNIST/raw/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.idx import IdxFormatError, read_idx
from walkingnoise.data.registry import (
    DatasetNotFoundError,
    data_root,
    register_dataset,
    split_train_validation,
)

__all__ = [
    "MNIST_CLASS_NAMES",
    "MNIST_FILES",
    "MNIST_T10K_SIZE",
    "load_mnist",
    "load_mnist_t10k",
    "mnist_search_dirs",
    "read_mnist_part",
]

logger = logging.getLogger(__name__)

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Part name → (images, labels) file names as published, without the optional ``.gz``."""

MNIST_IMAGE_SHAPE = (28, 28)
MNIST_T10K_SIZE = 10_000
MNIST_CLASS_NAMES = tuple(str(c) for c in range(10))


def mnist_search_dirs(root: str | Path | None) -> list[Path]:
    """Directories searched for MNIST files: ``root``, then torchvision's ``root/MNIST/raw``."""
    base = data_root(root)
    return [base, base / "MNIST" / "raw"]


def _find_file(dirs: Sequence[Path], name: str) -> Path | None:
    """First of ``name`` or ``name.gz`` that exists in ``dirs``, raw preferred, else None."""
    for directory in dirs:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _locate(dataset: str, root: str | Path | None, parts: Sequence[str]) -> dict[str, Path]:
    """Map every file name of ``parts`` to its path, or raise one error listing all missing ones."""
    dirs = mnist_search_dirs(root)
    names = [name for part in parts for name in MNIST_FILES[part]]
    found = {name: _find_file(dirs, name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError.missing_files(
            dataset,
            [f"{name}[.gz]" for name in missing],
            dirs,
            hint=f"place the published IDX files (raw or .gz) in {dirs[-1]}/ or directly in "
            f"{dirs[0]}/ (ROOT/MNIST/raw/ is torchvision's layout)",
        )
    return {name: path for name, path in found.items() if path is not None}


def _check_pair(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    """Check an images/labels pair is MNIST-shaped: 3-D and 1-D ubyte, same count, labels 0..9."""
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != MNIST_IMAGE_SHAPE:
        raise IdxFormatError(
            f"{images_path}: expected 3-D ubyte images of 28x28, found shape {images.shape} "
            f"{images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxFormatError(
            f"{labels_path}: expected 1-D ubyte labels, found shape {labels.shape} {labels.dtype}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(MNIST_CLASS_NAMES):
        raise IdxFormatError(f"{labels_path}: labels must be in 0..9, found {int(labels.max())}")


def read_mnist_part(
    root: str | Path | None, part: str, dataset: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Find and read one images/labels pair (``part`` is ``train`` or ``t10k``) as uint8 arrays.

    Raises:
        DatasetNotFoundError: a file of the pair is in none of :func:`mnist_search_dirs`.
        IdxFormatError: a file is not valid IDX or not MNIST-shaped.
    """
    return _read_parts(dataset, root, [part])[part]


def _read_parts(
    dataset: str, root: str | Path | None, parts: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Locate all files of ``parts`` first (one error for all missing), then read and check them."""
    paths = _locate(dataset, root, parts)
    arrays = {}
    for part in parts:
        images_name, labels_name = MNIST_FILES[part]
        images_path, labels_path = paths[images_name], paths[labels_name]
        images, labels = read_idx(images_path), read_idx(labels_path)
        _check_pair(images, labels, images_path, labels_path)
        logger.debug("read %d MNIST images from %s", len(labels), images_path)
        arrays[part] = (images, labels)
    return arrays


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28) in [0, 1], or [-1, 1] when ``normalize``."""
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    if normalize:
        x.sub_(0.5).div_(0.5)
    return x, torch.from_numpy(labels).to(torch.int64)


@register_dataset("mnist")
def load_mnist(
    root: str | Path | None = None, *, val_fraction: float = 0.1, normalize: bool = True
) -> InMemoryDataset:
    """Load full MNIST: official train → train/validation (fixed split), t10k → test."""
    arrays = _read_parts("mnist", root, ["train", "t10k"])
    train, validation = split_train_validation(
        *_to_tensors(*arrays["train"], normalize), val_fraction
    )
    return InMemoryDataset(
        name="mnist",
        train=train,
        validation=validation,
        test=Split(*_to_tensors(*arrays["t10k"], normalize)),
        class_names=MNIST_CLASS_NAMES,
    )


@register_dataset("mnist-t10k")
def load_mnist_t10k(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    n_train: int = 8000,
    n_test: int = 2000,
    normalize: bool = True,
) -> InMemoryDataset:
    """Load the t10k files only: first ``n_train`` → train/validation, last ``n_test`` → test."""
    if n_train < 1 or n_test < 1 or n_train + n_test > MNIST_T10K_SIZE:
        raise ValueError(
            f"mnist-t10k needs n_train >= 1, n_test >= 1 and n_train + n_test <= "
            f"{MNIST_T10K_SIZE} (the t10k files hold {MNIST_T10K_SIZE} images), "
            f"got n_train={n_train}, n_test={n_test}"
        )
    images, labels = read_mnist_part(root, "t10k", dataset="mnist-t10k")
    if n_train + n_test > len(labels):
        raise ValueError(
            f"mnist-t10k: n_train + n_test = {n_train + n_test} exceeds the {len(labels)} "
            "images in the t10k files"
        )
    x, y = _to_tensors(images, labels, normalize)
    train, validation = split_train_validation(x[:n_train], y[:n_train], val_fraction)
    return InMemoryDataset(
        name="mnist-t10k",
        train=train,
        validation=validation,
        test=Split(x[-n_test:].clone(), y[-n_test:].clone()),
        class_names=MNIST_CLASS_NAMES,
    )

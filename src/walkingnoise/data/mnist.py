"""MNIST loaders reading the published IDX files (raw or ``.gz``) from disk.

``mnist`` is the full dataset (60k train, 10k t10k test); ``mnist-t10k`` uses only the 10k t10k
files, split into a training pool and a test part, for machines that have only the test set.
Files are found directly in ``root`` or in torchvision's layout ``root/MNIST/raw/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import RemoteFile
from walkingnoise.data.idx_pairs import (
    IDX_PAIR_FILES,
    IdxPairLayout,
    idx_pair_tensors,
    load_idx_pair_dataset,
)
from walkingnoise.data.registry import register_dataset, split_train_validation
from walkingnoise.data.status import DatasetStatus

__all__ = [
    "MNIST_CLASS_NAMES",
    "MNIST_FILES",
    "MNIST_LAYOUT",
    "MNIST_T10K_SIZE",
    "load_mnist",
    "load_mnist_t10k",
    "mnist_search_dirs",
    "read_mnist_part",
]

MNIST_FILES = IDX_PAIR_FILES
"""Part name → (images, labels) file names as published, without the optional ``.gz``."""

MNIST_T10K_SIZE = 10_000
MNIST_CLASS_NAMES = tuple(str(c) for c in range(10))
MNIST_LAYOUT = IdxPairLayout(folder="MNIST", class_names=MNIST_CLASS_NAMES)
_METADATA = {"paper_augmentation": "none"}


def mnist_search_dirs(root: str | Path | None) -> list[Path]:
    """Directories searched for MNIST files: torchvision's ``root/MNIST/raw``, then ``root``."""
    return MNIST_LAYOUT.search_dirs(root)


def read_mnist_part(
    root: str | Path | None, part: str, dataset: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Find and read one images/labels pair (``part`` is ``train`` or ``t10k``) as uint8 arrays.

    Raises:
        DatasetNotFoundError: a file of the pair is in none of :func:`mnist_search_dirs`.
        IdxFormatError: a file is not valid IDX or not MNIST-shaped.
    """
    return MNIST_LAYOUT.read_parts(dataset, root, [part])[part]


def _status_mnist(root: str | Path | None) -> DatasetStatus:
    """Which full-MNIST files are on disk."""
    return MNIST_LAYOUT.status("mnist", root, ["train", "t10k"])


def _status_t10k(root: str | Path | None) -> DatasetStatus:
    """Which MNIST t10k files are on disk."""
    return MNIST_LAYOUT.status("mnist-t10k", root, ["t10k"])


@register_dataset("mnist", locate=_status_mnist)
def load_mnist(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    normalize: bool = True,
    download: bool | Sequence[RemoteFile] = False,
) -> InMemoryDataset:
    """Load full MNIST: official train → train/validation (fixed split), t10k → test.

    With ``normalize`` pixels are mapped to [-1, 1] by (x/255 - 0.5) / 0.5, else to [0, 1].
    """
    return load_idx_pair_dataset(
        MNIST_LAYOUT,
        "mnist",
        root,
        val_fraction=val_fraction,
        normalize=normalize,
        download=download,
        metadata=_METADATA,
    )


@register_dataset("mnist-t10k", locate=_status_t10k)
def load_mnist_t10k(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    n_train: int = 8000,
    n_test: int = 2000,
    normalize: bool = True,
    download: bool | Sequence[RemoteFile] = False,
) -> InMemoryDataset:
    """Load the t10k files only: first ``n_train`` → train/validation, last ``n_test`` → test."""
    if n_train < 1 or n_test < 1 or n_train + n_test > MNIST_T10K_SIZE:
        raise ValueError(
            f"mnist-t10k needs n_train >= 1, n_test >= 1 and n_train + n_test <= "
            f"{MNIST_T10K_SIZE} (the t10k files hold {MNIST_T10K_SIZE} images), "
            f"got n_train={n_train}, n_test={n_test}"
        )
    images, labels = MNIST_LAYOUT.read_parts("mnist-t10k", root, ["t10k"], download)["t10k"]
    if n_train + n_test > len(labels):
        images_path = MNIST_LAYOUT.status("mnist-t10k", root, ["t10k"]).files[0]
        raise ValueError(
            f"{images_path}: holds {len(labels)} images, fewer than mnist-t10k's n_train + "
            f"n_test = {n_train + n_test}"
        )
    x, y = idx_pair_tensors(images, labels, normalize)
    train, validation = split_train_validation(x[:n_train], y[:n_train], val_fraction)
    return InMemoryDataset(
        name="mnist-t10k",
        train=train,
        validation=validation,
        test=Split(x[-n_test:].clone(), y[-n_test:].clone()),
        class_names=MNIST_CLASS_NAMES,
        metadata={
            **_METADATA,
            "normalization": {"mean": (0.5,), "std": (0.5,)} if normalize else None,
        },
    )

"""SVHN (cropped digits) from the published MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``.

Each file holds ``X`` (32 × 32 × 3 × N uint8) and ``y`` (N × 1, the digit, with 10 meaning 0).
Files are found in ``root`` (torchvision's layout) or ``root/svhn/``; scipy reads them, imported
only when a file is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from walkingnoise.data.augmentation import RandomCropFlip, black
from walkingnoise.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import RemoteFile, locate_or_download
from walkingnoise.data.errors import DatasetFormatError, one_line
from walkingnoise.data.registry import data_root, register_dataset, split_arrays
from walkingnoise.data.status import DatasetStatus

__all__ = ["SVHN_FILES", "SVHN_MEAN", "SVHN_STD", "load_svhn", "read_svhn_mat"]

logger = logging.getLogger(__name__)

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SVHN_MEAN = CIFAR10_MEAN
SVHN_STD = CIFAR10_STD
"""The papers normalise SVHN with the CIFAR-10 statistics."""


def _search_dirs(root: str | Path | None) -> list[Path]:
    """``root`` (torchvision's layout), then ``root/svhn``."""
    base = data_root(root)
    return [base, base / "svhn"]


def _status(root: str | Path | None) -> DatasetStatus:
    """Which of the two ``.mat`` files are on disk, both from the first folder of
    :func:`_search_dirs` that holds both (never one from each), else what the fullest lacks."""
    dirs = _search_dirs(root)
    found_in = [
        {name: d / name if (d / name).is_file() else None for name in SVHN_FILES.values()}
        for d in dirs
    ]
    complete = [found for found in found_in if all(found.values())]
    found = complete[0] if complete else max(found_in, key=lambda f: sum(map(bool, f.values())))
    hint = f"place the published {', '.join(SVHN_FILES.values())} together in {dirs[0]}/"
    apart = [
        f"{name} is in {path.parent}/"
        for other in found_in
        for name, path in other.items()
        if path is not None and found[name] is None
    ]
    if apart:
        hint = f"{', '.join(apart)}, apart from the others; {hint}"
    return DatasetStatus.of("svhn", found, dirs, hint=hint)


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN ``.mat`` file: images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9.

    Raises:
        DatasetFormatError: not a MATLAB file, no ``X``/``y``, wrong shapes or label values.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        content = loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError, …
        raise DatasetFormatError(
            f"{path}: not a readable MATLAB file: {type(error).__name__}: {one_line(error)}"
        ) from error
    missing = [key for key in ("X", "y") if key not in content]
    if missing:
        raise DatasetFormatError(f"{path}: no variable {' or '.join(missing)} in the MATLAB file")
    images, labels = content["X"], content["y"]
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise DatasetFormatError(
            f"{path}: X must be 32x32x3xN uint8, found shape {images.shape} {images.dtype}"
        )
    n = images.shape[3]
    if n == 0:
        raise DatasetFormatError(f"{path}: X holds no images")
    if not isinstance(labels, np.ndarray):
        raise DatasetFormatError(f"{path}: y must be a full array, found {type(labels).__name__}")
    if labels.shape not in ((n, 1), (n,)):
        raise DatasetFormatError(f"{path}: y must be {n}x1 for {n} images, found {labels.shape}")
    labels = labels.reshape(-1)
    real = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    if not real or not np.array_equal(labels, np.round(labels)):
        raise DatasetFormatError(f"{path}: y must hold whole numbers, found {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise DatasetFormatError(
            f"{path}: y must be in 1..10 (10 is the digit 0), found {labels.min()}..{labels.max()}"
        )
    labels[labels == 10] = 0
    logger.debug("read %d SVHN images from %s", n, path)
    # (H, W, C, N) → (N, C, H, W)
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels


def _tensors(
    images: np.ndarray, labels: np.ndarray, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) uint8 → float32 in [0, 1], or normalised per channel."""
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    if normalize:
        x.sub_(torch.tensor(SVHN_MEAN).view(1, 3, 1, 1)).div_(
            torch.tensor(SVHN_STD).view(1, 3, 1, 1)
        )
    return x, torch.from_numpy(labels)


@register_dataset("svhn", locate=_status)
def load_svhn(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    normalize: bool = True,
    download: bool | Sequence[RemoteFile] = False,
) -> InMemoryDataset:
    """Load SVHN: ``train_32x32`` → train/validation (fixed split), ``test_32x32`` → test.

    Inputs are (N, 3, 32, 32) RGB; with ``normalize`` channels are mapped by (x/255 - mean) / std
    (the CIFAR-10 statistics, as in the papers). Label 10 of the files is digit 0. The optional
    ``extra_32x32.mat`` is not used.
    """
    status = locate_or_download("svhn", root, _status, download)
    train_path, test_path = status.files
    train, validation = (
        Split(*_tensors(*part, normalize))
        for part in split_arrays(*read_svhn_mat(train_path), val_fraction)
    )
    return InMemoryDataset(
        name="svhn",
        train=train,
        validation=validation,
        test=Split(*_tensors(*read_svhn_mat(test_path), normalize)),
        class_names=tuple(str(c) for c in range(10)),
        augmentation=RandomCropFlip(padding=4, fill=black(SVHN_MEAN, SVHN_STD, normalize)),
        metadata={
            "normalization": {"mean": SVHN_MEAN, "std": SVHN_STD} if normalize else None,
            "paper_augmentation": "random crop 32 with padding 4, horizontal flip (training only)",
            "source": str(train_path.parent),
        },
    )

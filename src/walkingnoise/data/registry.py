"""Dataset registry, the shared train/validation split, and the data root."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.errors import DatasetNotFoundError
from walkingnoise.data.status import DatasetStatus

__all__ = [
    "DATA_ROOT_ENV",
    "SPLIT_SEED",
    "DatasetLoader",
    "DatasetLocator",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "data_root",
    "dataset_names",
    "dataset_status",
    "load_dataset",
    "register_dataset",
    "split_arrays",
    "split_train_validation",
    "stratified_holdout_indices",
    "train_validation_indices",
]

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
"""Seed of every data split: fixed, and independent of any experiment's seed."""

DATA_ROOT_ENV = "WALKINGNOISE_DATA"
"""Environment variable naming the data root used when a loader gets ``root=None``."""


DatasetLoader = Callable[..., InMemoryDataset]
"""A registered loader: ``(root, *, val_fraction=0.1, download=False, **options)``."""

DatasetLocator = Callable[[str | Path | None], DatasetStatus]
"""Finds a dataset's files under a root without reading them (for ``walking-noise data list``)."""


_REGISTRY: dict[str, DatasetLoader] = {}
_LOCATORS: dict[str, DatasetLocator] = {}


class UnknownDatasetError(KeyError):
    """Raised by :func:`load_dataset` for an unregistered name; the message lists known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def register_dataset(
    name: str, *, locate: DatasetLocator | None = None
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator that registers a loader under ``name`` so :func:`load_dataset` can find it.

    ``locate(root)`` reports which of the dataset's files are on disk. Datasets that need no
    files (bundled ones) leave it out; they never receive :func:`load_dataset`'s ``download``.

    Raises:
        ValueError: ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in _REGISTRY:
            existing = _REGISTRY[name]
            raise ValueError(
                f"dataset {name!r} is already registered by "
                f"{existing.__module__}.{getattr(existing, '__qualname__', existing)}"
            )
        _REGISTRY[name] = loader
        if locate is not None:
            _LOCATORS[name] = locate
        return loader

    return decorator


def dataset_names() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def _loader(name: str) -> DatasetLoader:
    """The loader registered as ``name``, or :class:`UnknownDatasetError` listing known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {', '.join(dataset_names())}"
        ) from None


def load_dataset(
    name: str, root: str | Path | None = None, download: object = False, **options: object
) -> InMemoryDataset:
    """Load the registered dataset ``name`` from ``root`` with loader-specific ``options``.

    With ``download=True`` a file-based dataset fetches its missing files first (checksums
    verified; see :mod:`walkingnoise.data.download`); a sequence of
    :class:`~walkingnoise.data.download.RemoteFile` fetches those instead of the official ones.
    Datasets that need no files ignore it.

    Raises:
        UnknownDatasetError: no dataset of that name (a ``KeyError``; the message lists known ones).
        DatasetNotFoundError: files are missing (one line saying what to put where).
    """
    loader = _loader(name)
    if download is not False and name in _LOCATORS:
        options["download"] = download
    dataset = loader(root, **options)
    if not isinstance(dataset, InMemoryDataset):
        raise TypeError(f"loader of dataset {name!r} returned {type(dataset).__name__}")
    logger.info(
        "loaded dataset %s: train %d, validation %d, test %d, input shape %s",
        name,
        len(dataset.train),
        len(dataset.validation),
        len(dataset.test),
        dataset.input_shape,
    )
    return dataset


def dataset_status(name: str, root: str | Path | None = None) -> DatasetStatus:
    """Which files of dataset ``name`` are on disk under ``root`` (nothing is read or checked)."""
    _loader(name)
    locate = _LOCATORS.get(name)
    if locate is None:
        return DatasetStatus(name=name, note="no files needed")
    return locate(root)


def data_root(root: str | Path | None) -> Path:
    """Resolve a loader's ``root``: as given, else ``$WALKINGNOISE_DATA``, else a user cache dir."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "walkingnoise" / "data"


def _check_fraction(name: str, value: float) -> None:
    """Reject a split fraction outside [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def train_validation_indices(
    n: int, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministically shuffle ``range(n)`` and return sorted (train, validation) indices.

    The validation part has ``round(n * val_fraction)`` elements; both parts keep file order.
    """
    _check_fraction("val_fraction", val_fraction)
    n_val = round(n * val_fraction)
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training data out of {n}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def split_train_validation(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[Split, Split]:
    """Split official training data into (train, validation) with a fixed shuffled permutation."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    train_idx, val_idx = train_validation_indices(int(y.shape[0]), val_fraction, seed)
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def split_arrays(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The rows :func:`split_train_validation` takes, from numpy arrays: ((x, y) of train,
    (x, y) of validation). Loaders split the file's bytes before they become 4x larger floats."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    train_idx, val_idx = (i.numpy() for i in train_validation_indices(len(y), val_fraction, seed))
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def stratified_holdout_indices(
    y: torch.Tensor, fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out ``round(n_c * fraction)`` of each class c, seeded: returns (rest, held-out) indices.

    Used where no official test set exists, so every class appears in the held-out part.
    """
    _check_fraction("fraction", fraction)
    generator = torch.Generator().manual_seed(seed)
    held: list[torch.Tensor] = []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        perm = members[torch.randperm(len(members), generator=generator)]
        held.append(perm[: round(len(members) * fraction)])
    held_idx = torch.cat(held).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held_idx] = False
    return torch.nonzero(mask).flatten(), held_idx

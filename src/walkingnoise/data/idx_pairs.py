"""Datasets published as IDX image/label file pairs (MNIST, FashionMNIST): find, read, check.

Both publish ``train-{images-idx3,labels-idx1}-ubyte`` and ``t10k-…`` files, raw or ``.gz``; they
are found directly in ``root`` or in torchvision's layout ``root/<Folder>/raw/``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from walkingnoise.data.augmentation import Augmentation
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import (
    OFFICIAL_FILES,
    RemoteFile,
    locate_or_download,
    verify_file,
)
from walkingnoise.data.idx import IdxFormatError, read_idx
from walkingnoise.data.registry import data_root, split_arrays
from walkingnoise.data.status import DatasetStatus

__all__ = ["IDX_PAIR_FILES", "IdxPairLayout", "idx_pair_tensors", "load_idx_pair_dataset"]

logger = logging.getLogger(__name__)

IDX_PAIR_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Part name → (images, labels) file names as published, without the optional ``.gz``."""


@dataclass(frozen=True)
class IdxPairLayout:
    """Where an IDX-pair dataset lives and what its files must hold.

    Attributes:
        folder: torchvision's folder name (``MNIST``, ``FashionMNIST``): files in
            ``root/<folder>/raw/`` are found as well as files directly in ``root``.
        class_names: one name per label value 0..K-1.
        image_shape: (height, width) of every image.
        files: part name → (images, labels) file names without ``.gz``.
    """

    folder: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    files: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(IDX_PAIR_FILES))

    def search_dirs(self, root: str | Path | None) -> list[Path]:
        """Directories searched, in order: the dataset's own ``root/<folder>/raw``, then
        ``root`` itself (MNIST and FashionMNIST name their files alike: their own folders
        tell them apart, loose files in ``root`` do not)."""
        base = data_root(root)
        return [base / self.folder / "raw", base]

    def status(self, dataset: str, root: str | Path | None, parts: Sequence[str]) -> DatasetStatus:
        """Which files of ``parts`` are on disk (raw preferred over ``.gz``). All of them come
        from one directory, the first of :meth:`search_dirs` that holds them all, so a dataset
        is never put together from two (MNIST's test files loose in the root beside
        FashionMNIST's training files in its own folder); else what the fullest one lacks."""
        dirs = self.search_dirs(root)
        names = [name for part in parts for name in self.files[part]]
        found_in = [{f"{name}[.gz]": _find_file([d], name) for name in names} for d in dirs]
        complete = [found for found in found_in if all(found.values())]
        found = complete[0] if complete else max(found_in, key=lambda f: sum(map(bool, f.values())))
        hint = (
            f"place the published IDX files (raw or .gz) together in {dirs[0]}/ "
            f"(ROOT/{self.folder}/raw/, torchvision's layout) or directly in {dirs[-1]}/"
        )
        folders: dict[Path, list[str]] = {}
        for label, path in _found_elsewhere(found, found_in).items():
            folders.setdefault(path.parent, []).append(label)
        if folders:
            apart = "; ".join(
                f"{', '.join(labels)} {'is' if len(labels) == 1 else 'are'} in {folder}/"
                for folder, labels in folders.items()
            )
            hint = f"{apart}, apart from the others; {hint}"
        odd = _not_files(dirs, names)
        return DatasetStatus.of(dataset, found, dirs, hint=f"{odd}; {hint}" if odd else hint)

    def read_parts(
        self,
        dataset: str,
        root: str | Path | None,
        parts: Sequence[str],
        download: bool | Sequence[RemoteFile] = False,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Locate all files of ``parts`` (one error for all missing), then read and check them.

        Raises:
            DatasetNotFoundError: a file is in none of :meth:`search_dirs` (and was not fetched).
            IdxFormatError: a file is not valid IDX or not shaped as this dataset's files.
        """
        status = locate_or_download(
            dataset, root, lambda r: self.status(dataset, r, parts), download
        )
        paths = dict(zip(_labels(self, parts), status.files, strict=True))
        for path in paths.values():
            _refuse_another_datasets_file(dataset, path)
        arrays = {}
        for part in parts:
            images_name, labels_name = self.files[part]
            images_path, labels_path = paths[f"{images_name}[.gz]"], paths[f"{labels_name}[.gz]"]
            images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
            self.check_pair(images, labels, images_path, labels_path)
            logger.debug("read %d %s images from %s", len(labels), dataset, images_path)
            arrays[part] = (images, labels)
        return arrays

    def check_pair(
        self, images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
    ) -> None:
        """Check a pair: 3-D ubyte images of ``image_shape``, 1-D ubyte labels, same count
        (not 0), < K."""
        height, width = self.image_shape
        if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise IdxFormatError(
                f"{images_path}: expected 3-D ubyte images of {height}x{width}, found shape "
                f"{images.shape} {images.dtype}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise IdxFormatError(
                f"{labels_path}: expected 1-D ubyte labels, found shape {labels.shape} "
                f"{labels.dtype}"
            )
        if images.shape[0] == 0:
            raise IdxFormatError(f"{images_path}: holds no images")
        if images.shape[0] != labels.shape[0]:
            raise IdxFormatError(
                f"{images_path} has {images.shape[0]} images but {labels_path} has "
                f"{labels.shape[0]} labels"
            )
        top = len(self.class_names) - 1
        if int(labels.max()) > top:
            raise IdxFormatError(
                f"{labels_path}: labels must be in 0..{top}, found {int(labels.max())}"
            )


def _labels(layout: IdxPairLayout, parts: Sequence[str]) -> list[str]:
    """Display names of the files of ``parts``, in the order :meth:`IdxPairLayout.status` uses."""
    return [f"{name}[.gz]" for part in parts for name in layout.files[part]]


def _refuse_another_datasets_file(dataset: str, path: Path) -> None:
    """Raise if ``path`` is byte for byte a published file of another dataset (by its size,
    then its checksum): e.g. MNIST's ``train-images-idx3-ubyte.gz`` loose in the root, read as
    FashionMNIST's. Files that are no published ``.gz`` (unpacked, recompressed) pass."""
    own = {digest for remote in OFFICIAL_FILES.get(dataset, ()) for digest in remote.digests}
    size = path.stat().st_size
    for other, files in OFFICIAL_FILES.items():
        for remote in files:
            if remote.name != path.name or remote.size != size or own & set(remote.digests):
                continue
            if verify_file(path, remote.digests) is None:
                raise IdxFormatError(
                    f"{path}: this is {other}'s published file, not {dataset}'s; keep each "
                    "dataset in its own folder (ROOT/MNIST/raw/, ROOT/FashionMNIST/raw/)"
                )


def _found_elsewhere(
    chosen: Mapping[str, Path | None], found_in: Sequence[Mapping[str, Path | None]]
) -> dict[str, Path]:
    """The files ``chosen`` lacks that another searched folder holds: a dataset split over
    two folders, which is read from neither."""
    elsewhere: dict[str, Path] = {}
    for found in found_in:
        for label, path in found.items():
            if path is not None and chosen[label] is None:
                elsewhere.setdefault(label, path)
    return elsewhere


def _not_files(dirs: Sequence[Path], names: Sequence[str]) -> str:
    """What stands where a file of ``names`` belongs but is no file (a folder, a link to
    nothing), in words, or ""."""
    odd = []
    for directory in dirs:
        for name in names:
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_dir():
                    odd.append(f"{candidate} is a folder")
                elif candidate.is_symlink() and not candidate.exists():
                    odd.append(f"{candidate} is a link to nothing")
    return ", ".join(odd)


def _find_file(dirs: Sequence[Path], name: str) -> Path | None:
    """First of ``name`` or ``name.gz`` that exists in ``dirs``, raw preferred, else None."""
    for directory in dirs:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def idx_pair_tensors(
    images: np.ndarray, labels: np.ndarray, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W) → float32 (N, 1, H, W) in [0, 1], or [-1, 1] by (x - 0.5) / 0.5."""
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    if normalize:
        x.sub_(0.5).div_(0.5)
    return x, torch.from_numpy(labels).to(torch.int64)


def load_idx_pair_dataset(
    layout: IdxPairLayout,
    name: str,
    root: str | Path | None,
    *,
    val_fraction: float,
    normalize: bool,
    download: bool | Sequence[RemoteFile] = False,
    metadata: Mapping[str, Any] | None = None,
    augmentation: Augmentation | None = None,
) -> InMemoryDataset:
    """Official train → train/validation (fixed split), t10k → test, as in-memory tensors."""
    arrays = layout.read_parts(name, root, ["train", "t10k"], download)
    train, validation = (
        Split(*idx_pair_tensors(*part, normalize))
        for part in split_arrays(*arrays.pop("train"), val_fraction)
    )
    info = dict(metadata or {})
    info["normalization"] = {"mean": (0.5,), "std": (0.5,)} if normalize else None
    return InMemoryDataset(
        name=name,
        train=train,
        validation=validation,
        test=Split(*idx_pair_tensors(*arrays["t10k"], normalize)),
        class_names=layout.class_names,
        augmentation=augmentation,
        metadata=info,
    )

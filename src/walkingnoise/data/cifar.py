"""CIFAR-10 from its "python version": pickled batches, read with a restricted unpickler.

Files are found in torchvision's layout ``root/cifar-10-batches-py/`` (``data_batch_1`` … ``_5``,
``test_batch``, ``batches.meta``), in ``root`` itself when it is that folder, or read straight from
the published archive ``root/cifar-10-python.tar.gz``. Each batch is a pickled dict with
``b"data"`` (N × 3072 uint8, rows of 1024 red, 1024 green, 1024 blue values) and ``b"labels"``.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from walkingnoise.data.augmentation import RandomCropFlip, black
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import RemoteFile, locate_or_download
from walkingnoise.data.errors import DatasetFormatError, one_line
from walkingnoise.data.registry import data_root, register_dataset, split_arrays
from walkingnoise.data.safe_pickle import restricted_load
from walkingnoise.data.status import DatasetStatus

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_DIR",
    "CIFAR10_FILES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "load_cifar10",
    "read_cifar10_batches",
]

logger = logging.getLogger(__name__)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR10_FILES = (*CIFAR10_TRAIN, CIFAR10_TEST, CIFAR10_META)
"""The files of ``cifar-10-batches-py/`` the loader reads."""

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
"""Per-channel normalisation of the papers' CIFAR-10 and SVHN runs (RGB, pixels in [0, 1])."""

_IMAGE_VALUES = 3 * 32 * 32
_NUM_CLASSES = 10


def _status(root: str | Path | None) -> DatasetStatus:
    """Where the batches are: the batches folder, ``root`` itself, or the archive."""
    base = data_root(root)
    folder = base / CIFAR10_DIR
    for directory in (folder, base):
        if all((directory / name).is_file() for name in CIFAR10_FILES):
            return DatasetStatus("cifar10", files=(directory,), searched=(base,))
    archive = base / CIFAR10_ARCHIVE
    if archive.is_file():
        return DatasetStatus("cifar10", files=(archive,), searched=(base,))
    if folder.is_dir():
        missing = tuple(f"{CIFAR10_DIR}/{n}" for n in CIFAR10_FILES if not (folder / n).is_file())
    else:
        missing = (f"{CIFAR10_DIR}/ or {CIFAR10_ARCHIVE}",)
    return DatasetStatus(
        "cifar10",
        missing=missing,
        searched=(base,),
        hint=f"place {CIFAR10_ARCHIVE} (the 'python version') or its extracted {CIFAR10_DIR}/ "
        f"folder in {base}/",
    )


def _unpickle(stream: IO[bytes], label: str) -> dict[str, Any]:
    """Unpickle one batch with the restricted unpickler; keys as ``str``."""
    try:
        obj = restricted_load(stream)
    except pickle.UnpicklingError as error:
        raise DatasetFormatError(f"{label}: not a CIFAR-10 batch: {one_line(error)}") from error
    except Exception as error:  # a corrupt pickle can fail in many ways
        raise DatasetFormatError(
            f"{label}: not a CIFAR-10 batch (corrupt pickle: {type(error).__name__}: "
            f"{one_line(error)})"
        ) from error
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{label}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _iter_batches(source: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (file name, label for errors, unpickled dict) for every file of the source."""
    if source.is_dir():
        for name in CIFAR10_FILES:
            path = source / name
            with path.open("rb") as stream:
                yield name, str(path), _unpickle(stream, str(path))
        return
    wanted = {f"{CIFAR10_DIR}/{name}": name for name in CIFAR10_FILES}
    seen = set()
    try:
        # one streaming pass over the archive; gzip (unlike tarfile's own "r|gz") checks the
        # CRC-32 at the end of the stream, read to it here, so a flipped bit is an error
        with gzip.open(source) as unpacked, tarfile.open(fileobj=unpacked, mode="r|") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                stream = tar.extractfile(member)
                assert stream is not None
                seen.add(name)
                yield name, f"{source}:{member.name}", _unpickle(stream, f"{source}:{member.name}")
            while unpacked.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DatasetFormatError(f"{source}: corrupt archive: {one_line(error)}") from error
    absent = [f"{CIFAR10_DIR}/{n}" for n in CIFAR10_FILES if n not in seen]
    if absent:
        raise DatasetFormatError(f"{source}: archive has no {', '.join(absent)}")


def _check_batch(batch: dict[str, Any], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one batch's keys, shapes and labels; return (data (N, 3072) uint8, labels (N,))."""
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise DatasetFormatError(
            f"{label}: not a CIFAR-10 batch: no {' or '.join(repr(k) for k in missing)} key "
            f"(found {', '.join(sorted(batch)) or 'none'})"
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        shape = getattr(data, "shape", None)
        raise DatasetFormatError(
            f"{label}: 'data' must be a 2-D uint8 array, found {type(data).__name__} "
            f"{getattr(data, 'dtype', '')} shape {shape}"
        )
    if data.shape[1] != _IMAGE_VALUES:
        raise DatasetFormatError(
            f"{label}: 'data' rows must hold 3x32x32 = {_IMAGE_VALUES} values, "
            f"found {data.shape[1]}"
        )
    if data.shape[0] == 0:
        raise DatasetFormatError(f"{label}: holds no images")
    raw = batch["labels"]
    integers = (
        raw.dtype.kind in "iu"
        if isinstance(raw, np.ndarray)
        else isinstance(raw, list) and all(type(v) is int for v in raw)
    )
    if not integers:  # floats, strings or bools would be coerced into plausible labels
        if isinstance(raw, list):
            found = "a list of " + ", ".join(sorted({type(v).__name__ for v in raw}))
        elif isinstance(raw, np.ndarray):
            found = f"ndarray {raw.dtype}"
        else:
            found = type(raw).__name__
        raise DatasetFormatError(f"{label}: 'labels' must be a list of integers, found {found}")
    try:
        labels = np.asarray(raw, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise DatasetFormatError(
            f"{label}: 'labels' are not integers: {one_line(error)}"
        ) from error
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(
            f"{label}: {data.shape[0]} images but {labels.size} labels (shape {labels.shape})"
        )
    if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise DatasetFormatError(
            f"{label}: labels must be in 0..{_NUM_CLASSES - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return data, labels


def _class_names(meta: dict[str, Any], label: str) -> tuple[str, ...]:
    """The ten class names from ``batches.meta``."""
    names = meta.get("label_names")
    if not isinstance(names, list | tuple) or len(names) != _NUM_CLASSES:
        raise DatasetFormatError(
            f"{label}: expected 'label_names' with {_NUM_CLASSES} names, found {names!r:.80}"
        )
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def _check_compression(archive: Path) -> None:
    """Raise ``DatasetFormatError`` (corrupt archive) if ``archive``'s gzip stream is damaged
    (cut short, or a flipped bit its CRC-32 catches)."""
    try:
        with gzip.open(archive) as unpacked:
            while unpacked.read(1 << 20):
                pass
    except (EOFError, zlib.error, OSError) as error:
        raise DatasetFormatError(f"{archive}: corrupt archive: {one_line(error)}") from error


def read_cifar10_batches(
    source: str | Path,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Read and check all batches from a ``cifar-10-batches-py`` folder or the ``.tar.gz``.

    Returns ({file name: (data (N, 3072) uint8, labels (N,) int64)}, class names).

    Raises:
        DatasetFormatError: a file is not a CIFAR-10 batch, a pickle references anything but
            numpy array reconstruction, or the archive lacks a batch.
    """
    source = Path(source)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    class_names: tuple[str, ...] = ()
    try:
        for name, label, content in _iter_batches(source):
            if name == CIFAR10_META:
                class_names = _class_names(content, label)
            else:
                batches[name] = _check_batch(content, label)
    except DatasetFormatError:
        if source.is_file():
            _check_compression(source)  # a damaged archive is named as such, not its batch
        raise
    logger.debug("read %d CIFAR-10 batches from %s", len(batches), source)
    return batches, class_names


def _tensors(
    data: np.ndarray, labels: np.ndarray, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3072) uint8 → float32 (N, 3, 32, 32) in [0, 1], or normalised per channel."""
    x = torch.from_numpy(data).reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    if normalize:
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        x.sub_(mean).div_(std)
    return x, torch.from_numpy(labels)


@register_dataset("cifar10", locate=_status)
def load_cifar10(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    normalize: bool = True,
    download: bool | Sequence[RemoteFile] = False,
) -> InMemoryDataset:
    """Load CIFAR-10: batches 1–5 → train/validation (fixed split), test batch → test.

    Inputs are (N, 3, 32, 32) RGB; with ``normalize`` each channel is mapped by
    (x/255 - mean) / std with the papers' :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`.
    """
    status = locate_or_download("cifar10", root, _status, download)
    batches, class_names = read_cifar10_batches(status.files[0])
    train_data = np.concatenate([batches[name][0] for name in CIFAR10_TRAIN])
    train_labels = np.concatenate([batches[name][1] for name in CIFAR10_TRAIN])
    train, validation = (
        Split(*_tensors(*part, normalize))
        for part in split_arrays(train_data, train_labels, val_fraction)
    )
    return InMemoryDataset(
        name="cifar10",
        train=train,
        validation=validation,
        test=Split(*_tensors(*batches[CIFAR10_TEST], normalize)),
        class_names=class_names,
        augmentation=RandomCropFlip(padding=4, fill=black(CIFAR10_MEAN, CIFAR10_STD, normalize)),
        metadata={
            "normalization": {"mean": CIFAR10_MEAN, "std": CIFAR10_STD} if normalize else None,
            "paper_augmentation": "random crop 32 with padding 4, horizontal flip (training only)",
            "source": str(status.files[0]),
        },
    )

"""Tests for ``cifar10`` on tiny batches written in the published Python 2 pickle format."""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import DatasetFormatError, DatasetNotFoundError, load_dataset
from walkingnoise.data.augmentation import RandomCropFlip
from walkingnoise.data.cifar import CIFAR10_MEAN, CIFAR10_STD, read_cifar10_batches

from .helpers import CIFAR_CLASSES, py2_pickle, write_cifar_dir


def _expected(data: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(data).reshape(-1, 3, 32, 32).float() / 255
    return (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(
        1, 3, 1, 1
    )


def _archive(folder: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


def test_loads_batches_folder(tmp_path: Path) -> None:
    written = write_cifar_dir(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset("cifar10", tmp_path)
    assert dataset.class_names == tuple(c.decode() for c in CIFAR_CLASSES)
    assert dataset.input_shape == (3, 32, 32)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (54, 6, 12)
    data, labels = written["test_batch"]
    torch.testing.assert_close(dataset.test.x, _expected(data), rtol=0, atol=1e-5)
    assert dataset.test.y.tolist() == labels
    # Channel order: the first 1024 values of a row are the red plane.
    assert dataset.test.x[0, 0, 0, 1] == _expected(data)[0, 0, 0, 1]
    train_labels = [label for i in range(1, 6) for label in written[f"data_batch_{i}"][1]]
    pool = torch.cat([dataset.train.y, dataset.validation.y])
    assert sorted(pool.tolist()) == sorted(train_labels)
    assert dataset.metadata["normalization"] == {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    # the crop's padding is a black pixel after normalisation
    black = _expected(np.zeros((1, 3072), np.uint8))[0, :, 0, 0]
    assert isinstance(dataset.augmentation, RandomCropFlip)
    assert dataset.augmentation.padding == 4
    assert dataset.augmentation.fill == pytest.approx(tuple(black.tolist()), rel=1e-6)


def test_archive_gives_the_same_data_as_the_folder(cifar_root: Path, tmp_path: Path) -> None:
    _archive(cifar_root / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    from_tar = load_dataset("cifar10", tmp_path)
    from_dir = load_dataset("cifar10", cifar_root)
    for split in ("train", "validation", "test"):
        assert torch.equal(from_tar.split(split).x, from_dir.split(split).x)
        assert torch.equal(from_tar.split(split).y, from_dir.split(split).y)
    assert from_tar.metadata["source"].endswith("cifar-10-python.tar.gz")


def test_an_archive_with_any_flipped_bit_or_cut_short_is_named_corrupt(
    cifar_root: Path, tmp_path: Path
) -> None:
    """tarfile's stream reader does not check gzip's CRC-32: a bit flipped inside the data
    could read as a changed pixel. Every flip, wherever it is, must be an error."""
    good = _archive(cifar_root / "cifar-10-batches-py", tmp_path / "good.tar.gz").read_bytes()
    damaged = tmp_path / "cifar-10-python.tar.gz"
    for position in range(len(good) // 4, len(good) - 8, len(good) // 40):
        data = bytearray(good)
        data[position] ^= 0x01
        damaged.write_bytes(bytes(data))
        with pytest.raises(DatasetFormatError, match=r"cifar-10-python\.tar\.gz: corrupt archive"):
            read_cifar10_batches(damaged)
    for end in (len(good) // 3, len(good) - 100):  # cut short inside a batch, or at its end
        damaged.write_bytes(good[:end])
        with pytest.raises(DatasetFormatError, match=r"cifar-10-python\.tar\.gz: corrupt archive"):
            read_cifar10_batches(damaged)


def test_root_may_be_the_batches_folder_itself(cifar_root: Path) -> None:
    assert len(load_dataset("cifar10", cifar_root / "cifar-10-batches-py").test) == 12


def test_missing_everything_says_what_to_place(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message
    assert f"in {tmp_path}/" in message
    assert "\n" not in message


def test_partial_folder_lists_missing_batches(cifar_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_root / "cifar-10-batches-py", folder)
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path)
    assert err.value.missing == (
        "cifar-10-batches-py/data_batch_3",
        "cifar-10-batches-py/batches.meta",
    )


@pytest.fixture
def folder(cifar_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny batches folder."""
    return Path(
        shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({b"labels": [0]}, "no 'data' key"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'labels' key"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "3x32x32 = 3072"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must be in 0\.\.9"),
        ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "holds no images"),
        ([1, 2, 3], "expected a pickled dict, found list"),
    ],
)
def test_malformed_batch_names_file_and_problem(
    folder: Path, content: object, expected: str
) -> None:
    bad = folder / "data_batch_2"
    bad.write_bytes(py2_pickle(content))
    with pytest.raises(DatasetFormatError, match=expected) as err:
        load_dataset("cifar10", folder.parent)
    assert str(err.value).startswith(f"{bad}: ")
    assert "\n" not in str(err.value)


def test_wrong_dtype_of_data_is_rejected(folder: Path) -> None:
    bad = folder / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}))
    with pytest.raises(DatasetFormatError, match="2-D uint8 array"):
        load_dataset("cifar10", folder.parent)


@pytest.mark.parametrize(
    ("labels", "found"),
    [
        ([0.9, 1.5], "must be a list of integers, found a list of float"),
        (["1", "2"], "must be a list of integers, found a list of str"),
        ([True, False], "must be a list of integers, found a list of bool"),
        ([2**70, 1], "'labels' are not integers: Python int too large"),
    ],
    ids=["float", "str", "bool", "huge"],
)
def test_labels_that_are_not_integers_are_refused_not_coerced(
    folder: Path, labels: list, found: str
) -> None:
    bad = folder / "data_batch_2"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
    with pytest.raises(DatasetFormatError, match=found) as err:
        load_dataset("cifar10", folder.parent)
    assert str(err.value).startswith(f"{bad}: ")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_pickle_names_the_file(folder: Path, damage: str) -> None:
    bad = folder / "data_batch_1"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not a pickle at all")
    with pytest.raises(DatasetFormatError, match="not a CIFAR-10 batch") as err:
        load_dataset("cifar10", folder.parent)
    assert str(err.value).startswith(f"{bad}: ")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_batch_is_refused_without_running_code(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = folder / "data_batch_4"
    bad.write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": []}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing to load global") as err:
        load_dataset("cifar10", folder.parent)
    assert str(err.value).startswith(f"{bad}: ")
    assert not marker.exists()


def test_crafted_batch_inside_archive_is_refused(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(pickle.dumps(_Payload(marker)))
    archive = _archive(folder, tmp_path / "elsewhere" / "cifar-10-python.tar.gz")
    with pytest.raises(DatasetFormatError, match="refusing to load global") as err:
        read_cifar10_batches(archive)
    assert f"{archive}:cifar-10-batches-py/batches.meta" in str(err.value)
    assert not marker.exists()


def test_archive_without_a_batch_or_corrupt_is_named(folder: Path, tmp_path: Path) -> None:
    (folder / "data_batch_5").unlink()
    archive = _archive(folder, tmp_path / "a" / "cifar-10-python.tar.gz")
    with pytest.raises(DatasetFormatError, match="archive has no cifar-10-batches-py/data_batch_5"):
        read_cifar10_batches(archive)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DatasetFormatError, match="corrupt archive") as err:
        read_cifar10_batches(archive)
    assert str(err.value).startswith(str(archive))


def test_meta_needs_ten_label_names(folder: Path) -> None:
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"a", b"b"]}))
    with pytest.raises(DatasetFormatError, match="'label_names' with 10 names"):
        load_dataset("cifar10", folder.parent)

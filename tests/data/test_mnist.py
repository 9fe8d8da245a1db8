"""Tests for the ``mnist`` and ``mnist-t10k`` loaders on the real MNIST t10k bytes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import DatasetNotFoundError, IdxFormatError, InMemoryDataset, load_dataset
from walkingnoise.data.mnist import read_mnist_part

from .helpers import T10K_IMAGES, T10K_LABELS

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
ALL_FILES = [TRAIN_IMAGES, TRAIN_LABELS, T10K_IMAGES, T10K_LABELS]


def _normalized(images: np.ndarray) -> torch.Tensor:
    """Reference conversion: uint8 (N, 28, 28) → float32 (N, 1, 28, 28) in [-1, 1]."""
    return torch.from_numpy((images.astype(np.float32)[:, None] / 255 - 0.5) / 0.5)


def _assert_one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- mnist-t10k -------------------------------------------------------------------------------


def test_t10k_default_splits(
    mnist_t10k_dir: Path, t10k_arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = t10k_arrays
    dataset = load_dataset("mnist-t10k", mnist_t10k_dir)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (7200, 800, 2000)
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.class_names == tuple(str(c) for c in range(10))
    for split in (dataset.train, dataset.validation, dataset.test):
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert split.x.min().item() == -1.0
        assert split.x.max().item() == 1.0
    # Test split: exactly the last 2000 images, in order.
    torch.testing.assert_close(dataset.test.x, _normalized(images[-2000:]), rtol=0, atol=1e-6)
    assert dataset.test.y.tolist() == labels[-2000:].tolist()
    # Train + validation: exactly the first 8000, each image with its own label.
    pool_y = torch.cat([dataset.train.y, dataset.validation.y])
    assert torch.bincount(pool_y).tolist() == np.bincount(labels[:8000]).tolist()
    first_val = dataset.validation.x[0]
    matches = (_normalized(images[:8000]) - first_val).abs().amax(dim=(1, 2, 3)) < 1e-6
    index = int(matches.nonzero()[0])
    assert int(labels[index]) == int(dataset.validation.y[0])


def test_t10k_options(mnist_t10k_dir: Path) -> None:
    dataset = load_dataset(
        "mnist-t10k", mnist_t10k_dir, n_train=1000, n_test=500, val_fraction=0.2, normalize=False
    )
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (800, 200, 500)
    assert dataset.train.x.min().item() == 0.0
    assert dataset.train.x.max().item() == 1.0


@pytest.mark.parametrize(("n_train", "n_test"), [(8001, 2000), (10_000, 1), (0, 100), (100, 0)])
def test_t10k_rejects_bad_sizes_before_reading(n_train: int, n_test: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train \\+ n_test <= 10000") as err:
        load_dataset("mnist-t10k", tmp_path, n_train=n_train, n_test=n_test)
    assert f"n_train={n_train}, n_test={n_test}" in _assert_one_line(err)


def test_t10k_rejects_sizes_beyond_a_smaller_file(
    t10k_arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path, write_idx: Callable[..., Path]
) -> None:
    images, labels = t10k_arrays
    write_idx(tmp_path / T10K_IMAGES, images[:500])
    write_idx(tmp_path / T10K_LABELS, labels[:500])
    with pytest.raises(ValueError, match="holds 500 images, fewer than") as err:
        load_dataset("mnist-t10k", tmp_path, n_train=400, n_test=200)
    assert _assert_one_line(err).startswith(f"{tmp_path / T10K_IMAGES}: ")
    assert len(load_dataset("mnist-t10k", tmp_path, n_train=400, n_test=100).test) == 100


def test_t10k_in_torchvision_layout(mnist_torchvision_root: Path) -> None:
    dataset = load_dataset("mnist-t10k", mnist_torchvision_root)
    assert len(dataset.test) == 2000


# --- mnist ------------------------------------------------------------------------------------


def _expected_full(t10k: tuple[np.ndarray, np.ndarray], dataset: InMemoryDataset) -> None:
    """Check ``dataset`` is full MNIST built from t10k bytes copied as both train and t10k."""
    images, labels = t10k
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (9000, 1000, 10000)
    torch.testing.assert_close(dataset.test.x, _normalized(images), rtol=0, atol=1e-6)
    assert dataset.test.y.tolist() == labels.tolist()
    pool_y = torch.cat([dataset.train.y, dataset.validation.y])
    assert torch.bincount(pool_y).tolist() == np.bincount(labels).tolist()


def test_mnist_torchvision_layout(
    mnist_torchvision_root: Path, t10k_arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    assert not any(mnist_torchvision_root.glob("*-ubyte*"))  # only under MNIST/raw/
    dataset = load_dataset("mnist", mnist_torchvision_root)
    assert dataset.name == "mnist"
    _expected_full(t10k_arrays, dataset)


def test_mnist_flat_layout(
    mnist_torchvision_root: Path, t10k_arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    for path in (mnist_torchvision_root / "MNIST" / "raw").iterdir():
        shutil.copyfile(path, tmp_path / path.name)
    _expected_full(t10k_arrays, load_dataset("mnist", str(tmp_path)))


def test_mnist_uses_env_root_when_root_is_none(
    mnist_torchvision_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKINGNOISE_DATA", str(mnist_torchvision_root))
    assert len(load_dataset("mnist").test) == 10000


def test_read_mnist_part_returns_uint8_pair(mnist_t10k_dir: Path) -> None:
    images, labels = read_mnist_part(mnist_t10k_dir, "t10k")
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (10000,)


# --- missing and corrupted files --------------------------------------------------------------


def test_missing_everything_lists_all_files_and_dirs(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    message = _assert_one_line(err)
    assert isinstance(err.value, FileNotFoundError)
    assert err.value.missing == tuple(f"{name}[.gz]" for name in ALL_FILES)
    for name in ALL_FILES:
        assert name in message
    assert str(tmp_path) in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "MNIST/raw/" in message
    assert message.endswith(f"or fetch them: walking-noise data download mnist --root {tmp_path}")


def test_a_folder_or_dead_link_where_a_file_belongs_is_named(
    mnist_t10k_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / f"{T10K_IMAGES}.gz").mkdir()
    (tmp_path / T10K_LABELS).symlink_to(tmp_path / "gone")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist-t10k", tmp_path)
    message = _assert_one_line(err)
    assert f"{tmp_path / T10K_IMAGES}.gz is a folder, " in message
    assert f"{tmp_path / T10K_LABELS} is a link to nothing; place" in message


def test_missing_only_labels_lists_exactly_that_file(mnist_t10k_dir: Path, tmp_path: Path) -> None:
    shutil.copyfile(mnist_t10k_dir / f"{T10K_IMAGES}.gz", tmp_path / f"{T10K_IMAGES}.gz")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist-t10k", tmp_path)
    message = _assert_one_line(err)
    assert err.value.missing == (f"{T10K_LABELS}[.gz]",)
    assert message.startswith(f"dataset 'mnist-t10k': missing {T10K_LABELS}[.gz]; searched ")
    assert T10K_IMAGES not in message


def test_label_count_mismatch_names_both_files(
    mnist_t10k_dir: Path,
    t10k_arrays: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    write_idx: Callable[..., Path],
) -> None:
    images_path = tmp_path / f"{T10K_IMAGES}.gz"
    shutil.copyfile(mnist_t10k_dir / images_path.name, images_path)
    labels_path = write_idx(tmp_path / T10K_LABELS, t10k_arrays[1][:9999])
    with pytest.raises(IdxFormatError) as err:
        load_dataset("mnist-t10k", tmp_path)
    message = _assert_one_line(err)
    assert str(images_path) in message
    assert str(labels_path) in message
    assert "10000 images" in message
    assert "9999 labels" in message


def test_label_out_of_range(
    t10k_arrays: tuple[np.ndarray, np.ndarray], tmp_path: Path, write_idx: Callable[..., Path]
) -> None:
    images, labels = t10k_arrays
    bad = labels[:100].copy()
    bad[7] = 10
    write_idx(tmp_path / T10K_IMAGES, images[:100])
    labels_path = write_idx(tmp_path / f"{T10K_LABELS}.gz", bad, gz=True)
    with pytest.raises(IdxFormatError) as err:
        read_mnist_part(tmp_path, "t10k")
    message = _assert_one_line(err)
    assert str(labels_path) in message
    assert "labels must be in 0..9, found 10" in message


@pytest.mark.parametrize(
    ("which", "array", "expected"),
    [
        ("images", np.zeros((5, 28, 28), dtype=np.int16), "expected 3-D ubyte images"),
        ("images", np.zeros((5, 784), dtype=np.uint8), "expected 3-D ubyte images"),
        ("images", np.zeros((5, 32, 32), dtype=np.uint8), "expected 3-D ubyte images"),
        ("labels", np.zeros((5, 1), dtype=np.uint8), "expected 1-D ubyte labels"),
        ("labels", np.zeros(5, dtype=np.int32), "expected 1-D ubyte labels"),
    ],
)
def test_wrong_shape_or_dtype(
    which: str,
    array: np.ndarray,
    expected: str,
    tmp_path: Path,
    write_idx: Callable[..., Path],
) -> None:
    files = {
        "images": (tmp_path / T10K_IMAGES, np.zeros((5, 28, 28), dtype=np.uint8)),
        "labels": (tmp_path / T10K_LABELS, np.zeros(5, dtype=np.uint8)),
    }
    files[which] = (files[which][0], array)
    for path, content in files.values():
        write_idx(path, content)
    with pytest.raises(IdxFormatError) as err:
        read_mnist_part(tmp_path, "t10k")
    message = _assert_one_line(err)
    assert expected in message
    assert str(files[which][0]) in message


def test_file_without_images_is_named(tmp_path: Path, write_idx: Callable[..., Path]) -> None:
    images_path = write_idx(tmp_path / TRAIN_IMAGES, np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / TRAIN_LABELS, np.zeros(0, dtype=np.uint8))
    with pytest.raises(IdxFormatError) as err:
        read_mnist_part(tmp_path, "train")
    assert _assert_one_line(err) == f"{images_path}: holds no images"


def test_corrupt_file_in_loader_names_it(t10k_raw_dir: Path, tmp_path: Path) -> None:
    shutil.copyfile(t10k_raw_dir / T10K_LABELS, tmp_path / T10K_LABELS)
    images_path = tmp_path / T10K_IMAGES
    images_path.write_bytes((t10k_raw_dir / T10K_IMAGES).read_bytes()[:-100])
    with pytest.raises(IdxFormatError) as err:
        load_dataset("mnist-t10k", tmp_path)
    message = _assert_one_line(err)
    assert message.startswith(f"{images_path}: truncated")


def test_raw_file_preferred_over_gz(
    mnist_t10k_dir: Path, t10k_raw_dir: Path, tmp_path: Path
) -> None:
    for name in (T10K_IMAGES, T10K_LABELS):
        shutil.copyfile(t10k_raw_dir / name, tmp_path / name)
        (tmp_path / f"{name}.gz").write_bytes(b"not gzip, not idx")
    assert len(load_dataset("mnist-t10k", tmp_path).test) == 2000

"""Tests for ``fashion_mnist``: the IDX-pair code shared with MNIST, FashionMNIST's layout."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import DatasetNotFoundError, IdxFormatError, load_dataset, read_idx
from walkingnoise.data.augmentation import RandomCropFlip
from walkingnoise.data.download import OFFICIAL_FILES, RemoteFile
from walkingnoise.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_LAYOUT
from walkingnoise.data.mnist import MNIST_LAYOUT

from .helpers import encode_idx


def _raw(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def test_loads_torchvision_layout_with_paper_normalization(fashion_root: Path) -> None:
    dataset = load_dataset("fashion_mnist", fashion_root)
    assert dataset.name == "fashion_mnist"
    assert dataset.class_names == FASHION_MNIST_CLASS_NAMES
    assert dataset.class_names[9] == "Ankle boot"
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (36, 4, 12)
    assert dataset.input_shape == (1, 28, 28)
    images = read_idx(_raw(fashion_root) / "t10k-images-idx3-ubyte.gz")
    expected = (torch.from_numpy(images).float()[:, None] / 255 - 0.5) / 0.5
    torch.testing.assert_close(dataset.test.x, expected, rtol=0, atol=1e-6)
    assert dataset.test.y.tolist() == [i % 10 for i in range(12)]
    assert dataset.metadata["normalization"] == {"mean": (0.5,), "std": (0.5,)}
    assert dataset.augmentation == RandomCropFlip(padding=4, fill=(-1.0,))


def test_unnormalized_pixels_are_in_unit_range(fashion_root: Path) -> None:
    dataset = load_dataset("fashion_mnist", fashion_root, normalize=False)
    assert dataset.test.x.min() >= 0.0
    assert dataset.test.x.max() <= 1.0
    assert dataset.test.x.max() > 0.9
    assert dataset.metadata["normalization"] is None
    assert dataset.augmentation == RandomCropFlip(padding=4, fill=(0.0,))


def test_flat_layout_is_found(fashion_root: Path, tmp_path: Path) -> None:
    for path in _raw(fashion_root).iterdir():
        shutil.copyfile(path, tmp_path / path.name)
    assert len(load_dataset("fashion_mnist", tmp_path).test) == 12


def test_missing_files_name_fashion_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", tmp_path)
    message = str(err.value)
    assert message.startswith("dataset 'fashion_mnist': missing train-images-idx3-ubyte[.gz]")
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "ROOT/FashionMNIST/raw/" in message
    assert "\n" not in message


def test_label_beyond_the_ten_classes_is_rejected(fashion_root: Path, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    shutil.copytree(_raw(fashion_root), raw)
    labels = np.full(12, 10, dtype=np.uint8)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    with pytest.raises(IdxFormatError, match=r"labels must be in 0\.\.9, found 10"):
        load_dataset("fashion_mnist", tmp_path)


def test_corrupt_gzip_names_the_file(fashion_root: Path, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    shutil.copytree(_raw(fashion_root), raw)
    bad = raw / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(IdxFormatError) as err:
        load_dataset("fashion_mnist", tmp_path)
    assert str(err.value).startswith(f"{bad}: ")


def test_mnist_and_fashion_share_one_reader() -> None:
    assert type(MNIST_LAYOUT) is type(FASHION_MNIST_LAYOUT)
    assert MNIST_LAYOUT.files == FASHION_MNIST_LAYOUT.files
    assert (MNIST_LAYOUT.folder, FASHION_MNIST_LAYOUT.folder) == ("MNIST", "FashionMNIST")


def _write_pair(folder: Path, value: int, labels: int = 3) -> None:
    """Every IDX file of a tiny dataset whose pixels are all ``value``, labels all ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", 20), ("t10k", 6)):
        images = np.full((n, 28, 28), value, dtype=np.uint8)
        (folder / f"{part}-images-idx3-ubyte").write_bytes(encode_idx(images))
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(encode_idx(np.full(n, labels, np.uint8)))


def test_a_datasets_own_folder_wins_over_loose_files_of_the_other(tmp_path: Path) -> None:
    """MNIST and FashionMNIST name their files alike: loose files in the root (here
    FashionMNIST's) must not be read as MNIST when MNIST has its own folder."""
    _write_pair(tmp_path / "MNIST" / "raw", 255)
    _write_pair(tmp_path, 0)
    mnist = load_dataset("mnist", tmp_path, normalize=False)
    assert mnist.test.x.unique().tolist() == [1.0]
    assert load_dataset("fashion_mnist", tmp_path, normalize=False).test.x.unique().tolist() == [
        0.0
    ]


def test_images_and_labels_come_from_one_folder(tmp_path: Path) -> None:
    """A folder that lacks a file of a pair is passed over for that pair, not mixed."""
    _write_pair(tmp_path, 0, labels=1)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    _write_pair(tmp_path / "FashionMNIST" / "raw", 255, labels=7)
    dataset = load_dataset("fashion_mnist", tmp_path, normalize=False)
    assert dataset.test.x.unique().tolist() == [1.0]
    assert dataset.test.y.unique().tolist() == [7]


def test_another_datasets_published_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MNIST's published .gz files loose in the root are not FashionMNIST, whatever their name."""
    _write_pair(tmp_path, 0)
    published = tmp_path / "train-images-idx3-ubyte.gz"
    published.write_bytes(gzip.compress((tmp_path / "train-images-idx3-ubyte").read_bytes()))
    (tmp_path / "train-images-idx3-ubyte").unlink()
    digest = "sha256:" + hashlib.sha256(published.read_bytes()).hexdigest()
    as_mnist = RemoteFile(published.name, ("https://example.org/x.gz",), (digest,),
                          size=published.stat().st_size)  # fmt: skip
    monkeypatch.setitem(OFFICIAL_FILES, "mnist", (as_mnist,))
    with pytest.raises(IdxFormatError, match="mnist's published file, not fashion_mnist's") as err:
        load_dataset("fashion_mnist", tmp_path)
    assert str(published) in str(err.value)
    assert len(load_dataset("mnist", tmp_path).test) == 6  # MNIST's own: fine


def test_a_dataset_is_never_put_together_from_two_folders(tmp_path: Path) -> None:
    """Train files loose in the root (here MNIST's) and t10k files in FashionMNIST's own folder
    are two datasets: the files must all be in one folder, and the error says so."""
    _write_pair(tmp_path, 0, labels=1)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    _write_pair(_raw(tmp_path), 255, labels=7)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (_raw(tmp_path) / name).unlink()
    with pytest.raises(DatasetNotFoundError, match="missing train-images-idx3-ubyte") as err:
        load_dataset("fashion_mnist", tmp_path)
    assert f"together in {_raw(tmp_path)}/" in str(err.value)
    apart = f"train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] are in {tmp_path}/"
    assert f"{apart}, apart from the others" in str(err.value)

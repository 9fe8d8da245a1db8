"""Tests for ``svhn`` on tiny MATLAB files in the published layout (X 32×32×3×N, y N×1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import DatasetFormatError, DatasetNotFoundError, load_dataset
from walkingnoise.data.augmentation import RandomCropFlip, black
from walkingnoise.data.svhn import SVHN_MEAN, SVHN_STD, read_svhn_mat

from .helpers import svhn_arrays, write_svhn_mat


def test_loads_and_maps_label_10_to_digit_0(svhn_root: Path) -> None:
    dataset = load_dataset("svhn", svhn_root)
    assert dataset.input_shape == (3, 32, 32)
    assert dataset.class_names == tuple(str(d) for d in range(10))
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (27, 3, 10)
    x, y = svhn_arrays(10, 1)
    assert dataset.test.y.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert 0 in dataset.test.y.tolist()
    assert 10 not in dataset.test.y.tolist()
    # Image i of the file is X[:, :, :, i]; channel c of pixel (r, col) is X[r, col, c, i].
    expected = torch.from_numpy(x.transpose(3, 2, 0, 1).copy()).float() / 255
    expected = (expected - torch.tensor(SVHN_MEAN).view(1, 3, 1, 1)) / torch.tensor(SVHN_STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(dataset.test.x, expected, rtol=0, atol=1e-5)
    assert dataset.test.x[4, 2, 7, 9] == expected[4, 2, 7, 9]
    assert dataset.augmentation == RandomCropFlip(padding=4, fill=black(SVHN_MEAN, SVHN_STD, True))


def test_read_accepts_labels_as_doubles(tmp_path: Path) -> None:
    x, y = svhn_arrays(5, 3)
    write_svhn_mat(tmp_path / "t.mat", x, y.astype(np.float64))
    images, labels = read_svhn_mat(tmp_path / "t.mat")
    assert images.shape == (5, 3, 32, 32)
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 2, 3, 4, 5]


def test_subfolder_svhn_is_searched(svhn_root: Path, tmp_path: Path) -> None:
    shutil.copytree(svhn_root, tmp_path / "svhn")
    assert len(load_dataset("svhn", tmp_path).test) == 10


def test_files_are_read_from_one_folder_never_some_from_each(
    svhn_root: Path, tmp_path: Path
) -> None:
    """As the README says of every dataset: a stale train file left in the root is not read
    with the test file of ``root/svhn``; a folder holding both is read whole."""
    (tmp_path / "svhn").mkdir()
    shutil.copyfile(svhn_root / "train_32x32.mat", tmp_path / "train_32x32.mat")
    shutil.copyfile(svhn_root / "test_32x32.mat", tmp_path / "svhn" / "test_32x32.mat")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("svhn", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dataset 'svhn': missing test_32x32.mat; searched ")
    assert f"test_32x32.mat is in {tmp_path / 'svhn'}/, apart from the others" in message
    x, y = svhn_arrays(4, 5)
    write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", x, y)
    dataset = load_dataset("svhn", tmp_path)
    assert len(dataset.train) + len(dataset.validation) == 4
    assert dataset.metadata["source"] == str(tmp_path / "svhn")


def test_missing_test_file_is_named(svhn_root: Path, tmp_path: Path) -> None:
    shutil.copyfile(svhn_root / "train_32x32.mat", tmp_path / "train_32x32.mat")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("svhn", tmp_path)
    assert err.value.missing == ("test_32x32.mat",)
    assert str(err.value).startswith("dataset 'svhn': missing test_32x32.mat; searched ")


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"X": np.zeros((32, 32, 3, 4), np.uint8)}, "no variable y"),
        ({"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))}, "32x32x3xN uint8"),
        ({"X": np.zeros((32, 32, 3, 4), np.float32), "y": np.ones((4, 1))}, "32x32x3xN uint8"),
        ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))}, "y must be 4x1"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]])}, r"in 1\.\.10"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]])}, r"in 1\.\.10"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.5], [2]])}, "whole numbers"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1 + 2j], [2]])}, "whole"),
        ({"X": np.zeros((32, 32, 3, 0), np.uint8), "y": np.ones((0, 1))}, "no images"),
    ],
)
def test_malformed_content_is_named(tmp_path: Path, arrays: dict, expected: str) -> None:
    from scipy.io import savemat

    path = tmp_path / "train_32x32.mat"
    savemat(path, arrays)
    with pytest.raises(DatasetFormatError, match=expected) as err:
        read_svhn_mat(path)
    assert str(err.value).startswith(f"{path}: ")


def test_not_a_matlab_file_is_named(svhn_root: Path, tmp_path: Path) -> None:
    shutil.copyfile(svhn_root / "train_32x32.mat", tmp_path / "train_32x32.mat")
    bad = tmp_path / "test_32x32.mat"
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DatasetFormatError, match="not a readable MATLAB file") as err:
        load_dataset("svhn", tmp_path)
    assert str(err.value).startswith(f"{bad}: ")
    assert "\n" not in str(err.value)


def test_sparse_labels_are_named(tmp_path: Path) -> None:
    from scipy.io import savemat
    from scipy.sparse import csc_matrix

    path = tmp_path / "train_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": csc_matrix(np.ones((2, 1)))})
    with pytest.raises(DatasetFormatError, match="y must be a full array") as err:
        read_svhn_mat(path)
    assert str(err.value).startswith(f"{path}: ")
